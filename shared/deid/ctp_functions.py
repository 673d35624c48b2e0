"""Evaluating CTP DicomAnonymizer scripts: the functions, with CTP's semantics.

Values are read from the original object (a script never sees what another script wrote),
from the current sequence item when items are being processed (``root:`` reaches the top
level). Hashes are CTP's: MD5 of the UTF-8 value written as an unsigned decimal number.
Where CTP would write an error text into the element or keep an unparsable original, the
object is quarantined instead, with a reason that names the element and the function.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import NoReturn

from shared.deid.context import ObjectContext
from shared.deid.ctp_language import Call, Script
from shared.deid.elements import element_ref, find, value
from shared.deid.lookup import LookupTable
from shared.dicom.dates import shift_da, shift_dt
from shared.dicom.errors import FilteredOut, RejectedObject
from shared.dicom.parse import DicomObject, Element, Item

REMOVE, KEEP, EMPTY = "@remove()", "@keep()", "@empty()"
_TOTAL_TRIM = frozenset({"AE", "CS", "DS", "IS", "LO", "SH"})


class ScriptFailure(RejectedObject):
    """A script function could not produce a value for this object (quarantine it)."""

    code = "script"


class ScriptQuarantine(RejectedObject):
    """The script asked for the object to be quarantined (@quarantine, a lookup miss)."""

    code = "quarantined"


@dataclass
class Evaluation:
    """One evaluation of one element's script."""

    ctx: ObjectContext
    element: Element | None  # the element the script is for ("this"); None when creating it
    tag: int
    element_name: str
    params: dict[str, str]
    lookup: LookupTable | None
    scripts: dict[int, Script] = field(default_factory=dict)
    process: bool = False
    nested: int = 0  # scripts of other elements being evaluated for this one (@hashuid)

    # ---- reading values -------------------------------------------------------------
    def element_for(self, name: str) -> tuple[Element | None, DicomObject]:
        name = name.strip()
        obj = self.ctx.obj
        root = name.startswith("root:")
        if root:
            name = name[5:].strip()
        if name in ("", "this"):
            return (self.element, obj) if not root else (obj.dataset.elements.get(self.tag), obj)
        item: Item = obj.dataset if root else self.ctx.item
        ref = element_ref(name)
        if ref.tag is not None and ref.tag >> 16 == 0x0002:
            return obj.meta.elements.get(ref.tag), obj
        return find(obj, ref, item), obj

    def contents_or_none(self, name: str) -> str | None:
        """The value as CTP reads it (VR trimming), None when the element is missing."""
        element, obj = self.element_for(name)
        if element is None:
            return None
        text = value(obj, element)
        if element.vr in _TOTAL_TRIM:
            text = text.strip(" ")
        elif element.vr == "PN":
            text = text.rstrip(" ^")
        return text

    def contents(self, name: str) -> str:
        return self.contents_or_none(name) or ""

    def param(self, text: str) -> str:
        """``@NAME`` or ``$NAME``: the parameter; anything else is itself."""
        if text[:1] in ("@", "$"):
            found = self.params.get(text[1:])
            return found if found is not None else self.fail(f"parameter {text} is not defined")
        return text

    def fail(self, reason: str) -> NoReturn:
        raise ScriptFailure(f"{self.element_name}: {reason}")

    def evaluate(self, script: Script) -> str:
        out: list[str] = []
        for part in script.parts:
            if isinstance(part, Call):
                out.append(FUNCTIONS[part.name](self, part))
            else:
                out.append(part.value)
        return "".join(out)


# ---- hashing (DigestUtil.getUSMD5) -----------------------------------------------------
def usmd5(text: str) -> str:
    """MD5 of the UTF-8 text as an unsigned decimal integer (CTP's hash)."""
    return str(int.from_bytes(hashlib.md5(text.encode("utf-8")).digest(), "big"))


def _cut(digits: str, length: int) -> str:
    return digits if length < 1 or len(digits) <= length else digits[:length]


def _int(text: str, default: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


def fn_hash(e: Evaluation, call: Call) -> str:
    source = e.contents_or_none(call.arg(0))
    if source is None:
        return REMOVE
    length = _int(e.param(call.arg(1)), 0) if len(call.args) > 1 else 0
    return _cut(usmd5(source), length)


def fn_hashname(e: Evaluation, call: Call) -> str:
    words = e.contents(call.arg(0)).split("^")
    count = _int(e.param(call.arg(2)), 0) if len(call.args) > 2 else 0
    name = "".join(words[:count] if count > 0 else words)
    name = re.sub(r"[\s,'^.]", "", name).upper()
    return _cut(usmd5(name), _int(e.param(call.arg(1)), 4))


def fn_hashptid(e: Evaluation, call: Call) -> str:
    site = e.param(call.arg(0)).strip()
    patient = e.contents(call.arg(1)).strip()
    length = _int(e.param(call.arg(2)), 0) if len(call.args) > 2 else 0
    return _cut(usmd5(f"[{site}]{patient}"), length)


def fn_hashuid(e: Evaluation, call: Call) -> str:
    prefix = e.param(call.arg(0)).strip()
    uid = e.contents_or_none(call.arg(1))
    if uid is None:
        return REMOVE
    if len(call.args) > 2:
        uid += _script_of(e, call.arg(2))
    if not prefix.endswith("."):
        prefix += "."
    digits = usmd5(uid)
    return (prefix + ("9" if digits.startswith("0") else "") + digits)[:64]


def _script_of(e: Evaluation, name: str) -> str:
    """The result of the script of the element ``name`` (present or not), or ''."""
    bare = name.strip().removeprefix("root:").strip()
    tag = e.tag if bare in ("", "this") else element_ref(bare).tag
    script = e.scripts.get(tag) if tag is not None else None
    if tag is None or script is None:
        return ""
    if tag == e.tag or e.nested >= 8:
        return e.fail("@hashuid includes the result of a script that includes its own")
    other, _ = e.element_for(name)
    inner = replace(e, element=other, tag=tag, element_name=name.strip(), nested=e.nested + 1)
    return inner.evaluate(script)


# ---- dates -----------------------------------------------------------------------------
def _shift_values(text: str, days: int) -> str:
    """CTP incrementDate on every backslash-separated value; suffixes (time) kept."""
    out = []
    for part in text.split("\\"):
        digits = re.sub(r"[@:\s]", "", part)
        if digits.startswith("00"):
            digits = "19" + digits[2:]
        try:
            year, month, day = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
            moved = _lenient(year, month, day) + timedelta(days=days)
        except (ValueError, OverflowError):
            raise ValueError("not a date") from None
        out.append(_dicom_date(moved) + part.strip()[8:])
    return "\\".join(out)


def _dicom_date(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _lenient(year: int, month: int, day: int) -> date:
    """A date from fields that may overflow (month 13, day 32), as Java's lenient calendar."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1) + timedelta(days=day - 1)


def _date_source(e: Evaluation, name: str) -> str:
    """The date to change, or a result token when there is none (CTP's rules)."""
    text = e.contents_or_none(name)
    if text is None:
        return REMOVE
    if len(text) < 8:
        return EMPTY
    return text


def fn_hashdate(e: Evaluation, call: Call) -> str:
    if call.bare:  # RSNA Anonymizer: the patient's offset from the PHI index
        text = e.contents(call.arg(0))
        days = e.ctx.pseudonyms.date_offset_days
        vr = e.element.vr if e.element is not None else "DA"
        return shift_dt(text, days) if vr == "DT" else shift_da(text, days)
    source = _date_source(e, call.arg(0))
    if source in (REMOVE, EMPTY):
        return source
    key = e.contents_or_none(call.arg(1))
    if key is None:
        return REMOVE
    digits = usmd5(key)
    increment = -(int(digits[-4:]) % 3650) or -1
    try:
        return _shift_values(source, increment)
    except ValueError:
        return EMPTY


def fn_incrementdate(e: Evaluation, call: Call) -> str:
    source = _date_source(e, call.arg(0))
    if source in (REMOVE, EMPTY):
        return source
    try:
        if len(call.args) >= 3:
            key = e.contents_or_none(call.arg(1)) or ""
            days = int(_lookup_value(e, e.param(call.arg(2)), key) or "x")
        else:
            days = int(e.param(call.arg(1)).strip())
        return _shift_values(source, days)
    except ValueError:
        return EMPTY


def fn_modifydate(e: Evaluation, call: Call) -> str:
    source = _date_source(e, call.arg(0))
    if source in (REMOVE, EMPTY):
        return source
    fields = [e.param(call.arg(i)).strip() for i in (1, 2, 3)]
    out = []
    for part in source.split("\\"):
        try:
            year, month, day = int(part[0:4]), int(part[4:6]), int(part[6:8])
            numbers = [year, month, day]
            for index, text in enumerate(fields):
                if re.fullmatch(r"[+-]?[0-9]+", text) and int(text) >= 0:
                    numbers[index] = int(text)
            out.append(_dicom_date(_lenient(*numbers)) + part[8:])
        except (ValueError, OverflowError):
            return EMPTY
    return "\\".join(out)


def fn_dateinterval(e: Evaluation, call: Call) -> str:
    day_text = e.contents(call.arg(0))[:8]
    key = e.contents("root:" + call.arg(2))
    base_text = _lookup_value(e, call.arg(1), key)
    try:
        moment = datetime.strptime(day_text, "%Y%m%d")
        month, day, year = (int(p) for p in (base_text or "").split("/"))
        days = round((moment - datetime(year, month, day)).total_seconds() / 86400)
        if len(call.args) > 3:
            return _shift_values(e.param(call.arg(3)), days)
    except ValueError:
        raise ScriptQuarantine(
            f"{e.element_name}: @dateinterval has no base date or an unreadable date"
        ) from None
    return str(days)


def fn_date(e: Evaluation, call: Call) -> str:
    return datetime.now().strftime(f"%Y{call.arg(0)}%m{call.arg(0)}%d")


def fn_time(e: Evaluation, call: Call) -> str:
    return datetime.now().strftime(f"%H{call.arg(0)}%M{call.arg(0)}%S")


# ---- text ------------------------------------------------------------------------------
def fn_contents(e: Evaluation, call: Call) -> str:
    text = e.contents(call.arg(0))
    if len(call.args) == 1:
        return text
    if len(call.args) > 3:
        return ""
    replacement = re.sub(r"\$(\d)", r"\\g<\1>", call.arg(2)) if len(call.args) == 3 else ""
    try:
        return re.sub(call.arg(1), replacement, text)
    except re.error as exc:
        return e.fail(f"@contents has an invalid regular expression ({exc})")


def fn_value(e: Evaluation, call: Call) -> str:
    return e.contents(call.arg(0)) or call.arg(1)


def fn_truncate(e: Evaluation, call: Call) -> str:
    text = e.contents(call.arg(0))
    if len(call.args) < 2:
        return text
    try:
        length = int(call.arg(1).strip())
    except ValueError:
        return text
    return text[:length] if length >= 0 else text.strip()[length:]


def fn_lowercase(e: Evaluation, call: Call) -> str:
    return e.contents(call.arg(0)).lower()


def fn_uppercase(e: Evaluation, call: Call) -> str:
    return e.contents(call.arg(0)).upper()


def fn_pathelement(e: Evaluation, call: Call) -> str:
    text = e.contents(call.arg(0))
    parts = text.split("/")
    while parts and parts[-1] == "":
        parts.pop()
    index = _int(call.arg(1), 1000)
    if index < 0:
        index += len(parts)
    return parts[index] if 0 <= index < len(parts) else text


def fn_initials(e: Evaluation, call: Call) -> str:
    words = re.sub(r"[\^,]", " ", e.contents(call.arg(0))).split()
    if not words:
        return "X"
    letters = [w[0] for w in words]
    initials = "".join([*letters[1:], letters[0]]).upper()
    shift = _int(call.arg(1), 0) if len(call.args) > 1 else 0
    if not shift:
        return initials
    return "".join(_caesar(c, shift) for c in initials)


def _caesar(char: str, shift: int) -> str:
    if "A" <= char <= "Z":
        return chr((ord(char) - 65 + shift) % 26 + 65)
    if "a" <= char <= "z":
        return chr((ord(char) - 97 + shift) % 26 + 97)
    if "0" <= char <= "9":
        return chr((ord(char) - 48 + shift) % 10 + 48)
    return char


def fn_round(e: Evaluation, call: Call) -> str:
    text = e.contents(call.arg(0)).strip()
    if not text:
        return ""
    # ASCII digits only: int() refuses a superscript digit that str.isdigit() accepts.
    digits = "".join(c for c in text if "0" <= c <= "9")
    suffix = "".join(c for c in text if not "0" <= c <= "9")
    width = _int(e.param(call.arg(1)), 0)
    if not digits or width <= 0:
        return e.fail("@round needs a number and a positive width")
    rounded = math.floor(int(digits) / width + 0.5) * width  # Java Math.round: half up
    result = f"{rounded}{suffix}"
    return "0" + result if len(result) % 2 else result


# ---- counters and tables ---------------------------------------------------------------
def fn_integer(e: Evaluation, call: Call) -> str:
    key = e.contents(call.arg(0)).strip()
    key_type = call.arg(1).strip()
    number = e.ctx.integer(key_type, key)
    width = _int(call.arg(2), 0) if len(call.args) > 2 else 0
    return f"{number:0{width}d}" if width > 0 else str(number)


def _lookup_value(e: Evaluation, key_type: str, key: str) -> str | None:
    if e.lookup is None:
        return None
    return e.lookup.get(key_type.strip(), key.replace("\\", "").strip())


def fn_lookup(e: Evaluation, call: Call) -> str:
    key = "|".join(e.contents(name) for name in call.arg(0).split("|"))
    key_type = call.args[1].strip()
    found = _lookup_value(e, key_type, key)
    if found is not None:
        return found
    action = call.arg(2).strip() if len(call.args) > 2 else ""
    if action == "keep":
        return KEEP
    if action == "remove":
        return REMOVE
    if action == "empty":
        return EMPTY
    if action == "default" and len(call.args) > 3:
        return call.arg(3).strip()
    flattened = key.replace("\\", "").strip()
    if action == "ignore" and len(call.args) > 3 and re.fullmatch(call.arg(3), flattened):
        return flattened
    raise ScriptQuarantine(f"{e.element_name}: no entry of type {key_type} in the lookup table")


# ---- control ---------------------------------------------------------------------------
def fn_always(e: Evaluation, call: Call) -> str:
    return ""


def fn_param(e: Evaluation, call: Call) -> str:
    return e.param(call.args[0] if call.args else "")


def fn_require(e: Evaluation, call: Call) -> str:
    if e.element is not None:
        return KEEP
    text = ""
    if call.args and call.arg(0):
        found = e.contents_or_none(call.arg(0))
        text = found if found is not None else call.arg(1)
    return text if text.strip() else f"@blank({len(text)})"


def _condition(e: Evaluation, call: Call) -> bool:
    if len(call.args) < 2:
        return False
    name = call.arg(0)
    condition = call.args[1].strip()
    if condition == "exists":
        element, _ = e.element_for(name)
        return element is not None
    text = e.contents(name)
    if condition == "isblank":
        return not text.strip()
    if len(call.args) < 3:
        return False
    argument = call.arg(2)
    if argument.startswith("@") and argument[1:] in e.params:
        argument = e.params[argument[1:]]
    if condition == "equals":
        return text.lower() == argument.lower()
    if condition == "contains":
        return argument.lower() in text.lower()
    if condition == "matches":
        try:
            return re.fullmatch(argument.strip(), text) is not None
        except re.error:
            return False
    if condition == "greaterthan":
        return _digits(text) > _digits(argument)
    return False


def _digits(text: str) -> int:
    """The number made of the ASCII digits of ``text``; 0 if none or too large for a
    Java int (CTP's StringUtil.getInt)."""
    number = int("".join(re.findall("[0-9]", text)) or "0")
    return number if number <= 0x7FFFFFFF else 0


def fn_if(e: Evaluation, call: Call) -> str:
    return e.evaluate(call.clauses[0] if _condition(e, call) else call.clauses[1])


def fn_select(e: Evaluation, call: Call) -> str:
    return e.evaluate(call.clauses[0] if not e.ctx.items else call.clauses[1])


def fn_append(e: Evaluation, call: Call) -> str:
    addition = e.evaluate(call.clauses[0])
    if e.element is None or e.element.length == 0:
        return addition
    return f"{value(e.ctx.obj, e.element)}\\{addition}"


def fn_process(e: Evaluation, call: Call) -> str:
    e.process = True
    return KEEP


def fn_quarantine(e: Evaluation, call: Call) -> str:
    raise ScriptQuarantine(f"{e.element_name}: the script quarantines this object")


def fn_skip(e: Evaluation, call: Call) -> str:
    raise FilteredOut(f"{e.element_name}: the script skips this object (@skip)")


def fn_token(e: Evaluation, call: Call) -> str:
    return f"@{call.name}({','.join(call.args)})"


# ---- the RSNA Anonymizer's operations --------------------------------------------------
def fn_uid(e: Evaluation, call: Call) -> str:
    if e.element is None:
        return ""
    uids = e.ctx.uids
    return "\\".join(uids(u.strip(" \x00")) for u in e.ctx.text(e.element).split("\\"))


def fn_ptid(e: Evaluation, call: Call) -> str:
    return e.ctx.pseudonyms.patient_id


def fn_acc(e: Evaluation, call: Call) -> str:
    original = e.contents("this")
    return e.ctx.pseudonyms.accession_number if original.strip() else ""


FUNCTIONS: dict[str, Callable[[Evaluation, Call], str]] = {
    "always": fn_always, "append": fn_append, "contents": fn_contents, "date": fn_date,
    "dateinterval": fn_dateinterval, "hash": fn_hash, "hashdate": fn_hashdate,
    "hashname": fn_hashname, "hashptid": fn_hashptid, "hashuid": fn_hashuid, "if": fn_if,
    "incrementdate": fn_incrementdate, "initials": fn_initials, "integer": fn_integer,
    "lookup": fn_lookup, "lowercase": fn_lowercase, "modifydate": fn_modifydate,
    "param": fn_param, "pathelement": fn_pathelement, "process": fn_process,
    "quarantine": fn_quarantine, "require": fn_require, "round": fn_round,
    "select": fn_select, "skip": fn_skip, "time": fn_time, "truncate": fn_truncate,
    "uppercase": fn_uppercase, "value": fn_value,
    "keep": fn_token, "remove": fn_token, "empty": fn_token, "blank": fn_token,
    "uid": fn_uid, "ptid": fn_ptid, "acc": fn_acc,
}


def encode_numbers(vr: str, text: str, little_endian: bool) -> bytes:
    """Binary numeric values from text (a script result for US, UL, FL...)."""
    code = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d",
            "UV": "Q", "SV": "q"}[vr]
    prefix = "<" if little_endian else ">"
    numbers = [p.strip() for p in text.split("\\") if p.strip()]
    if code in "fd":
        return struct.pack(prefix + code * len(numbers), *(float(n) for n in numbers))
    return struct.pack(prefix + code * len(numbers), *(int(n) for n in numbers))

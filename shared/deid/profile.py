"""The built-in profile: PS3.15 Annex E Basic Profile and its options, compiled into rules.

Each attribute of Table E.1-1 gets the code of the first selected option that names one
(retention options before cleaning options, see ``OPTION_COLUMNS``), else its Basic
Profile code. Codes become actions knowing the attribute's VR. On top of the table, the
profile always replaces Patient's Name and Patient ID by the pseudonymous patient ID and
the Accession Number by its pseudonym from the PHI index, maps every UID that is not a
well-known one, and, with Modified Dates, shifts every DA and DT value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import cache

from pydicom.datadict import DicomDictionary, dictionary_VR  # type: ignore[attr-defined]

from shared.deid.context import ObjectContext
from shared.deid.options import ProfileOptions
from shared.deid.rules import (
    EMPTY,
    KEEP,
    REMOVE,
    Action,
    Addition,
    Recurse,
    Replace,
    RuleSet,
    TextTreatment,
)
from shared.deid.standard import (
    OPTION_COLUMNS,
    TABLE_E1_1,
    TABLE_E3_10_1,
    ProfileRow,
    profile_rows,
    safe_private,
)
from shared.dicom.dates import shift_da, shift_dt
from shared.dicom.parse import UNDEFINED_LENGTH, Element
from shared.dicom.values import well_formed

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ACCESSION_NUMBER = 0x00080050


# PS3.16 CID 7050 De-identification Method (DCM codes) for each option.
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_longitudinal_full_dates": (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_longitudinal_modified_dates": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
}

_DUMMY_BY_VR = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMIZED",
    "LT": "ANONYMIZED", "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED",
    "UC": "ANONYMIZED", "UT": "ANONYMIZED", "UR": "",
}


# Overlay Description (60xx,0022) and Overlay Label (60xx,1500), as (mask, value).
_OVERLAY_TEXT = ((0xFF00FFFF, 0x60000022), (0xFF00FFFF, 0x60001500))


# Keywords of free text that people write (remarks on a procedure, a patient, a setup).
_FREE_TEXT_KEYWORD = re.compile(r"Comment|Notes|Reason")


@cache
def unlisted_free_text() -> tuple[int, ...]:
    """Standard text attributes (ST, LT, UT, UC) that E.1-1 does not list but that hold
    people's comments, notes or reasons: removed, or cleaned with Clean Descriptors."""
    listed = {row.tag for row in profile_rows() if not row.is_pattern}
    return tuple(sorted(
        tag for tag, (vr, _vm, _name, retired, keyword) in DicomDictionary.items()
        if vr in ("ST", "LT", "UT", "UC") and not retired and tag not in listed
        and _FREE_TEXT_KEYWORD.search(keyword)
    ))


def _map_uids(ctx: ObjectContext, element: Element) -> str:
    mapper = ctx.uids
    return "\\".join(mapper(uid.strip(" \x00")) for uid in ctx.text(element).split("\\"))


def _dummy(ctx: ObjectContext, element: Element) -> str | bytes:
    vr = element.vr
    if vr == "UI":
        return _map_uids(ctx, element)
    text = _DUMMY_BY_VR.get(vr)
    if text is not None:
        return text
    if element.items is not None or element.length == UNDEFINED_LENGTH:
        return b""  # a value of items (or of undefined length) has no size to copy
    return b"\x00" * element.length  # binary VRs: zeros of the same size stay valid


def _shift_dates(ctx: ObjectContext, element: Element) -> str:
    days = ctx.pseudonyms.date_offset_days
    value = ctx.text(element)
    return shift_dt(value, days) if element.vr == "DT" else shift_da(value, days)


def _clean_text(ctx: ObjectContext, element: Element) -> str:
    return ctx.clean_text(ctx.text(element))


MAP_UID = Replace("U", "replace with a keyed UID (same UID, same replacement)", _map_uids)
DUMMY = Replace("D", "replace with a dummy value", _dummy)
SHIFT_DATES = Replace("C", "shift by the patient's date offset", _shift_dates)
CLEAN_TEXT = Replace("C", "clean: identifying terms of the object removed", _clean_text)
PSEUDO_PATIENT_ID = Replace(
    "P", "pseudonymous patient ID (SITEID-nnnnnn)", lambda ctx, e: ctx.pseudonyms.patient_id
)
PSEUDO_PATIENT_NAME = Replace(
    "P", "pseudonymous patient ID (SITEID-nnnnnn)", lambda ctx, e: ctx.pseudonyms.patient_name
)
PSEUDO_ACCESSION = Replace(
    "P", "accession pseudonym from the PHI index",
    lambda ctx, e: ctx.pseudonyms.accession_number if ctx.text(e) else "",
)
def _keep_time(ctx: ObjectContext, element: Element) -> str:
    """A time of day as it is; anything else under a TM tag (a date-time, another
    element's bytes) is not a time and is emptied."""
    raw = ctx.obj.raw(element)
    return ctx.text(element) if well_formed("TM", raw, 0, len(raw)) else ""


KEEP_TIME = Replace("C", "kept if a time of day (times are not shifted), else emptied",
                    _keep_time)


# Changes with the rules this module adds to the tables, so that objects de-identified by
# different rules are told apart in the index.
RULES_REVISION = "2: UN interpreted, overlay text, unlisted names and comments removed"


def profile_sha256(options: ProfileOptions) -> str:
    """Identity of the built-in profile: its tables and its options."""
    digest = hashlib.sha256()
    digest.update(RULES_REVISION.encode())
    for table in (TABLE_E1_1, TABLE_E3_10_1):
        digest.update(table.read_bytes())
    digest.update(",".join(options.selected()).encode())
    return digest.hexdigest()


def code_for(row: ProfileRow, options: ProfileOptions) -> str:
    """The E.1-1 code that applies to a row under the selected options."""
    chosen = set(options.selected())
    for column in OPTION_COLUMNS:
        if column in chosen and column in row.options:
            return row.options[column]
    return row.basic


def _vr_of(row: ProfileRow) -> str:
    if row.is_pattern:
        return "OB" if row.tag_text.startswith("(60") else "UN"
    try:
        return dictionary_VR(row.tag)[:2]
    except KeyError:
        return "UN"


def action_for_code(code: str, vr: str, options: ProfileOptions) -> Action:
    """Turn an E.1-1 code into an action, given the attribute's VR (PS3.15 Table E.1-1a)."""
    if code in ("X/Z/U*", "U"):
        if vr == "SQ":
            return Recurse(TextTreatment.NONE, "U")
        return MAP_UID if vr == "UI" else (EMPTY if code != "U" else MAP_UID)
    if code == "X":
        return REMOVE
    if code == "X/Z":
        return EMPTY
    if code == "Z":
        return EMPTY
    if code in ("D", "X/D", "Z/D", "X/Z/D"):
        # Without the IOD at hand, keep Type 1 attributes valid by always using a dummy.
        return Recurse(TextTreatment.DUMMY, "D") if vr == "SQ" else DUMMY
    if code == "K":
        return KEEP
    if code == "C":
        if vr == "SQ":
            return Recurse(TextTreatment.CLEAN, "C")
        if vr in ("DA", "DT"):
            return SHIFT_DATES if options.retain_longitudinal_modified_dates else KEEP
        if vr == "TM":
            return KEEP_TIME
        if vr in ("LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS"):
            return CLEAN_TEXT
        return KEEP
    raise ValueError(f"unknown PS3.15 action code {code!r}")


def _method_items(options: ProfileOptions) -> list[list[tuple[int, str, str]]]:
    keys = ["basic", *options.selected()]
    return [
        [(0x00080100, "SH", METHOD_CODES[k][0]), (0x00080102, "SH", "DCM"),
         (0x00080104, "LO", METHOD_CODES[k][1])]
        for k in keys
    ]


def build_profile(options: ProfileOptions | None = None) -> RuleSet:
    """Compile the built-in profile for the given options (default: RICORD)."""
    options = options or ProfileOptions.ricord()
    rules = RuleSet(
        name="built-in: PS3.15 " + ", ".join(["Basic Profile", *options.selected()]),
        sha256=profile_sha256(options),
    )
    for row in profile_rows():
        action = action_for_code(code_for(row, options), _vr_of(row), options)
        if row.tag_text.startswith("(gggg"):
            rules.private = action if action.code in ("X", "Z") else REMOVE
        elif row.is_pattern:
            mask, value = row.mask()
            rules.masked.append((mask, value, action))
        else:
            rules.by_tag[row.tag] = action
    for mask, value in _OVERLAY_TEXT:
        # Free text that E.1-1 does not list: removed, cleaned with Clean Graphics.
        rules.masked.append((mask, value, CLEAN_TEXT if options.clean_graphics else REMOVE))
    # A person's name the table does not list is still a name; a comment is free text.
    rules.by_vr["PN"] = REMOVE
    for tag in unlisted_free_text():
        rules.by_tag.setdefault(tag, CLEAN_TEXT if options.clean_descriptors else REMOVE)
    if options.retain_safe_private:
        rules.private_by_creator = _safe_private_rule()
    if not options.retain_uids:
        rules.by_vr["UI"] = MAP_UID
    if options.retain_longitudinal_modified_dates:
        rules.by_vr["DA"] = SHIFT_DATES
        rules.by_vr["DT"] = SHIFT_DATES
    rules.by_vr["TM"] = KEEP_TIME
    rules.by_tag[PATIENT_NAME] = PSEUDO_PATIENT_NAME
    rules.by_tag[PATIENT_ID] = PSEUDO_PATIENT_ID
    rules.by_tag[ACCESSION_NUMBER] = PSEUDO_ACCESSION
    method_items = _method_items(options)
    method = [METHOD_CODES[k][1].removesuffix(" Option") for k in ["basic", *options.selected()]]
    if options.retain_longitudinal_modified_dates:
        temporal = "MODIFIED"
    elif options.retain_longitudinal_full_dates:
        temporal = "UNMODIFIED"
    else:
        temporal = "REMOVED"
    rules.additions = [
        Addition(PATIENT_NAME, "PN", lambda ctx: ctx.pseudonyms.patient_name,
                 "pseudonymous patient ID"),
        Addition(PATIENT_ID, "LO", lambda ctx: ctx.pseudonyms.patient_id,
                 "pseudonymous patient ID"),
        Addition(0x00120062, "CS", lambda ctx: "YES", "YES"),
        Addition(0x00120063, "LO", lambda ctx: "\\".join(method), "\\".join(method)),
        Addition(0x00120064, "SQ", lambda ctx: method_items,
                 "CID 7050 codes of the profile and each option"),
        Addition(0x00280303, "CS", lambda ctx: temporal, temporal),
    ]
    return rules


def _safe_private_rule() -> Callable[[int, str | None], Action | None]:
    safe = safe_private()
    creators = {(s.group, s.creator) for s in safe}
    elements = {(s.group, s.element_low, s.creator) for s in safe}

    def decide(tag: int, creator: str | None) -> Action | None:
        if creator is None:
            return None
        group, low = tag >> 16, tag & 0xFFFF
        if 0x0010 <= low <= 0x00FF:
            return KEEP if (group, creator) in creators else None
        return KEEP if (group, low & 0xFF, creator) in elements else None

    return decide


def describe_profile(options: ProfileOptions | None = None) -> list[tuple[str, str, str, str]]:
    """(tag, attribute name, code, what is done) for every attribute of Table E.1-1 under
    the options, followed by the rules that apply beyond the table."""
    options = options or ProfileOptions.ricord()
    rules = build_profile(options)
    lines: list[tuple[str, str, str, str]] = []
    for row in sorted(profile_rows(), key=lambda r: r.tag_text):
        if row.tag_text.startswith("(gggg"):
            action = rules.private
            text = action.describe()
            if options.retain_safe_private:
                text += ", except the safe private attributes of Table E.3.10-1 (kept)"
            lines.append((row.tag_text.split(" ")[0], row.name, action.code, text))
            continue
        found = rules.by_tag.get(row.tag) if not row.is_pattern else next(
            a for m, v, a in rules.masked if (m, v) == row.mask()
        )
        assert found is not None
        lines.append((row.tag_text, row.name, found.code, found.describe()))
    for addition in rules.additions:
        tag = f"({addition.tag >> 16:04X},{addition.tag & 0xFFFF:04X})"
        lines.append((tag, _keyword(addition.tag), "A", "set to " + addition.description))
    for (mask, value), name in zip(_OVERLAY_TEXT, ("Overlay Description", "Overlay Label"),
                                   strict=True):
        action = next(a for m, v, a in rules.masked if (m, v) == (mask, value))
        tag = f"(60xx,{value & 0xFFFF:04X})"
        lines.append((tag, name, action.code, action.describe() + " (free text)"))
    free_text = unlisted_free_text()
    action = rules.by_tag[free_text[0]]
    lines.append(("(listed)", f"{len(free_text)} comments, notes and reasons not in E.1-1, "
                  f"such as {_keyword(free_text[0])}", action.code, action.describe()))
    for vr, action in rules.by_vr.items():
        lines.append(("(any)", f"any other {vr} element", action.code, action.describe()))
    lines.append(("(gggg,0000)", "group lengths", "X", "remove"))
    lines.append(("(other)", "attributes not listed", rules.unspecified.code,
                  rules.unspecified.describe()))
    return lines


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"{tag:08X}"

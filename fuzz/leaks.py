"""Whether a de-identified output still holds a planted value where it should not.

A planted value may legitimately survive where a mutation moved it into an attribute the
profile keeps as it is (say Slice Thickness): that is the profile's rule, not a leak. It
is a leak anywhere else: in an attribute the profile removes, empties or replaces, in a
private element, in a value an independent reader (pydicom) finds outside every element,
or in text that cleaning should have rid of the object's own identifiers.
"""

from __future__ import annotations

import io
import re

import pydicom
from pydicom.multival import MultiValue

from shared.deid.rules import Kind, RuleSet
from shared.dicom.parse import UNDEFINED_LENGTH, DicomObject, Item, parse

# VRs whose values are text; the values of all others are compared as raw bytes.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})


# The longest value of each string VR with a length limit (PS3.5 6.2), in bytes.
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 18, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
              "PN": 3 * 64 + 2, "SH": 16, "TM": 28, "UI": 64}

# File meta elements that repeat a data set element (Media Storage SOP Class and Instance).
_META_MIRRORS = {0x00020002: 0x00080016, 0x00020003: 0x00080018}

_TIME = re.compile(rb"(\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?)?")

# Where a value sits: (tag, VR) of each enclosing sequence, outermost first.
Path = tuple[tuple[int, str], ...]
Leaf = tuple[int, str, bytes, Path]


def leaf_values(data: bytes) -> list[Leaf]:
    """(tag, VR, value bytes, enclosing sequences) of every non-sequence element of
    ``data`` at every depth, as pydicom, an independent reader that turns UN sequences into
    items, sees them: text decoded with the character set in force, other values as their
    raw bytes."""
    found: list[Leaf] = []

    def walk(ds: pydicom.Dataset, path: Path) -> None:
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            raw_value = getattr(raw, "value", b"")
            raw_bytes = raw_value if isinstance(raw_value, bytes) else b""
            try:
                element = ds[tag]
            except Exception:
                found.append((int(tag), str(raw.VR), raw_bytes, path))
                continue
            if element.VR == "SQ":
                for item in element.value or []:
                    walk(item, (*path, (int(tag), "SQ")))
                continue
            if element.VR not in _TEXT_VRS:
                value = element.value
                found.append((int(tag), element.VR,
                              value if isinstance(value, bytes) else raw_bytes, path))
                continue
            try:
                value = element.value
                text = ("\\".join(str(v) for v in value) if isinstance(value, MultiValue)
                        else str(value))
            except Exception:
                found.append((int(tag), element.VR, raw_bytes, path))
                continue
            for encoding in ("latin-1", "utf-8"):
                found.append((int(tag), element.VR, text.encode(encoding, "replace"), path))

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    walk(ds, ())
    if ds.file_meta is not None:
        walk(ds.file_meta, ())
    return found


def reader_leaf_values(data: bytes) -> list[Leaf]:
    """As :func:`leaf_values`, located by ``shared.dicom.parse`` (raw value bytes)."""
    obj = parse(data, require_uids=False)
    found: list[Leaf] = []
    pending: list[tuple[Item, Path]] = [(obj.dataset, ()), (obj.meta, ())]
    while pending:
        item, path = pending.pop()
        for element in item.elements.values():
            if element.items is not None:
                pending.extend((child, (*path, (element.tag, element.vr)))
                               for child in element.items)
            elif element.length == UNDEFINED_LENGTH:  # encapsulated pixel data: fragments
                found.append((element.tag, element.vr,
                              obj.buffer[element.value : element.end], path))
            else:
                found.append((element.tag, element.vr, obj.raw(element), path))
    return found


_SPECIFIC_CHARACTER_SET = 0x00080005

# The object's own identifying values, which cleaning (PS3.15 "C" on free text) must remove
# from text; other words of a text are beyond what cleaning can know.
_OWN_IDENTIFIERS = (0x00100010, 0x00100020, 0x00101000, 0x00101001, 0x00080050, 0x00100021)


def own_identifiers(obj: DicomObject) -> set[str]:
    """The object's identifying values and their name components, as cleaning sees them."""
    terms: set[str] = set()
    for tag in _OWN_IDENTIFIERS:
        element = obj.dataset.elements.get(tag)
        if element is None or element.items is not None or element.length == UNDEFINED_LENGTH:
            continue
        value = obj.raw(element).decode("latin-1")
        for part in [value, *re.split(r"[\^=\\]", value)]:
            if part.strip(" \x00"):
                terms.add(part.strip(" \x00").casefold())
    return terms


def leak(rules: RuleSet, output: bytes, planted: list[bytes], own: set[str]) -> str:
    """Why ``output`` leaks a planted value, or "" when it does not. ``own`` holds the
    input's identifying values (:func:`own_identifiers`)."""
    found = [value for value in planted if value in output]
    if not found:
        return ""
    try:
        leaves = leaf_values(output)
    except Exception:
        # pydicom cannot read it at all (a Specific Character Set holding NUL stops it, for
        # one); the project's reader locates the values instead.
        try:
            leaves = reader_leaf_values(output)
        except Exception as exc:
            return ("a planted value is in an output neither pydicom nor the reader can read "
                    f"({exc.__class__.__name__})")
    multibyte = any(
        tag == _SPECIFIC_CHARACTER_SET and (b"GB" in raw or b"2022" in raw)
        for tag, _, raw, _ in leaves
    )
    ours: list[Leaf] | None = None
    for value in found:
        holders = [(tag, vr, path, raw) for tag, vr, raw, path in leaves if value in raw]
        if not holders:
            # Where pydicom gives up (say inside damaged encapsulated pixel data), the
            # project's reader says where the value is.
            if ours is None:
                try:
                    ours = reader_leaf_values(output)
                except Exception:
                    ours = []
            holders = [(tag, vr, path, raw) for tag, vr, raw, path in ours if value in raw]
        if not holders:
            if multibyte:
                # Its bytes are part of multi-byte characters of a text (GB18030, ISO 2022
                # escapes): a reader that honours the character set does not see it.
                continue
            return "a planted value is in the output outside any element"
        for tag, vr, path, raw in holders:
            problem = _misplaced(rules, value, own, tag, vr, path, raw)
            if problem:
                return problem
    return ""


def _misplaced(
    rules: RuleSet, value: bytes, own: set[str], tag: int, vr: str, path: Path, raw: bytes
) -> str:
    """Why a planted value must not be where it is, or "" if the rules keep it there."""
    # A sequence the rules copy as it is (CTP: an unscripted sequence) keeps its items.
    for outer_tag, outer_vr in path:
        if not outer_tag >> 16 & 1 and rules.action(outer_tag, outer_vr).kind is Kind.COPY:
            return ""
    where = "".join(f"{t:08X} > " for t, _ in path)
    if tag >> 16 == 0x0002:
        if tag not in _META_MIRRORS:
            return f"a planted value is in the file meta, {tag:08X} {vr}"
        tag = _META_MIRRORS[tag]  # as the data set element it repeats
    if tag >> 16 & 1:
        return f"a planted value is in private element {where}{tag:08X}"
    action = rules.action(tag, vr)
    if action.kind in (Kind.KEEP, Kind.COPY) or action.describe().startswith("kept"):
        longest = MAX_LENGTH.get(vr)
        if longest is not None and any(len(v.strip(b" \x00")) > longest
                                       for v in raw.split(b"\\")):
            # A changed length field made a kept value swallow the elements after it.
            return (f"a planted value is in kept element {where}{tag:08X} {vr}, in a value "
                    f"longer than {vr} allows ({longest})")
        if vr == "TM" and not all(_TIME.fullmatch(v.strip(b" \x00")) for v in raw.split(b"\\")):
            # Times of day are kept; a date (or anything else) under a TM header is not one.
            return f"a planted value is in kept element {where}{tag:08X} TM, not a time"
        return ""
    if action.describe().startswith("clean") and value.decode("latin-1").casefold() not in own:
        return ""
    return (f"a planted value is in element {where}{tag:08X} {vr}, "
            f"whose action is {action.kind.value} ({action.code})")

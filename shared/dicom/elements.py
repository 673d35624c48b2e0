"""The elements of a DICOM object as an operator reads them: one flat list of display rows
(tag, keyword, name, VR, VM, encoded length, value text, depth), file meta apart.

Operators look at de-identified objects to see what left the hospital, the way the RSNA
Anonymizer's Elements tab showed them. The rows are built from the structural reader
(:func:`shared.dicom.parse.parse`), not from a toolkit's decoded data set, for three
reasons: its offsets give each value's length exactly as it is encoded; it is the reader
that accepted the object for de-identification, so what is shown is what the engine saw
(UN values given their dictionary VR, sequences hidden in UN values opened); and an object
it cannot read is refused with its reason rather than shown half-guessed.

A value is shown, never interpreted further: text in the character set of its data set
(pydicom's codecs through :mod:`shared.dicom.charset`; bytes no codec accepts are shown as
Latin-1, so nothing is hidden), numbers from their binary encoding, other bytes in hex.
Pixel data and other large binary values are only summarised: the rows are meant for a
table, and the image is :mod:`shared.dicom.render`'s. Every value is cut at a length the
caller chooses.

Sequences are flattened: after a sequence come its items, each opened by a marker row
(tag (FFFE,E000), name "Item N") and followed by its elements, all one ``depth`` deeper
than the sequence. ``depth`` is thus the nesting of the data set a row belongs to (0: the
object's own), and a table indenting by it shows the structure.

Everything here is a pure function of its arguments (no cache but the data dictionary's):
it may run in several threads at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import get_entry, get_private_entry
from pydicom.uid import UID

from shared.dicom import charset
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import (
    ITEM,
    PIXEL_DATA,
    SEQUENCE_DELIMITER,
    UNDEFINED_LENGTH,
    DicomObject,
    Item,
    Syntax,
    parse,
)
from shared.dicom.parse import Element as Located

# Binary values longer than this are summarised ("<N bytes>") rather than shown in hex.
LARGE_BINARY_BYTES = 1024

# Float Pixel Data, Double Float Pixel Data and Pixel Data: always summarised.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})

# VRs whose value is a single value even when it holds a backslash (PS3.5 6.2).
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Binary numbers: struct code and size of one value.
_NUMBERS = {
    "US": ("H", 2), "SS": ("h", 2), "UL": ("L", 4), "SL": ("l", 4), "FL": ("f", 4),
    "FD": ("d", 8), "SV": ("q", 8), "UV": ("Q", 8), "AT": ("HH", 4),
}

ELLIPSIS = "\u2026"


class ElementsError(ValueError):
    """The object cannot be listed; the message says why without repeating any value."""


@dataclass(frozen=True, slots=True)
class Element:
    """One display row: an element, or the marker opening a sequence item."""

    tag: str  # "(0008,0016)"
    keyword: str  # "" when the dictionary has none (private, unknown, item marker)
    name: str  # dictionary name; "Private tag", "Private Creator", "Unknown", "Item N"
    vr: str  # as the reader took it ("" for an item marker)
    vm: int  # number of values; items for a sequence; 0 when empty
    length: int  # value length as encoded; undefined lengths: bytes up to the delimiter
    value: str  # display text, at most max_value_chars characters
    depth: int  # nesting of the data set holding the row (0: the object's own)


@dataclass(frozen=True, slots=True)
class ObjectElements:
    """The rows of one object: its file meta (PS3.10 group 0002) and its data set."""

    transfer_syntax_uid: str
    transfer_syntax_name: str
    file_meta: list[Element]
    elements: list[Element]


def list_elements(data: bytes, max_value_chars: int = 256) -> ObjectElements:
    """The elements of a PS3.10 file or bare data set, in tag order, sequences flattened.

    Raises :class:`ElementsError` (and nothing else) when the reader cannot read the
    object; its message is the reader's reason. Values are cut at ``max_value_chars``
    characters, the last of them an ellipsis.
    """
    if max_value_chars < 1:
        raise ValueError("max_value_chars must be at least 1")
    try:
        obj = parse(data, require_uids=False)
    except RejectedObject as exc:
        raise ElementsError(exc.reason) from None
    except (struct.error, ValueError, IndexError, OverflowError, RecursionError) as exc:
        raise ElementsError(f"unreadable element structure ({exc.__class__.__name__})") from None
    lister = _Lister(obj, max_value_chars)
    meta: list[Element] = []
    lister.dataset(obj.meta, Syntax(True, True), charset.DEFAULT, 0, meta)
    rows: list[Element] = []
    top = _encodings(obj, obj.dataset, charset.DEFAULT)
    lister.dataset(obj.dataset, obj.syntax, top, 0, rows)
    uid = obj.transfer_syntax_uid
    return ObjectElements(uid, _syntax_name(uid), meta, rows)


def to_json(elements: ObjectElements) -> dict[str, Any]:
    """The rows as an API returns them (JSON-ready: strings and integers only)."""
    return {
        "transfer_syntax": {
            "uid": elements.transfer_syntax_uid,
            "name": elements.transfer_syntax_name,
        },
        "file_meta": [_row(e) for e in elements.file_meta],
        "elements": [_row(e) for e in elements.elements],
    }


def _row(e: Element) -> dict[str, Any]:
    return {
        "tag": e.tag, "keyword": e.keyword, "name": e.name, "vr": e.vr, "vm": e.vm,
        "length": e.length, "value": e.value, "depth": e.depth,
    }


def _syntax_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return "" if name == uid else name


def _encodings(obj: DicomObject, item: Item, inherited: charset.Encodings) -> charset.Encodings:
    """The character set of a data set: its own Specific Character Set, else its parent's."""
    element = item.elements.get(charset.SPECIFIC_CHARACTER_SET)
    if element is None or element.items is not None or element.length == UNDEFINED_LENGTH:
        return inherited
    return charset.encodings_for(obj.raw(element).decode("latin-1").strip(" \x00") or None)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@lru_cache(maxsize=4096)
def _standard_names(tag: int) -> tuple[str, str]:
    """Keyword and name of a tag in the standard data dictionary (repeating groups too)."""
    try:
        entry = get_entry(tag)
    except KeyError:
        if tag & 0xFFFF == 0:
            return "", "Group Length"
        return "", "Unknown"
    return entry[4], entry[2]


@lru_cache(maxsize=4096)
def _private_name(tag: int, creator: str) -> str:
    try:
        return get_private_entry(tag, creator)[2] or "Private tag"
    except (KeyError, ValueError):
        return "Private tag"


class _Lister:
    """Turns the located elements of one object into rows (one instance per call)."""

    def __init__(self, obj: DicomObject, max_chars: int) -> None:
        self.obj = obj
        self.buffer = obj.buffer
        self.max_chars = max_chars

    def dataset(
        self,
        item: Item,
        syntax: Syntax,
        encodings: charset.Encodings,
        depth: int,
        rows: list[Element],
    ) -> None:
        for tag in sorted(item.elements):
            element = item.elements[tag]
            keyword, name = self._names(tag, item)
            if element.items is not None:
                self._sequence(element, keyword, name, syntax, encodings, depth, rows)
                continue
            vm, value = self._value(element, syntax, encodings)
            rows.append(Element(_tag_text(tag), keyword, name, element.vr, vm,
                                self._length(element), value, depth))

    def _sequence(
        self,
        element: Located,
        keyword: str,
        name: str,
        syntax: Syntax,
        encodings: charset.Encodings,
        depth: int,
        rows: list[Element],
    ) -> None:
        items = element.items or []
        item_syntax = element.item_syntax or syntax
        rows.append(Element(_tag_text(element.tag), keyword, name, "SQ", len(items),
                            self._length(element), "", depth))
        for number, item in enumerate(items, start=1):
            rows.append(Element(_tag_text(ITEM), "", f"Item {number}", "", 1,
                                self._item_length(item, item_syntax), "", depth + 1))
            inner = _encodings(self.obj, item, encodings)
            self.dataset(item, item_syntax, inner, depth + 1, rows)

    def _names(self, tag: int, item: Item) -> tuple[str, str]:
        group, number = tag >> 16, tag & 0xFFFF
        if not group & 1:
            return _standard_names(tag)
        if number == 0:
            return "", "Group Length"
        if 0x0010 <= number <= 0x00FF:
            return "", "Private Creator"
        if number < 0x1000:
            return "", "Private tag"
        creator = item.elements.get((group << 16) | (number >> 8))
        if creator is None or creator.items is not None or creator.length == UNDEFINED_LENGTH:
            return "", "Private tag"
        text = self.obj.raw(creator).decode("latin-1").strip(" \x00")
        return "", _private_name(tag, text) if text else "Private tag"

    def _length(self, element: Located) -> int:
        if element.length != UNDEFINED_LENGTH:
            return element.length
        # Up to the sequence delimiter, which the reader always finds (else it refuses).
        return element.end - element.value - 8

    def _item_length(self, item: Item, syntax: Syntax) -> int:
        if item.start < 0:
            return 0
        length = struct.unpack_from(syntax.prefix + "L", self.buffer, item.start + 4)[0]
        if length != UNDEFINED_LENGTH:
            return int(length)
        return item.end - item.start - 16  # header and item delimiter

    def _value(
        self, element: Located, syntax: Syntax, encodings: charset.Encodings
    ) -> tuple[int, str]:
        """VM and display text of an element that is not a sequence."""
        vr = element.vr
        if element.length == UNDEFINED_LENGTH:  # encapsulated pixel data
            size = self._length(element)
            fragments = self._fragment_count(element, syntax)
            return 1, self._cut(f"<{size} bytes encapsulated in {fragments} fragments>")
        if element.length == 0:
            return 0, ""
        raw = self.obj.raw(element)
        if element.tag in _PIXEL_TAGS:
            return 1, self._cut(f"<{element.length} bytes>")
        number = _NUMBERS.get(vr)
        if number is not None:
            return self._numbers(raw, vr, number, syntax)
        if vr in _BINARY or element.opaque:
            if element.length > LARGE_BINARY_BYTES:
                return 1, self._cut(f"<{element.length} bytes>")
            return 1, self._hex(raw)
        text = charset.decode(raw, vr, encodings)
        vm = 1 if vr in _SINGLE_VALUED else text.count("\\") + 1
        return vm, self._cut(text)

    def _numbers(
        self, raw: bytes, vr: str, number: tuple[str, int], syntax: Syntax
    ) -> tuple[int, str]:
        code, size = number
        vm = len(raw) // size
        if vm == 0:  # shorter than one value: show what is there
            return 1, self._hex(raw)
        # Each value takes at least two characters with its separator: unpack no more
        # values than can be shown.
        shown = min(vm, self.max_chars // 2 + 1)
        values = struct.unpack_from(f"{syntax.prefix}{code * shown}", raw)
        if vr == "AT":
            texts = [f"({g:04X},{e:04X})" for g, e in zip(values[::2], values[1::2], strict=True)]
        elif vr == "FL":
            texts = [format(v, ".7g") for v in values]
        else:
            texts = [repr(v) if isinstance(v, float) else str(v) for v in values]
        text = "\\".join(texts)
        if shown < vm:
            text += "\\" + ELLIPSIS
        return vm, self._cut(text)

    def _fragment_count(self, element: Located, syntax: Syntax) -> int:
        """Items of encapsulated pixel data after the basic offset table (the reader has
        checked every header and length)."""
        header = struct.Struct(syntax.prefix + "HHL")
        pos, count = element.value, -1
        while pos + 8 <= element.end:
            group, number, length = header.unpack_from(self.buffer, pos)
            if (group << 16) | number == SEQUENCE_DELIMITER:
                break
            count += 1
            pos += 8 + length
        return max(count, 0)

    def _hex(self, raw: bytes) -> str:
        # Three characters a byte: convert no more bytes than can be shown.
        limit = self.max_chars // 3 + 1
        text = raw[:limit].hex(" ")
        return self._cut(text if len(raw) <= limit else text + " " + ELLIPSIS)

    def _cut(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars - 1] + ELLIPSIS

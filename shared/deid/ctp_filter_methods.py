"""What a filter script's tests compare, and how: element values as CTP sees them and
the methods (``equals``, ``matches``, ``isLessThan``...) that test them.

:func:`element_text` is the value a test reads; :class:`Values` reads each one once per
object; :data:`METHODS` gives, for each method name, the factory turning a script's
argument into a predicate over that value (raising ValueError for an argument CTP would
not understand). The language itself is in :mod:`shared.deid.ctp_filter`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from pydicom.charset import decode_bytes

from shared.deid.elements import ElementRef, encodings, find, value
from shared.dicom.parse import UNDEFINED_LENGTH, DicomObject

# dcm4che 1.4 (the toolkit under CTP) trims leading spaces as well as trailing spaces and
# NULs from these VRs; person names also lose trailing '^'.
_TRIMMED_BOTH_ENDS = frozenset({"AE", "CS", "DS", "IS", "LO", "SH"})
_FILE_META_GROUP = 0x0002


def element_text(
    obj: DicomObject, ref: ElementRef, charsets: list[str] | None = None
) -> str:
    """The text a filter test compares for ``ref`` in ``obj``, as CTP computes it.

    CTP (``DicomObject.getElementValue``) takes dcm4che's strings of the element and joins
    multiple values with a backslash, so ``ImageType`` reads ``ORIGINAL\\PRIMARY\\AXIAL``;
    a missing element, a sequence, bulk data and a name matching nothing all read as ''.
    Strings are decoded with the object's Specific Character Set and trimmed as dcm4che
    does: trailing spaces and NULs always, leading spaces for AE, CS, DS, IS, LO and SH,
    trailing '^' for PN. Numbers read in decimal. Group 0002 elements come from the file
    meta information. A private element of unknown VR (implicit VR files) is decoded as
    text, as CTP does for private elements.
    """
    tag = ref.tag
    if tag is not None and tag >> 16 == _FILE_META_GROUP:
        element = obj.meta.elements.get(tag)
    else:
        element = find(obj, ref)
    if element is None:
        return ""
    if (
        element.vr == "UN"
        and ref.steps[-1].creator is not None
        and element.items is None
        and element.length != UNDEFINED_LENGTH
    ):
        raw = obj.raw(element)
        return decode_bytes(raw, charsets or encodings(obj), set()).rstrip(" \x00")
    text = value(obj, element, charsets)
    if element.vr in _TRIMMED_BOTH_ENDS:
        return text.lstrip(" ")
    if element.vr == "PN":
        return text.rstrip(" ^\x00")
    return text


class Values:
    """The element texts of one object, each read once however often the script asks."""

    __slots__ = ("_cache", "_charsets", "obj")

    def __init__(self, obj: DicomObject) -> None:
        self.obj = obj
        self._charsets: list[str] | None = None
        self._cache: dict[str, str] = {}  # by name: element_ref gives one ref per name

    def get(self, ref: ElementRef) -> str:
        text = self._cache.get(ref.text)
        if text is None:
            if self._charsets is None:
                self._charsets = encodings(self.obj)
            text = element_text(self.obj, ref, self._charsets)
            self._cache[ref.text] = text
        return text


Predicate = Callable[[str], bool]

_NOT_NUMERIC = re.compile(r"[^0-9.]")
_JAVA_DOUBLE = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")


def _number(text: str) -> float | None:
    """CTP's reading of a number: every character but digits and '.' is dropped (signs,
    exponents, units, backslashes) and the rest must parse as a Java double."""
    digits = _NOT_NUMERIC.sub("", text)
    if not _JAVA_DOUBLE.fullmatch(digits):
        return None
    return float(digits)


@lru_cache(maxsize=512)
def _regex(source: str) -> re.Pattern[str]:
    # Java's \d, \w, \s, \b and (?i) are ASCII-only by default.
    return re.compile(source, re.ASCII)


def _equals(literal: str) -> Predicate:
    return lambda text: text == literal


def _equals_ignore_case(literal: str) -> Predicate:
    lowered = literal.lower()
    return lambda text: text.lower() == lowered


def _contains(literal: str) -> Predicate:
    return lambda text: literal in text


def _contains_ignore_case(literal: str) -> Predicate:
    lowered = literal.lower()
    return lambda text: lowered in text.lower()


def _starts_with(literal: str) -> Predicate:
    return lambda text: text.startswith(literal)


def _starts_with_ignore_case(literal: str) -> Predicate:
    lowered = literal.lower()
    return lambda text: text.lower().startswith(lowered)


def _ends_with(literal: str) -> Predicate:
    return lambda text: text.endswith(literal)


def _ends_with_ignore_case(literal: str) -> Predicate:
    lowered = literal.lower()
    return lambda text: text.lower().endswith(lowered)


def _matches(literal: str) -> Predicate:
    try:
        fullmatch = _regex(literal).fullmatch
    except re.error as exc:
        raise ValueError(f"invalid regular expression for matches: {exc}") from None
    return lambda text: fullmatch(text) is not None


def _threshold(method: str, literal: str) -> float:
    if "-" in literal:
        raise ValueError(
            f"{method} cannot compare with a negative number: CTP drops the sign "
            f"(it would compare with {_NOT_NUMERIC.sub('', literal) or 'nothing'})"
        )
    number = _number(literal)
    if number is None:
        raise ValueError(f"{method} needs a number as its argument")
    return number


def _is_less_than(literal: str) -> Predicate:
    limit = _threshold("isLessThan", literal)

    def less(text: str) -> bool:
        number = _number(text)
        return number is not None and number < limit

    return less


def _is_greater_than(literal: str) -> Predicate:
    limit = _threshold("isGreaterThan", literal)

    def greater(text: str) -> bool:
        number = _number(text)
        return number is not None and number > limit

    return greater


METHODS: dict[str, Callable[[str], Predicate]] = {
    "equals": _equals,
    "equalsIgnoreCase": _equals_ignore_case,
    "contains": _contains,
    "containsIgnoreCase": _contains_ignore_case,
    "startsWith": _starts_with,
    "startsWithIgnoreCase": _starts_with_ignore_case,
    "endsWith": _ends_with,
    "endsWithIgnoreCase": _ends_with_ignore_case,
    "matches": _matches,
    "isLessThan": _is_less_than,
    "isGreaterThan": _is_greater_than,
}

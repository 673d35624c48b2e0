"""Whether a value is what its VR says it is (PS3.5 6.2), read from its bytes.

A value the engine keeps leaves as it came; if it is not a date, a time, a number, a UID
or an age although its VR says so, it is something else: most often the elements after it
swallowed by a wrong length, or a date where a time should be. Such a value is not kept.
Only VRs with a grammar are checked; free text cannot be told from text.
"""

from __future__ import annotations

import mmap
import re

# What the checks read: a value's bytes, or the buffer or mapped file it lies in.
Readable = bytes | memoryview | mmap.mmap

_DATE = rb"\d{8}|\d{4}\.\d{2}\.\d{2}"
_TIME = rb"(?:[01]\d|2[0-3])(?::?[0-5]\d(?::?(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?"
_DATE_TIME = rb"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?(?:[+-]\d{4})?"


def _ranged(single: bytes) -> re.Pattern[bytes]:
    """Values of ``single``, or ranges of them, separated by backslashes, space padded."""
    one = rb"(?:(?:%s)?-(?:%s)?|%s)?" % (single, single, single)
    return re.compile(rb" *%s *(?:\\ *%s *)*[ \x00]*" % (one, one))


def _listed(single: bytes) -> re.Pattern[bytes]:
    one = rb"(?:%s)?" % single
    return re.compile(rb" *%s *(?:\\ *%s *)*[ \x00]*" % (one, one))


_GRAMMARS = {
    "DA": _ranged(_DATE),
    "TM": _ranged(_TIME),
    "DT": _ranged(_DATE_TIME),
    "AS": _listed(rb"\d{3}[DWMY]"),
    "IS": _listed(rb"[+-]?\d{1,12}"),
    "DS": _listed(rb"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"),
    # Digits and dots, and the letters and hyphens of UIDs seen in the wild (hex digests).
    "UI": _listed(rb"[0-9A-Za-z_-]{1,64}(?:\.[0-9A-Za-z_-]{1,64}){0,63}"),
}


# Bytes that never appear in text (ESC starts ISO 2022 code extensions; TAB, LF, FF and CR
# are allowed in ST, LT and UT and harmless elsewhere); NUL only as trailing padding.
_NOT_TEXT = re.compile(rb"[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]|\x00(?!\x00*\Z)")


def holds_control_bytes(buffer: Readable, start: int, end: int) -> bool:
    """Whether ``buffer[start:end]`` holds bytes no text has: in a string value, most
    likely the elements after it, swallowed by a wrong length (a swallowed element brings
    at least its 8-byte header, so shorter values are not searched)."""
    return end - start >= 8 and _NOT_TEXT.search(buffer, start, end) is not None


def well_formed(vr: str, buffer: Readable, start: int, end: int) -> bool:
    """Whether ``buffer[start:end]`` is a valid value of ``vr`` (True for VRs without a
    grammar)."""
    grammar = _GRAMMARS.get(vr)
    return grammar is None or grammar.fullmatch(buffer, start, end) is not None


def plausible(vr: str, buffer: Readable, start: int, end: int, kept: bool) -> bool:
    """Whether a string value may go out: no control bytes (see
    :func:`holds_control_bytes`) and, when ``kept`` as it is, the grammar of its VR
    (:func:`well_formed`). Both checks are written out here: the engine asks for every
    string element of every object."""
    if end - start >= 8 and _NOT_TEXT.search(buffer, start, end) is not None:
        return False
    if not kept:
        return True
    grammar = _GRAMMARS.get(vr)
    return grammar is None or grammar.fullmatch(buffer, start, end) is not None

"""Text values in the object's own character set (PS3.5 6.1, Specific Character Set).

Specific Character Set (0008,0005) decides how the bytes of the text VRs (SH, LO, UC, ST,
LT, UT, PN) are read: Latin-1 for ISO_IR 100, UTF-8 for ISO_IR 192, ISO 2022 escape
sequences for Japanese (IR 13, IR 87, IR 159), and so on. A de-identifier that reads them
as Latin-1 and writes them back as something else garbles them, and one that matches
identifying terms on undecoded bytes misses names written in another form. Values of the
other VRs use the default repertoire and are read byte for byte.

The codecs are pydicom's, which know every defined term of PS3.3 C.12.1.1.2.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.charset import convert_encodings, decode_bytes, encode_string

SPECIFIC_CHARACTER_SET = 0x00080005

# VRs whose values are in the Specific Character Set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})

# Where ISO 2022 code extensions return to the initial state (PS3.5 6.1.2.5.3).
_PN_DELIMITERS = frozenset({0x5C, 0x3D, 0x5E})
_TEXT_DELIMITERS = frozenset({0x0D, 0x0A, 0x09, 0x0C})
_VALUE_DELIMITERS = frozenset({0x5C})

Encodings = tuple[str, ...]
DEFAULT: Encodings = ("iso8859",)


@lru_cache(maxsize=256)
def encodings_for(specific_character_set: str | None) -> Encodings:
    """Python codecs for a Specific Character Set value (None or empty: the default
    repertoire, read as Latin-1 so that no byte is lost)."""
    if not specific_character_set:
        return DEFAULT
    terms = [t.strip() for t in specific_character_set.split("\\")]
    try:
        return tuple(convert_encodings(terms))
    except (LookupError, ValueError):  # not a defined term: read byte for byte
        return DEFAULT


def _delimiters(vr: str) -> set[int]:
    if vr == "PN":
        return set(_PN_DELIMITERS)
    if vr in ("ST", "LT", "UT"):
        return set(_TEXT_DELIMITERS)
    return set(_VALUE_DELIMITERS)


def decode(raw: bytes, vr: str, encodings: Encodings) -> str:
    """The text of a value, trailing padding removed."""
    text = None
    if vr in TEXT_VRS and encodings != DEFAULT:
        try:
            text = decode_bytes(bytes(raw), list(encodings), _delimiters(vr))
        except (LookupError, ValueError):
            text = None
    if text is None:
        text = bytes(raw).decode("latin-1")
    return text.rstrip(" \x00")


def encode(text: str, vr: str, encodings: Encodings) -> bytes:
    """The bytes of a text value in the given character set (unpadded)."""
    if vr in TEXT_VRS and encodings != DEFAULT:
        if text.isascii() and not any(e.startswith(("iso2022", "shift_jis")) for e in encodings):
            return text.encode("ascii")
        try:
            return encode_string(text, list(encodings))
        except (LookupError, ValueError):
            pass
    return text.encode("latin-1", "replace")

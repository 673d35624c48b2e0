"""UID replacement: a keyed, deterministic map from original to pseudonymous UIDs.

Every process that holds the site secret maps a UID to the same replacement, on any day,
so references between objects (RT, SEG, PR, KO, source images) survive de-identification
whichever worker handles which object. Well-known UIDs (PS3.6 registry: SOP classes,
transfer syntaxes, coding schemes, frames of reference of the standard) are kept.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

DICOM_ROOT = "1.2.840.10008."
# The UUID-derived root of PS3.5 B.2: "2.25." followed by a 128-bit integer in decimal
# (at most 39 digits), so a generated UID is at most 44 characters and never has a
# component with a leading zero.
UUID_ROOT = "2.25."

# Identifies the files this software writes (File Meta Implementation Class UID).
IMPLEMENTATION_CLASS_UID = "2.25.176318219631937428905437282512049021857"
IMPLEMENTATION_VERSION_NAME = "DEIDSVC_0_1"


def is_well_known(uid: str) -> bool:
    """True for UIDs defined by the standard, which carry no information about a patient."""
    return uid.startswith(DICOM_ROOT) or uid in UID_dictionary


class UidMapper:
    """Replaces UIDs with ``2.25.<HMAC-SHA256(secret, uid) truncated to 128 bits>``."""

    def __init__(self, secret: bytes, cache_size: int = 65536) -> None:
        self._secret = secret
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def __call__(self, uid: str) -> str:
        new = self._cache.get(uid)
        if new is None:
            if not uid or is_well_known(uid):
                new = uid
            else:
                digest = hmac.new(self._secret, b"uid\x00" + uid.encode("ascii", "replace"),
                                  hashlib.sha256).digest()
                new = UUID_ROOT + str(int.from_bytes(digest[:16], "big"))
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[uid] = new
        return new

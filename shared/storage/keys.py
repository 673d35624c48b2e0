"""Names built from data: every path component and object key that comes from a DICOM value
(patient ID, study / series / SOP instance UIDs, modality) or from a script's result.

Such values are chosen by whoever wrote the file, so they are never carried into a path
as they are. :func:`safe_component` keeps a value only when it is made of
``[A-Za-z0-9._-]``, starts with a letter or digit (never ``.`` or ``..``, never a hidden
or temporary name), is at most :data:`MAX_COMPONENT` characters and does not look like a
digest name; anything else (empty, ``/``, ``\\``, ``..``, spaces, non-ASCII, too long) is
replaced by ``sha256-`` and the first 20 hex digits of the SHA-256 of its UTF-8 bytes. The
map is deterministic (re-runs and redeliveries give the same name) and distinct values
give distinct names. The values named here are those of the de-identified output, so a
digest tells nothing the object itself does not.

:func:`contained` then resolves the path (symbolic links included) and refuses it with
:class:`UnsafePath` unless it stays inside the folder it was meant for. Every entry point
builds its names here: ``anon deidentify``, ``anon rt-batch``, the anonymizer worker's
output key and the local-folder object store.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from shared.dicom.errors import RejectedObject

MAX_COMPONENT = 100
DIGEST_PREFIX = "sha256-"
_DIGEST_DIGITS = 20
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LOOKS_LIKE_DIGEST = re.compile(re.escape(DIGEST_PREFIX) + r"[0-9a-f]+", re.IGNORECASE)


class UnsafePath(RejectedObject):
    """A path or key built for an object would leave the folder or bucket it belongs to."""

    code = "unsafe-path"


def digest_name(value: str) -> str:
    """The name that stands for a value that cannot be used as it is."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return DIGEST_PREFIX + digest[:_DIGEST_DIGITS]


def is_safe_component(value: str) -> bool:
    """True when ``value`` may be used as one path component as it is."""
    return (
        len(value) <= MAX_COMPONENT
        and _SAFE.fullmatch(value) is not None
        and _LOOKS_LIKE_DIGEST.match(value) is None
    )


def safe_component(value: str) -> str:
    """``value`` itself when it is safe as one path component, else its digest name."""
    return value if is_safe_component(value) else digest_name(value)


def safe_name(value: str, suffix: str = "") -> str:
    """A file name: the safe form of ``value`` followed by a fixed ``suffix`` (``.dcm``)."""
    if suffix and not is_safe_component("x" + suffix):
        raise ValueError(f"file name suffix {suffix!r} is not made of safe characters")
    return safe_component(value) + suffix


def safe_key(*values: str, suffix: str = "") -> str:
    """An object key of one safe component per value, the last one followed by ``suffix``:
    ``safe_key(patient, study, series, sop, suffix=".dcm")``."""
    if not values:
        raise ValueError("a key needs at least one component")
    *folders, last = values
    return "/".join([*(safe_component(v) for v in folders), safe_name(last, suffix)])


def contained(root: Path, relative: str | Path, what: str = "output path") -> Path:
    """``root / relative``, resolved, if it lies strictly inside ``root`` (also resolved);
    :class:`UnsafePath` otherwise (an absolute or ``..`` path, or a symbolic link in the
    way that points elsewhere). The reason names ``what``, never the value."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"the {what} would lie outside its folder; nothing was written")
    return target


def safe_path(root: Path, *values: str, suffix: str = "", what: str = "output path") -> Path:
    """The file ``root/<safe values...><suffix>``, checked with :func:`contained`."""
    return contained(root, safe_key(*values, suffix=suffix), what)


def safe_path_below(base: Path, *values: str, suffix: str = "",
                    what: str = "output path") -> Path:
    """:func:`safe_path` for a ``base`` the caller resolved already (once for many files).

    Safe components hold no ``.``, ``..`` nor separator, so the path can only leave
    ``base`` through a symbolic link below it: each component is looked at once (one
    ``lstat``, none past the first that does not exist), and a link among them is
    resolved and checked by :func:`contained`; otherwise ``base/<key>`` is the path.
    """
    return below_resolved(base, safe_key(*values, suffix=suffix), what)


def below_resolved(base: Path, relative: str, what: str = "output path") -> Path:
    """:func:`contained` for a ``base`` the caller resolved already, at the cost of one
    ``lstat`` per existing component of ``relative`` instead of two full resolutions.

    A ``relative`` of plain segments (none empty, ``.`` or ``..``, not absolute) can only
    leave ``base`` through a symbolic link below it: a link among its components is
    resolved and checked by :func:`contained`; otherwise ``base/relative`` is the path.
    Any other ``relative`` goes to :func:`contained` as it is.
    """
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return contained(base, relative, what)
    current = str(base)
    for part in parts:
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except OSError:  # absent (or under a file): nothing below it exists either
            break
        if stat.S_ISLNK(mode):
            return contained(base, relative, what)
    return base / relative

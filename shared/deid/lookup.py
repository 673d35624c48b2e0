"""CTP lookup tables for ``@lookup``: ``KeyType/value=replacement`` lines (Java properties).

A replacement that starts with ``@`` and contains ``/`` names another key, followed at most
ten times (CTP's indirection).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.deid.java_properties import parse_properties


class LookupTable:
    """An immutable lookup table; ``sha256`` identifies its content."""

    def __init__(self, entries: dict[str, str], name: str = "", sha256: str = "") -> None:
        self._entries = entries
        self.name = name
        self.sha256 = sha256

    @classmethod
    def load(cls, path: Path) -> LookupTable:
        """Read a table file (ISO-8859-1, as Java reads properties files)."""
        data = path.read_bytes()
        entries = {key.strip(): val.strip() for _, key, val in
                   parse_properties(data.decode("latin-1"))}
        return cls(entries, path.name, hashlib.sha256(data).hexdigest())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_type: str, key: str) -> str | None:
        """The replacement for ``key_type/key``, or None on a miss."""
        found = self._entries.get(f"{key_type}/{key}")
        hops = 0
        while found is not None and found.startswith("@") and "/" in found:
            hops += 1
            if hops > 10:
                return None
            found = self._entries.get(found[1:].strip())
        return found

"""Choosing input files the way the RSNA Anonymizer does (extension list, ``[dcm]``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

DEFAULT_EXTENSIONS = ".dcm,[dcm]"


class ExtensionFilter:
    """Matches file names against comma-separated suffixes; ``*`` matches every file and
    ``[dcm]`` matches names made only of digits and periods (``1.2.840.113``, ``0001``)."""

    def __init__(self, spec: str = DEFAULT_EXTENSIONS) -> None:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if not entries:
            raise ValueError("the extension list is empty; use '*' for all files")
        self.everything = "*" in entries
        self.numeric = "[dcm]" in entries
        self.suffixes = tuple(
            e.lower() if e.startswith(".") else "." + e.lower()
            for e in entries
            if e not in ("*", "[dcm]")
        )

    def __call__(self, name: str) -> bool:
        if self.everything:
            return True
        if self.numeric and name and all(c.isdigit() or c == "." for c in name):
            return True
        return name.lower().endswith(self.suffixes) if self.suffixes else False


def collect(sources: Iterable[Path], accept: ExtensionFilter, recursive: bool) -> list[Path]:
    """Files named directly, plus matching files of named folders, sorted and unique."""
    found: set[Path] = set()
    for source in sources:
        if source.is_file():
            found.add(source)
        elif source.is_dir():
            found.update(_walk(source, accept, recursive))
        else:
            raise FileNotFoundError(f"no such file or folder: {source}")
    return sorted(found)


def _walk(folder: Path, accept: ExtensionFilter, recursive: bool) -> Iterator[Path]:
    if recursive:
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            yield from (Path(root) / n for n in names if accept(n))
    else:
        yield from (p for p in folder.iterdir() if p.is_file() and accept(p.name))

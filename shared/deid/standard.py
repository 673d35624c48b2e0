"""PS3.15 Annex E tables, loaded from the copies shipped in ``shared/deid/data``.

Table E.1-1 (Application Level Confidentiality Profile Attributes) and Table E.3.10-1
(Safe Private Attributes), DICOM PS3.15 2026d, (c) NEMA; provenance in
``shared/deid/data/PROVENANCE.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data")
TABLE_E1_1 = DATA / "ps3.15_2026d_table_E.1-1.csv"
TABLE_E3_10_1 = DATA / "ps3.15_2026d_table_E.3.10-1.csv"

# Column of E.1-1 for each option, in the order in which they take precedence when more
# than one selected option names an action for the same attribute: the retention options
# (the operator asked to keep) before the cleaning options.
OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One attribute of Table E.1-1 with its Basic Profile code and option codes."""

    tag_text: str  # as printed: "(0010,0010)", "(60xx,3000)", "(gggg,eeee) where gggg is odd"
    name: str
    basic: str
    options: dict[str, str]

    @property
    def is_pattern(self) -> bool:
        return "x" in self.tag_text.lower() or "gggg" in self.tag_text

    @property
    def tag(self) -> int:
        return int(self.tag_text[1:5] + self.tag_text[6:10], 16)

    def mask(self) -> tuple[int, int]:
        """(mask, value) matching the tags of a repeating-group row such as (60xx,3000)."""
        digits = self.tag_text[1:5] + self.tag_text[6:10]
        mask = int("".join("0" if c in "xX" else "F" for c in digits), 16)
        value = int("".join("0" if c in "xX" else c for c in digits), 16)
        return mask, value


@dataclass(frozen=True, slots=True)
class SafePrivate:
    """One row of Table E.3.10-1: a private element that carries no identity."""

    group: int
    element_low: int  # the low byte of the element number within its private block
    creator: str


@cache
def profile_rows() -> tuple[ProfileRow, ...]:
    with TABLE_E1_1.open(newline="", encoding="utf-8") as handle:
        return tuple(
            ProfileRow(
                tag_text=row["tag"],
                name=row["name"],
                basic=row["basic_profile"],
                options={c: row[c] for c in OPTION_COLUMNS if row[c]},
            )
            for row in csv.DictReader(handle)
        )


@cache
def safe_private() -> frozenset[SafePrivate]:
    rows = set()
    with TABLE_E3_10_1.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            tag = row["tag"]
            rows.add(
                SafePrivate(int(tag[1:5], 16), int(tag[8:10], 16), row["private_creator"].strip())
            )
    return frozenset(rows)

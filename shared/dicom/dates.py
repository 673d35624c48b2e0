"""Shifting DA and DT values by a whole number of days (PS3.5 6.2 value formats).

Intervals between dates of one patient are kept because every date of that patient moves
by the same offset; times of day are kept. A value that cannot be read as a date cannot be
shifted safely, so it is emptied rather than passed through.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import lru_cache

# YYYYMMDD, or the ACR-NEMA form YYYY.MM.DD still found in old files.
_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2,6}(?:\.\d{1,6})?)?([+-]\d{4})?$")


def _shift(year: int, month: int, day: int, days: int) -> date | None:
    try:
        shifted = date(year, month, day) - timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted


# The dates of one study repeat in every one of its objects: each is parsed once.
@lru_cache(maxsize=4096)
def shift_da(value: str, days: int) -> str:
    """Shift every value of a DA element by ``days`` into the past; '' if any is unreadable."""
    out = []
    for part in value.split("\\"):
        part = part.strip(" \x00")
        if not part:
            out.append("")
            continue
        match = _DA.match(part)
        shifted = (
            _shift(int(match[1]), int(match[2]), int(match[3]), days) if match else None
        )
        if shifted is None:
            return ""
        out.append(shifted.strftime("%Y%m%d"))
    return "\\".join(out)


@lru_cache(maxsize=4096)
def shift_dt(value: str, days: int) -> str:
    """Shift the date part of every value of a DT element, keeping its precision, time of
    day and UTC offset; '' if any value is unreadable."""
    out = []
    for part in value.split("\\"):
        part = part.strip(" \x00")
        if not part:
            out.append("")
            continue
        match = _DT.match(part)
        if match is None:
            return ""
        year, month, day, clock, zone = match.groups()
        # A YYYY or YYYYMM value moves as the first day of its period, at its precision.
        shifted = _shift(int(year), int(month or 1), int(day or 1), days)
        if shifted is None:
            return ""
        width = 4 + (2 if month else 0) + (2 if day else 0)
        out.append(shifted.strftime("%Y%m%d")[:width] + (clock or "") + (zone or ""))
    return "\\".join(out)

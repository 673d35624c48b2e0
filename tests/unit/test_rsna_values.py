"""Values of the RSNA Anonymizer's index workbook as Excel may have left them."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from shared.index.rsna_import import _date, _offset


@pytest.mark.parametrize(("cell", "expected"), [
    ("20190314", date(2019, 3, 14)),
    ("2019-03-14", date(2019, 3, 14)),
    ("2019.03.14", date(2019, 3, 14)),
    ("2019/03/14 00:00:00", date(2019, 3, 14)),
    (20190314, date(2019, 3, 14)),
    (20190314.0, date(2019, 3, 14)),
    (43538, date(2019, 3, 14)),  # an Excel date serial
    ("43538", date(2019, 3, 14)),
    (43538.75, date(2019, 3, 14)),  # a serial with a time of day
    (datetime(2019, 3, 14, 8, 30), date(2019, 3, 14)),
    (date(2019, 3, 14), date(2019, 3, 14)),
    (None, None),
    ("", None),
    ("  ", None),
])
def test_study_dates_in_every_form_excel_leaves(cell: object, expected: date | None) -> None:
    assert _date(cell) == expected


@pytest.mark.parametrize("cell", ["14/03/2019", "20191314", "March 14", True, -5, 10**9])
def test_what_is_no_date_is_refused(cell: object) -> None:
    with pytest.raises(ValueError):
        _date(cell)


@pytest.mark.parametrize(("cell", "expected"), [
    (-1234, -1234), (1234, 1234), (-1234.0, -1234), ("-1234", -1234), (" +12 ", 12),
    ("\u22121234", -1234), ("-1234.0", -1234), (0, 0),
])
def test_offsets_as_numbers_or_text(cell: object, expected: int) -> None:
    assert _offset(cell) == expected


@pytest.mark.parametrize(("cell", "reason"), [
    (None, "empty"), ("", "empty"), ("-12.5", "not a whole number"), (1.5, "not a whole number"),
    ("twelve", "not a whole number"), (False, "empty"),
])
def test_what_is_no_offset_is_refused_with_the_reason(cell: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _offset(cell)

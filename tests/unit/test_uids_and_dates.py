"""Keyed UIDs and date shifting."""

from __future__ import annotations

import re

from shared.dicom.dates import shift_da, shift_dt
from shared.dicom.uids import UidMapper, is_well_known

VALID_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def test_same_uid_same_replacement_in_any_mapper_with_the_same_secret() -> None:
    first, second = UidMapper(b"k" * 32), UidMapper(b"k" * 32)
    assert first("1.2.3.4") == second("1.2.3.4")
    assert first("1.2.3.4") != first("1.2.3.5")
    assert UidMapper(b"x" * 32)("1.2.3.4") != first("1.2.3.4")


def test_generated_uids_are_valid() -> None:
    mapper = UidMapper(b"secret")
    for n in range(2000):
        uid = mapper(f"1.2.826.0.1.3680043.2.{n}")
        assert len(uid) <= 64
        assert VALID_UID.match(uid), uid


def test_well_known_uids_are_kept() -> None:
    mapper = UidMapper(b"secret")
    for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.2.16.4"):
        assert is_well_known(uid)
        assert mapper(uid) == uid


def test_dates_move_into_the_past_keeping_intervals() -> None:
    assert shift_da("20190314", 10) == "20190304"
    assert shift_da("20190314\\20190315", 365) == "20180314\\20180315"
    assert shift_da("2019.03.14", 1) == "20190313"


def test_unreadable_dates_are_emptied_not_passed_through() -> None:
    assert shift_da("14/03/2019", 5) == ""
    assert shift_dt("not a date", 5) == ""


def test_datetime_keeps_time_zone_and_precision() -> None:
    assert shift_dt("20190314101523.123456+0100", 1) == "20190313101523.123456+0100"
    assert shift_dt("2019", 400) == "2017"
    assert shift_dt("201903", 1) == "201902"

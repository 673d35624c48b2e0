"""The profile follows PS3.15 E.1-1, and the table in docs/profile.md is what the engine does."""

from __future__ import annotations

from pathlib import Path

from services.cli.profile import profile_markdown
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile, code_for
from shared.deid.rules import Kind
from shared.deid.standard import profile_rows, safe_private

PROFILE_DOC = Path(__file__).resolve().parents[2] / "docs" / "profile.md"


def test_tables_are_complete() -> None:
    assert len(profile_rows()) == 657
    assert len({s.creator for s in safe_private()}) == 20


def test_profile_doc_table_is_generated_from_the_engine() -> None:
    text = PROFILE_DOC.read_text(encoding="utf-8")
    start = text.index("<!-- profile-table:start -->\n") + len("<!-- profile-table:start -->\n")
    end = text.index("<!-- profile-table:end -->")
    assert text[start:end] == profile_markdown(ProfileOptions.ricord()), (
        "docs/profile.md table is stale: regenerate it with `anon profile --markdown`"
    )


def test_retention_options_win_over_cleaning_options() -> None:
    row = next(r for r in profile_rows() if r.tag_text == "(0008,1010)")  # Station Name
    options = ProfileOptions(retain_device_identity=True, clean_descriptors=True)
    assert code_for(row, options) == row.options["retain_device_identity"]


def test_ricord_keeps_age_and_sex_and_shifts_dates() -> None:
    rules = build_profile()
    assert rules.action(0x00101010, "AS").kind is Kind.KEEP  # Patient's Age
    assert rules.action(0x00100040, "CS").kind is Kind.KEEP  # Patient's Sex
    assert rules.action(0x00080020, "DA").describe().startswith("shift")
    assert rules.action(0x00181200, "DA").describe().startswith("shift")  # not in E.1-1 rows
    assert rules.private.kind is Kind.REMOVE


def test_basic_profile_alone_removes_dates_it_lists() -> None:
    rules = build_profile(ProfileOptions())
    assert rules.action(0x00080021, "DA").kind is not Kind.KEEP  # Series Date: X/D
    assert rules.action(0x00101010, "AS").kind is Kind.REMOVE  # Patient's Age: X
    assert "DA" not in rules.by_vr


def test_full_and_modified_dates_cannot_both_be_chosen() -> None:
    import pytest

    with pytest.raises(ValueError, match="not both"):
        ProfileOptions(retain_longitudinal_full_dates=True,
                       retain_longitudinal_modified_dates=True)

"""The lines ``anon rt-batch`` prints for sets that are not done, worded as in the report."""

from __future__ import annotations

from pathlib import Path

from shared.rt import Problem
from shared.rt.batch import BatchSummary, SetResult
from shared.rt.report import console_lines, set_notice, summary_lines

MISSING = Problem("missing-instance", "1.2.3.4", "RTSTRUCT", "references CT image 1.2.3.9")
NO_DOSE = Problem("missing-object", "", "RTDOSE", "the set holds no RTDOSE")


def test_a_set_failing_its_output_check_is_named_with_the_first_output_error() -> None:
    result = SetResult(Path("/in/set_7"), status="failed", number=3, new_id="ANON003",
                       output_problems=[MISSING, NO_DOSE])
    assert set_notice(result) == (
        "failed set_7 -> ANON_003: output error [missing-instance] references CT image "
        "1.2.3.9 (2 errors)"
    )


def test_errors_come_before_output_errors_and_input_problems_do_not_count() -> None:
    result = SetResult(Path("/in/set_8"), status="failed", number=12, problems=[NO_DOSE],
                       errors=["not written: CT1.dcm: truncated"], output_problems=[MISSING])
    assert set_notice(result) == (
        "failed set_8 -> ANON_012: error not written: CT1.dcm: truncated (2 errors)"
    )


def test_a_skipped_set_is_named_with_its_first_problem() -> None:
    result = SetResult(Path("/in/set_9"), problems=[NO_DOSE, MISSING])
    assert set_notice(result) == (
        "skipped set_9: [missing-object] the set holds no RTDOSE (2 problems)"
    )


def test_console_lines_are_the_notices_then_the_summary() -> None:
    done = SetResult(Path("/in/a"), status="done", number=1, written=4)
    forced = SetResult(Path("/in/b"), status="forced", number=2, problems=[NO_DOSE])
    summary = BatchSummary([done, forced], report=Path("/out/rt_batch_report.txt"))
    assert console_lines(summary) == [
        "forced b -> ANON_002: [missing-object] the set holds no RTDOSE (1 problem)",
        *summary_lines(summary),
    ]
    assert summary_lines(summary)[-1] == "report:        /out/rt_batch_report.txt"

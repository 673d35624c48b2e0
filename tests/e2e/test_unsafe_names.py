"""A retained UID that is not a plain name becomes a digest key in the deployed pipeline
(real RabbitMQ, S3 and PostgreSQL) instead of failing into the dead-letter queue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.storage.keys import digest_name
from tests import synth
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration


def test_retained_escaping_uids_are_stored_under_digest_keys(
    tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.cli.main import main

    folder = tmp_path / "in"
    folder.mkdir()
    (ds,) = synth.make_ct_series(1)
    # UIDs the reader accepts (letters and hyphens are seen in the wild) that are no safe
    # names; UIDs with slashes are refused by the reader before any key is built.
    ds.SOPInstanceUID = "-1.2.826.0.1.3680043.9.7133.5"
    ds.SeriesInstanceUID = "-2.25.1"
    synth.write(ds, folder / "one.dcm")
    for name, value in pipeline.env.items():
        monkeypatch.setenv(name, value)
    pipeline.start("anonymizer_worker", PROFILE_OPTIONS="retain_uids")
    assert main(["import", str(folder), "--no-progress"]) == 0
    assert "sent:        1" in capsys.readouterr().out
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 1 or c["quarantined"] >= 1,
                               timeout=60)
    time.sleep(1)
    assert counts["deidentified"] == 1 and counts["quarantined"] == 0
    (key,) = pipeline.keys(pipeline.buckets.deidentified)
    assert key.split("/")[2:] == [digest_name("-2.25.1"),
                                  digest_name("-1.2.826.0.1.3680043.9.7133.5") + ".dcm"]
    assert pipeline.dead_letters() == 0

"""Configuration is validated at start with messages naming every wrong variable."""

from __future__ import annotations

import pytest

from shared.config import ConfigurationError, load_settings, require


def test_every_problem_is_listed_by_its_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCP_PORT", "70000")
    monkeypatch.setenv("SITE_ID", "12a")
    monkeypatch.setenv("PROFILE_OPTIONS", "retain_uids,keep_everything")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    for variable in ("SCP_PORT", "SITE_ID", "PROFILE_OPTIONS"):
        assert variable in message
    assert "keep_everything" in message


def test_missing_required_backends_are_named_together(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    with pytest.raises(ConfigurationError, match="DATABASE_URL, AMQP_URL, S3_ENDPOINT"):
        require(settings, "database_url", "amqp_url", "s3_endpoint")


def test_empty_values_mean_unset_as_in_env_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_PATH", "")
    monkeypatch.setenv("SITE_ID", "")
    settings = load_settings()
    assert settings.script_path is None and settings.site_id is None


def test_a_script_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_PATH", "/nonexistent/site.script")
    with pytest.raises(ConfigurationError, match=r"SCRIPT_PATH: .*no such file"):
        load_settings()


def test_services_refuse_to_start_without_their_backends(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.anonymizer_worker.app import main

    for name in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main()
    assert "missing configuration: DATABASE_URL, AMQP_URL, S3_ENDPOINT" in str(stopped.value)


def test_burned_in_annotation_and_reader_limits_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.dicom.parse import Limits
    from shared.runtime import filter_from

    assert filter_from(load_settings()).reject_identifying_pixels
    monkeypatch.setenv("ACCEPT_BURNED_IN_ANNOTATION", "true")
    monkeypatch.setenv("MAX_INFLATED_BYTES", "2048")
    monkeypatch.setenv("MAX_NESTING_DEPTH", "7")
    settings = load_settings()
    assert not filter_from(settings).reject_identifying_pixels
    limits = Limits.from_environment()
    assert (limits.max_inflated_bytes, limits.max_nesting_depth) == (2048, 7)
    assert (settings.max_inflated_bytes, settings.max_nesting_depth) == (2048, 7)
    monkeypatch.setenv("MAX_NESTING_DEPTH", "500")
    with pytest.raises(ConfigurationError, match="MAX_NESTING_DEPTH"):
        load_settings()

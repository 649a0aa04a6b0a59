"""Database passwords never reach a step's log line, failure record or raised error, and the
extract steps take the URL from ``$RECS_DB_URL`` (a Kubernetes Secret) when the parameter is
empty."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from startup_recs.core.errors import ConfigError
from startup_recs.data.appdb import mask_secrets
from startup_recs.pipeline import data_steps
from startup_recs.pipeline.step import STEP_ERROR_ENV, step

SECRET = "hunter2-Secret"
URL = f"postgresql+psycopg://recs:{SECRET}@127.0.0.1:1/app"


def test_mask_secrets_masks_every_url_in_free_text() -> None:
    text = f"cannot connect to {URL} (also 'mysql://u:pw@h/d'); plain http://host/x stays"
    out = mask_secrets(text)
    assert SECRET not in out and ":pw@" not in out
    assert "postgresql+psycopg://recs:***@127.0.0.1:1/app" in out and "http://host/x" in out


@pytest.mark.parametrize("url", [URL, f"postgresql+psycopg://recs:{SECRET}@127.0.0.1:notaport/app"])
def test_probe_step_error_never_shows_the_password(url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "errors.jsonl"
    monkeypatch.setenv(STEP_ERROR_ENV, str(record))
    with caplog.at_level(logging.INFO), pytest.raises(Exception) as info:  # noqa: B017, PT011
        data_steps.probe_source(db_url=url)
    assert SECRET not in str(info.value)
    assert "postgresql" not in str(info.value) or "recs:***@" in str(info.value)
    assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)
    assert SECRET not in caplog.text
    assert SECRET not in record.read_text() and json.loads(record.read_text().splitlines()[0])["step"]


def test_any_step_error_quoting_a_url_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    @step("leaky")
    def leaky() -> None:
        raise ConfigError(f"driver said: could not open {URL}")

    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as info:
        leaky()
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_recs_db_url_is_honoured_when_the_parameter_is_empty(tiny_db: str, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.delenv("RECS_DB_URL", raising=False)
    with pytest.raises(ConfigError, match="exactly one source"):
        data_steps.probe_source()
    monkeypatch.setenv("RECS_DB_URL", tiny_db)
    assert data_steps.probe_source().startswith("20")
    out = data_steps.extract(str(tmp_path / "snap"), watermark="w")
    assert out["rows"] > 0
    # an event log as the source wins over the environment
    with pytest.raises(ConfigError, match="does not exist"):
        data_steps.probe_source(events_uri=str(tmp_path / "missing.parquet"))

"""Every setting is documented in the README and read from its ``THREADLINE_*`` variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from threadline.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
FIELDS = [f for f in dataclasses.fields(Settings)]


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_setting_is_documented(field: dataclasses.Field[object]) -> None:
    assert f"`THREADLINE_{field.name.upper()}`" in README


def test_settings_come_from_the_environment() -> None:
    env = {
        "THREADLINE_PORT": "9000",
        "THREADLINE_WORKER_LEASE_SECONDS": "2.5",
        "THREADLINE_SUMMARIES": "false",
        "THREADLINE_DATA_DIR": "/srv/threadline",
        "THREADLINE_UPSTREAM_BASE_URL": "http://127.0.0.1:11434/v1",
        "THREADLINE_RUN_EXPIRY_SECONDS": "",  # empty means "not set"
    }
    settings = Settings.from_env(env, port=9100)
    assert settings.port == 9100  # a flag beats the environment
    assert settings.worker_lease_seconds == 2.5
    assert settings.summaries is False
    assert settings.data_dir == Path("/srv/threadline")
    assert settings.upstream_base_url == "http://127.0.0.1:11434/v1"
    assert settings.run_expiry_seconds == 600
    assert settings.effective_database_url == "sqlite+aiosqlite:////srv/threadline/threadline.db"


@pytest.mark.parametrize(
    ("name", "value"), [("THREADLINE_PORT", "eighty"), ("THREADLINE_SUMMARIES", "maybe")]
)
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})

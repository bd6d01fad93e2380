"""Settings: fail fast outside embedded mode, safe defaults inside it, environment wins."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import DEV_READ_TOKEN, DEV_WRITE_KEY, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TOUCHLINE_"):
            monkeypatch.delenv(name)


def test_missing_secrets_fail_fast_naming_every_variable() -> None:
    with pytest.raises(ValidationError) as error:
        Settings()
    message = str(error.value)
    for variable in (
        "TOUCHLINE_DATABASE_URL",
        "TOUCHLINE_KAFKA_BOOTSTRAP",
        "TOUCHLINE_WRITE_KEYS",
        "TOUCHLINE_READ_TOKENS",
        "TOUCHLINE_ADMIN_TOKEN",
    ):
        assert variable in message


def test_embedded_mode_has_local_defaults_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHLINE_EMBEDDED", "true")
    monkeypatch.setenv("TOUCHLINE_DATA_DIR", "/tmp/stack-b")
    monkeypatch.setenv("TOUCHLINE_BROKER_PORT", "19092")
    settings = Settings()
    assert settings.database_url == "sqlite:////tmp/stack-b/touchline.db"
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.write_key_sources == {DEV_WRITE_KEY: "dev"}
    assert settings.read_token_list == [DEV_READ_TOKEN]
    assert settings.max_poll_interval_ms < 10_000  # the embedded broker delays JoinGroup by it
    assert settings.data_dir == Path("/tmp/stack-b")


def test_environment_wins_over_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHLINE_EMBEDDED", "true")
    monkeypatch.setenv("TOUCHLINE_WRITE_KEYS", "web-key:website, app-key:ios")
    monkeypatch.setenv("TOUCHLINE_READ_TOKENS", "t1,t2")
    monkeypatch.setenv("TOUCHLINE_INGEST_PORT", "9000")
    settings = Settings()
    assert settings.write_key_sources == {"web-key": "website", "app-key": "ios"}
    assert settings.read_token_list == ["t1", "t2"]
    assert settings.ingest_port == 9000


@pytest.mark.parametrize("keys", ["no-source", ":source", "key:", "a:b,oops"])
def test_malformed_write_keys_are_rejected_at_start(keys: str) -> None:
    with pytest.raises(ValidationError, match="is not key:source"):
        Settings(
            database_url="sqlite://",
            kafka_bootstrap="k:9092",
            write_keys=keys,
            read_tokens="r",
            admin_token="a",
        )

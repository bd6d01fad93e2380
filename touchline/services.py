"""Every Touchline service, the one place that knows them all. Each declaration loads only when
asked, so a process imports the service it runs and no other."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.service import ServiceSpec


def _ingest() -> ServiceSpec:
    from services.ingest.service import SERVICE

    return SERVICE


def _lifecycle() -> ServiceSpec:
    from services.lifecycle.service import SERVICE

    return SERVICE


def _scoring() -> ServiceSpec:
    from services.scoring.service import SERVICE

    return SERVICE


_DECLARATIONS: dict[str, Callable[[], ServiceSpec]] = {
    "ingest": _ingest,
    "lifecycle": _lifecycle,
    "scoring": _scoring,
}
SERVICES = tuple(_DECLARATIONS)
CONSUMERS = ("lifecycle", "scoring")  # those declaring a consumer (a unit test holds them to it)


def declaration(name: str) -> ServiceSpec:
    return _DECLARATIONS[name]()

"""A service's API in-process, built from its declaration, with no consumer of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.pipeline import settings_for
from touchline.services import declaration


def api_app(service: str, bootstrap: str, database_url: str) -> FastAPI:
    settings = settings_for(bootstrap, database_url, run_consumer=False)
    return declaration(service).create_app(settings)


@contextmanager
def api_client(
    service: str, bootstrap: str, database_url: str
) -> Iterator[tuple[FastAPI, TestClient]]:
    """The app and a started TestClient on it (its lifespan runs)."""
    app = api_app(service, bootstrap, database_url)
    with TestClient(app) as client:
        yield app, client

"""Each service's API docs in a real browser (Debian's chromium driven by Playwright) with the
network closed: every request that is not to the service itself is aborted, and the pages still
list the operations (their scripts and styles come from the service, never a CDN)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, sync_playwright

from tests.e2e.conftest import Stack
from tests.support.pipeline import ready, wait_for

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Operations each service's docs must show (a path and its method).
OPERATIONS = {
    "INGEST": [("post", "/v1/track"), ("post", "/v1/b"), ("post", "/beacon/v1/batch"),
               ("get", "/v1/projects/{write_key}/settings")],
    "LIFECYCLE": [("get", "/v1/customers/{customer_id}"), ("get", "/v1/stages")],
    "SCORING": [("get", "/v1/segments"), ("get", "/v1/value/channels")],
}  # fmt: skip


def test_api_docs_load_with_the_network_closed(stack: tuple[Stack, object]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    s, _ = stack
    for name in OPERATIONS:
        wait_for(lambda n=name: ready(s.url(n)), bool, 60, f"{name} ready")  # type: ignore[misc]
    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []  # a script or style refused by the page's Content-Security-Policy

    def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.route("**/*", local_only)
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        for name, operations in OPERATIONS.items():
            page.goto(f"{s.url(name)}/docs")
            for method, path in operations:
                # Swagger UI draws each operation as a block naming its method and path.
                block = page.locator(f".opblock-{method} [data-path='{path}']")
                block.wait_for(timeout=30_000)
            assert page.locator(".opblock").count() >= len(operations)
        browser.close()
    assert not blocked, blocked  # nothing was even asked of another host
    assert not failed, failed
    assert not errors, errors

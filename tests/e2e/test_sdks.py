"""The SDK matrix: each common Segment and RudderStack SDK, unchanged at its defaults but for the
host and write key, sends a campaign page, an identify and an order to one `touchline up` stack,
and each visitor becomes one customer at first_purchase with the campaign's channel, the order's
revenue and the event times the client gave."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Response, Route, sync_playwright

from shared.settings import DEV_READ_TOKEN, DEV_WRITE_KEY
from tests.e2e.conftest import Stack, stop
from tests.support.pipeline import ready, wait_for
from touchline.broker import free_port

pytestmark = pytest.mark.e2e

SDKS = Path(__file__).parents[1] / "sdks"  # package.json pins the JavaScript SDKs
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
CAMPAIGN = {"source": "newsletter", "medium": "email"}
NPM_SDKS = ("@segment/analytics-next", "@segment/analytics-node", "@rudderstack/analytics-js")
PYTHON_SDKS = ("segment-analytics-python", "rudder-sdk-python")
CLOCK_SLACK = timedelta(seconds=60)  # skew correction moves an event time by the upload's latency
READ = {"Authorization": f"Bearer {DEV_READ_TOKEN}"}


@dataclass(frozen=True)
class Visit:
    """What one client sends: a campaign landing page, an identify, an order, days ago."""

    client: str
    user_id: str
    anonymous_id: str  # the browser SDKs make their own; see Sent.anonymous_id
    order_id: str
    revenue: float
    campaign: dict[str, str]
    url: str  # the landing page, its campaign in utm_ parameters
    page_at: datetime
    identify_at: datetime
    order_at: datetime

    @classmethod
    def of(cls, client: str, revenue: float, landing_page: str) -> Visit:
        run = uuid.uuid4().hex[:8]
        campaign = {**CAMPAIGN, "name": f"spring-{client}-{run}"}
        query = "&".join(f"utm_{k if k != 'name' else 'campaign'}={v}" for k, v in campaign.items())
        # Whole milliseconds (what JavaScript dates hold), three days back: never the receive time.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        return cls(
            client=client,
            user_id=f"{client}-{run}",
            anonymous_id=str(uuid.uuid4()),
            order_id=f"order-{run}",
            revenue=revenue,
            campaign=campaign,
            url=f"{landing_page}?{query}",
            page_at=start,
            identify_at=start + timedelta(minutes=1),
            order_at=start + timedelta(minutes=2, milliseconds=250),
        )

    @property
    def email(self) -> str:
        return f"{self.user_id}@example.com"

    def to_js(self) -> dict[str, Any]:
        """The visit as the client scripts in tests/sdks read it."""
        return {
            "userId": self.user_id,
            "anonymousId": self.anonymous_id,
            "email": self.email,
            "orderId": self.order_id,
            "revenue": self.revenue,
            "currency": "EUR",
            "campaign": self.campaign,
            "url": self.url,
            "pageAt": iso(self.page_at),
            "identifyAt": iso(self.identify_at),
            "orderAt": iso(self.order_at),
        }


@dataclass
class Sent:
    """What a client reported: the anonymous id it used, its errors, the requests it tried to
    make to other hosts (blocked)."""

    anonymous_id: str
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the stack and the website --------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `touchline up` for every client (each sends its own customer ids)."""
    s = Stack(tmp_path_factory.mktemp("sdks"))
    process = s.start_and_wait()
    try:
        for name in ("INGEST", "LIFECYCLE", "SCORING"):
            wait_for(partial(ready, s.url(name)), bool, 60, f"{name} ready")
        yield s
    finally:
        stop(process)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The website on localhost: tests/sdks' pages and the SDK bundles from its node_modules."""
    if not (SDKS / "node_modules" / ".installed").exists():
        pytest.fail(f"the JavaScript SDKs are not installed: `make test` runs npm ci in {SDKS}")
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(_Quiet, directory=str(SDKS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- one helper per kind of client ----------------------------------------------------------


def in_browser(visit: Visit, script_args: dict[str, Any], ingest: str, requests: set[str]) -> Sent:
    """Open the visit's page in Chromium with every other host blocked, call its `sendVisit`,
    wait for ingest to answer the `requests` ("POST /v1/p") the SDK should make for the three
    calls, and check it made no others."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    errors: list[str] = []
    blocked: list[str] = []
    answers: list[Response] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    def answered(response: Response) -> None:
        if response.url.startswith(ingest):
            answers.append(response)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.on("response", answered)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on(
                "requestfailed",
                lambda r: (
                    urlsplit(r.url).hostname in LOCAL_HOSTS
                    and errors.append(f"{r.method} {r.url} failed: {r.failure}")
                ),
            )
            page.goto(visit.url)
            result = page.evaluate("args => sendVisit(args)", script_args)

            def made() -> set[str]:
                page.evaluate("0")  # Playwright hands over the responses that came meanwhile
                return {f"{a.request.method} {urlsplit(a.url).path}" for a in answers}

            wait_for(made, requests.issubset, 90, f"ingest to answer {visit.client}'s requests")
            assert made() == requests, f"{visit.client} made other requests"
            errors += result["errors"] + [
                f"{a.request.method} {a.url}: {a.status} {a.text()}"
                for a in answers
                if a.status >= 300
            ]
        finally:
            browser.close()
    return Sent(result["anonymousId"], errors, blocked)


def in_subprocess(visit: Visit, command: list[str]) -> Sent:
    """Run a client script (tests/sdks) that prints {"errors": [...]}; a hang fails the test."""
    try:
        done = subprocess.run(command, cwd=SDKS, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"{visit.client} hung for {hung.timeout}s: {hung.stderr!r}") from None
    assert done.returncode == 0, f"{visit.client} exited {done.returncode}: {done.stderr}"
    errors = json.loads(done.stdout.strip().splitlines()[-1])["errors"]
    return Sent(visit.anonymous_id, errors)


def segment_browser(stack: Stack, visit: Visit, mode: str) -> Sent:
    """@segment/analytics-next: its Segment.io settings given in the page (`cdnSettings`, with
    the default or the batching delivery), or only its `cdnURL` pointing at Touchline."""
    ingest = stack.url("INGEST")
    segment_io: dict[str, Any] = {
        "apiKey": DEV_WRITE_KEY,
        "apiHost": f"{urlsplit(ingest).netloc}/v1",
        "protocol": "http",
    }
    if mode == "batching":
        segment_io["deliveryStrategy"] = {
            "strategy": "batching",
            "config": {"size": 3, "timeout": 1000},
        }
    settings: dict[str, Any] = {"writeKey": DEV_WRITE_KEY}
    requests = {"POST /v1/b"} if mode == "batching" else {"POST /v1/p", "POST /v1/i", "POST /v1/t"}
    if mode == "cdn":
        settings["cdnURL"] = ingest  # it reads its settings from ingest's settings route
        requests.add(f"GET /v1/projects/{DEV_WRITE_KEY}/settings")
    else:
        settings["cdnSettings"] = {"integrations": {"Segment.io": segment_io}}
    args = {"settings": settings, "options": {}, "visit": visit.to_js()}
    return in_browser(visit, args, ingest, requests)


def rudderstack_browser(stack: Stack, visit: Visit) -> Sent:
    """@rudderstack/analytics-js with `dataPlaneUrl` and a local source config."""
    ingest = stack.url("INGEST")
    args = {"writeKey": DEV_WRITE_KEY, "dataPlaneUrl": ingest, "visit": visit.to_js()}
    requests = {"POST /v1/page", "POST /v1/identify", "POST /v1/track"}
    return in_browser(visit, args, ingest, requests)


def segment_node(stack: Stack, visit: Visit) -> Sent:
    args = {"host": stack.url("INGEST"), "writeKey": DEV_WRITE_KEY, "visit": visit.to_js()}
    return in_subprocess(visit, ["node", "segment-node.mjs", json.dumps(args)])


def python_sdk(stack: Stack, visit: Visit, sdk: str, **options: bool) -> Sent:
    args = {"sdk": sdk, "host": stack.url("INGEST"), "writeKey": DEV_WRITE_KEY, **options}
    args["visit"] = visit.to_js()
    return in_subprocess(visit, [sys.executable, "python_visit.py", json.dumps(args)])


def mobile_events(visit: Visit, library: dict[str, str]) -> list[dict[str, Any]]:
    """The visit as the mobile SDKs' events: a screen (they have no page) opened from the
    campaign's deep link, an identify, an order. Fields as both SDKs set them: messageId,
    anonymousId, integrations, context.library and context.instanceId (analytics-kotlin
    ContextPlugin.kt; analytics-swift Context.swift), _metadata (Events.kt; Types.swift)."""
    context = {"library": library, "instanceId": str(uuid.uuid4())}
    order = {"order_id": visit.order_id, "revenue": visit.revenue, "currency": "EUR"}
    calls: list[dict[str, Any]] = [
        {
            "type": "screen",
            "name": "Landing",
            "category": "",
            "properties": {},
            "context": {**context, "campaign": visit.campaign},
            "timestamp": iso(visit.page_at),
        },
        {
            "type": "identify",
            "userId": visit.user_id,
            "traits": {"email": visit.email},
            "timestamp": iso(visit.identify_at),
        },
        {
            "type": "track",
            "userId": visit.user_id,
            "event": "Order Completed",
            "properties": order,
            "timestamp": iso(visit.order_at),
        },
    ]
    return [
        {
            "context": context,
            **call,
            "messageId": str(uuid.uuid4()),
            "anonymousId": visit.anonymous_id,
            "integrations": {},
            "_metadata": {"bundled": [], "unbundled": [], "bundledIds": []},
        }
        for call in calls
    ]


def kotlin_upload(stack: Stack, visit: Visit) -> Sent:
    """analytics-kotlin's upload as its source builds it: StorageImpl.kt writes the batch file
    `{"batch":[...],"sentAt":"...","writeKey":"..."}`; HTTPClient.kt posts it to
    https://$apiHost/b (apiHost api.segment.io/v1 by default, Constants.kt) as text/plain through
    a GZIPOutputStream (Content-Encoding: gzip), streamed with no Content-Length, User-Agent
    analytics-kotlin/<version>; EventPipeline.kt drops a blank userId from each event."""
    events = mobile_events(visit, {"name": "analytics-kotlin", "version": "1.24.1"})
    sent_at = iso(datetime.now(UTC))
    batch = ",".join(json.dumps(e, separators=(",", ":")) for e in events)
    body = f'{{"batch":[{batch}],"sentAt":"{sent_at}","writeKey":"{DEV_WRITE_KEY}"}}'
    compressed = gzip.compress(body.encode())

    def streamed() -> Iterator[bytes]:
        yield from (compressed[i : i + 512] for i in range(0, len(compressed), 512))

    headers = {
        "Content-Type": "text/plain",
        "Content-Encoding": "gzip",
        "User-Agent": "analytics-kotlin/1.24.1",
    }
    return post_batch(stack, visit, streamed(), headers)


def swift_upload(stack: Stack, visit: Visit) -> Sent:
    """analytics-swift's upload as its source builds it: DirectoryStore.swift writes the batch
    file line by line, `{ "batch": [`, the events (each after the first led by a comma), then
    `],"sentAt":"...","writeKey":"..."}`; HTTPClient.swift posts the file to https://<apiHost>/b
    (api.segment.io/v1 by default) uncompressed, Content-Type application/json; charset=utf-8,
    User-Agent analytics-ios/<version>, Accept-Encoding gzip (configuredRequest)."""
    events = mobile_events(visit, {"name": "analytics-swift", "version": "1.9.4"})
    lines = ['{ "batch": [', *(("," if i else "") + json.dumps(e) for i, e in enumerate(events))]
    lines.append(f'],"sentAt":"{iso(datetime.now(UTC))}","writeKey":"{DEV_WRITE_KEY}"}}')
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "analytics-ios/1.9.4",
        "Accept-Encoding": "gzip",
    }
    return post_batch(stack, visit, "".join(f"{line}\n" for line in lines).encode(), headers)


def post_batch(
    stack: Stack, visit: Visit, content: bytes | Iterator[bytes], headers: dict[str, str]
) -> Sent:
    """POST one mobile SDK's batch file to ingest's /v1/b as that SDK sends it."""
    response = httpx.post(
        f"{stack.url('INGEST')}/v1/b", content=content, headers=headers, timeout=30
    )
    return Sent(visit.anonymous_id, _http_errors(response))


def _http_errors(response: httpx.Response) -> list[str]:
    return [] if response.is_success else [f"{response.status_code} {response.text}"]


# --- the one assertion every client must pass -----------------------------------------------


def assert_recorded(stack: Stack, visit: Visit, sent: Sent) -> None:
    """One customer at first_purchase, reachable by its anonymous id, its first touch from the
    campaign's channel at the page's time, the order's revenue and time in lifecycle and scoring."""
    problems = sent.errors + [f"tried to reach {url} (blocked)" for url in sent.blocked]
    assert not problems, f"{visit.client} reported errors:\n" + "\n".join(problems)
    lifecycle, scoring = stack.url("LIFECYCLE"), stack.url("SCORING")

    def customer(any_id: str) -> dict[str, Any]:
        response = httpx.get(f"{lifecycle}/v1/customers/{any_id}", headers=READ, timeout=10)
        return response.json() if response.status_code == 200 else {"status": response.status_code}

    found = wait_for(
        lambda: customer(sent.anonymous_id),
        lambda c: c.get("stage") == "first_purchase" and visit.user_id in c["ids"],
        120,
        f"{visit.client}'s visitor at first_purchase, known by its user id",
    )
    assert customer(visit.user_id)["customer_id"] == found["customer_id"]  # one customer
    assert sent.anonymous_id in found["ids"]
    assert found["first_touch_channel"] == "email"  # utm_medium=email
    assert found["counters"]["orders"] == 1
    assert found["counters"]["revenue"] == visit.revenue
    # event times are the client's, three days back, not when ingest received them
    assert_near(found["first_touch_at"], visit.page_at, "first touch")
    assert_near(found["last_order_at"], visit.order_at, "order")
    journey = httpx.get(
        f"{lifecycle}/v1/customers/{sent.anonymous_id}/journey", headers=READ, timeout=10
    ).json()
    entered = {t["to_stage"]: t["at"] for t in journey["transitions"] if t["kind"] == "stage"}
    assert_near(entered["visitor"], visit.page_at, "visitor entry")
    assert_near(entered["engaged"], visit.identify_at, "engaged entry (the identify)")
    assert_near(entered["first_purchase"], visit.order_at, "first_purchase entry")

    scores = wait_for(
        lambda: httpx.get(f"{scoring}/v1/customers/{visit.user_id}/scores", headers=READ).json(),
        lambda s: (s.get("purchases") or {}).get("orders") == 1,
        60,
        f"{visit.client}'s order in scoring",
    )
    assert scores["purchases"]["revenue_total"] == visit.revenue
    assert_near(scores["purchases"]["first_purchase_at"], visit.order_at, "scored purchase")


def assert_near(recorded: str, given: datetime, what: str) -> None:
    at = datetime.fromisoformat(recorded)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    assert abs(at - given) < CLOCK_SLACK, f"{what} at {at}, the client gave {given}"


# --- the matrix -----------------------------------------------------------------------------

LANDING = "landing.html"  # the page a server-side or app client says the visit landed on
Client = Callable[[Stack, Visit], Sent]
# Each client and the page its visit lands on (the browser clients open it from the test's site).
CLIENTS: dict[str, tuple[Client, str]] = {
    "analytics-next": (partial(segment_browser, mode="default"), "segment-next.html"),
    "analytics-next-batching": (partial(segment_browser, mode="batching"), "segment-next.html"),
    "analytics-next-cdn-url": (partial(segment_browser, mode="cdn"), "segment-next.html"),
    "analytics-node": (segment_node, LANDING),
    "segment-analytics-python": (partial(python_sdk, sdk="segment", gzip=False), LANDING),
    "segment-analytics-python-gzip": (partial(python_sdk, sdk="segment", gzip=True), LANDING),
    "rudder-sdk-python": (partial(python_sdk, sdk="rudder"), LANDING),
    "rudderstack-analytics-js": (rudderstack_browser, "rudderstack.html"),
    "analytics-kotlin": (kotlin_upload, LANDING),
    "analytics-swift": (swift_upload, LANDING),
}


# What an SDK needs that ingest does not do yet: its case fails for that reason (strict xfail).
SERVER_GAPS: dict[str, str] = {}


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(c, marks=pytest.mark.xfail(reason=SERVER_GAPS[c], strict=True))
        if c in SERVER_GAPS
        else c
        for c in CLIENTS
    ],
)
def test_sdk_records_a_campaign_visit_and_an_order(stack: Stack, site: str, client: str) -> None:
    send, page = CLIENTS[client]
    revenue = 100 + 10 * list(CLIENTS).index(client) + 0.5  # distinct per client
    visit = Visit.of(client, revenue, f"{site}/{page}")
    sent = send(stack, visit)
    assert_recorded(stack, visit, sent)


def test_docs_name_the_versions_tested() -> None:
    """docs/sdks.md's "Works with" table names the versions the lock file and pyproject pin."""
    root = Path(__file__).parents[2]
    rows = {
        cells[1].split(" (")[0]: cells[2]
        for line in (root / "docs" / "sdks.md").read_text().splitlines()
        if (cells := [c.strip() for c in line.split("|")])[0] == "" and len(cells) > 3
    }
    lock = json.loads((SDKS / "package-lock.json").read_text())["packages"]
    pyproject = (root / "pyproject.toml").read_text()
    pinned = {name: lock[f"node_modules/{name}"]["version"] for name in NPM_SDKS} | {
        name: pyproject.split(f'"{name}==')[1].split('"')[0] for name in PYTHON_SDKS
    }
    assert {name: rows.get(f"`{name}`") for name in pinned} == pinned

"""`touchline demo` / `make demo`: a realistic year of multi-channel touchpoints, sent to a running
stack's ingest `/v1/import` (historical timestamps) as a Segment SDK would send them.

People arrive anonymously over the past year (web search and UTM campaigns, social referrers,
email clicks, the mobile app); many browse a few times, some sign up or identify (an identity
merge), about half of those buy. Buyers' repeat purchases and amounts are drawn from BG/NBD +
Gamma-Gamma (services.scoring.simulate): each buys at their own rate, drops out after a purchase
with their own probability and spends their own mean, so some buy again and again, some stop, and
some go quiet for months before coming back (win-backs, credited to an email campaign); a few ask
for refunds. Then it waits until both consumers have every event and asks the scoring service to
refit its model, so every number on the dashboard is non-trivial. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from services.scoring.btyd import BgNbd, GammaGamma
from services.scoring.simulate import simulate
from shared.settings import DEV_ADMIN_TOKEN, DEV_READ_TOKEN, DEV_WRITE_KEY

CHANNEL_MIX = (("web", 0.35), ("social", 0.25), ("email", 0.15), ("mobile", 0.15), ("other", 0.1))
PAGES = ("/", "/pricing", "/products/shoes", "/products/jackets", "/blog/how-to-layer", "/sale")
SOCIAL = (
    "https://www.facebook.com/",
    "https://www.instagram.com/",
    "https://t.co/x",
    "https://www.linkedin.com/",
)
CAMPAIGNS = ("spring_sale", "new_arrivals", "winback", "black_friday")
WEB_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
# Buyers' purchases (time in weeks): a repeat purchase every 6-7 weeks on average (rate CV about
# 1), 17% mean dropout per purchase, about 53 USD per order (spend CV across customers 0.7).
PURCHASES = BgNbd(r=0.9, alpha=6.0, a=0.8, b=4.0)
SPEND = GammaGamma(p=4.0, q=4.0, gamma=40.0)
WIN_BACK_DAYS = 90  # a purchase after this long a silence answers the win-back campaign


class Person:
    """One person's timeline of Segment calls."""

    def __init__(
        self,
        rng: random.Random,
        purchases: np.random.Generator,
        seed: int,
        index: int,
        start: datetime,
        end: datetime,
    ) -> None:
        self.rng = rng
        self.purchases = purchases
        self.anon = f"anon-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        self.user = f"demo-{seed}-user-{index}"
        self.channel = rng.choices([c for c, _ in CHANNEL_MIX], [w for _, w in CHANNEL_MIX])[0]
        self.end = end
        self.at = start + (end - start) * rng.random() ** 0.7  # more people recently
        self.known = False
        self.calls: list[dict[str, Any]] = []
        self.orders = 0

    def later(self, days: float) -> bool:
        self.at += timedelta(days=days, seconds=self.rng.randint(30, 3_600))
        return self.at < self.end

    def call(self, kind: str, channel: str, **fields: Any) -> None:
        ids: dict[str, Any] = {"anonymousId": self.anon}
        if self.known:
            ids["userId"] = self.user
        context: dict[str, Any] = {}
        if channel == "web":
            context = {"userAgent": WEB_AGENT, "page": {"path": self.rng.choice(PAGES)}}
        elif channel == "social":
            context = {
                "userAgent": WEB_AGENT,
                "page": {"referrer": self.rng.choice(SOCIAL), "path": "/"},
            }
        elif channel == "email":
            context = {
                "campaign": {
                    "source": "newsletter",
                    "medium": "email",
                    "name": self.rng.choice(CAMPAIGNS),
                }
            }
        elif channel == "mobile":
            context = {"app": {"name": "Touchline Shop", "version": "4.2"}, "os": {"name": "iOS"}}
        self.calls.append(
            {
                "type": kind,
                "messageId": uuid.UUID(int=self.rng.getrandbits(128)).hex,
                "timestamp": self.at.isoformat(),
                "context": context,
                **ids,
                **fields,
            }
        )

    def visit(self, channel: str) -> None:
        if channel == "mobile":
            self.call("track", channel, event="Application Opened")
            self.call("screen", channel, name="Home")
        elif channel == "email":
            self.call("track", channel, event="Email Link Clicked")
        elif channel == "other":
            self.call("track", channel, event="Product Viewed", properties={"sku": "SKU-1"})
        else:
            self.call("page", channel, name="Page")

    def order(self, channel: str, amount: float) -> None:
        self.orders += 1
        order_id = f"{self.user}-o{self.orders}"
        amount = round(max(amount, 0.5), 2)
        self.call(
            "track",
            channel,
            event="Order Completed",
            properties={"order_id": order_id, "revenue": amount, "currency": "USD"},
        )
        if self.rng.random() < 0.05 and self.later(self.rng.uniform(1, 10)):
            self.call(
                "track",
                channel,
                event="Order Refunded",
                properties={"order_id": order_id, "revenue": amount},
            )

    def live(self) -> list[dict[str, Any]]:
        rng = self.rng
        for _ in range(rng.randint(1, 4)):  # anonymous browsing
            self.visit(self.channel if rng.random() < 0.7 else rng.choice(("web", "social")))
            if not self.later(rng.expovariate(1 / 3)):
                return self.calls
        if rng.random() < 0.45:
            return self.calls  # never identifies
        self.known = True
        if rng.random() < 0.5:
            self.call("track", self.channel, event="Signed Up")
        self.call("identify", self.channel, traits={"email": f"{self.user}@example.com"})
        if rng.random() < 0.45 or not self.later(rng.expovariate(1 / 10)):
            return self.calls  # engaged, never buys
        first = self.at
        weeks = (self.end - first) / timedelta(weeks=1)
        drawn = simulate(PURCHASES, SPEND, np.zeros(1), weeks, self.purchases)
        times, amounts = drawn.times[0], drawn.amounts[0]
        self.order(self.channel, float(amounts[0]))
        for previous, week, amount in zip(times, times[1:], amounts[1:], strict=False):
            quiet = (week - previous) * 7 > WIN_BACK_DAYS
            channel = "email" if quiet else rng.choice(("web", "email", "mobile", self.channel))
            self.at = first + timedelta(weeks=float(week)) - timedelta(hours=rng.uniform(0, 6))
            self.visit(channel)  # the visit that led to the order, hours before it
            self.at = first + timedelta(weeks=float(week))
            self.order(channel, float(amount))
        self.calls.sort(
            key=lambda call: datetime.fromisoformat(call["timestamp"])
        )  # refunds may come after later orders
        return self.calls


def events(people: int, seed: int, end: datetime) -> Iterator[list[dict[str, Any]]]:
    """Each person's calls (in their time order), people in a random order."""
    rng = random.Random(seed)
    purchases = np.random.default_rng(seed)
    start = end - timedelta(days=365)
    for index in range(people):
        yield Person(rng, purchases, seed, index, start, end).live()


def consumed(service_url: str) -> int:
    """Events a service's consumer has finished (applied or duplicate), from /metrics."""
    try:
        text = httpx.get(f"{service_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return -1
    total = 0
    for line in text.splitlines():
        if line.startswith("touchline_consumer_events_total{") and 'outcome="dead' not in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def send(args: argparse.Namespace) -> int:
    end = datetime.now(UTC) - timedelta(minutes=5)
    calls = [call for person in events(args.people, args.seed, end) for call in person]
    before = {url: consumed(url) for url in (args.lifecycle_url, args.scoring_url)}
    started = time.monotonic()
    accepted = 0
    with httpx.Client(base_url=args.ingest_url, auth=(args.write_key, ""), timeout=30) as client:
        for start in range(0, len(calls), 400):
            answer = client.post("/v1/import", json={"batch": calls[start : start + 400]})
            if answer.status_code != 200:
                print(f"\ningest answered {answer.status_code}: {answer.text}", file=sys.stderr)
                return 1
            accepted += answer.json()["accepted"]
            print(f"\rsent {accepted:,}/{len(calls):,} events", end="", flush=True)
    took = time.monotonic() - started
    print(f"\rsent {accepted:,} events for {args.people:,} people in {took:.1f}s")
    return wait_and_refit(args, {url: n + accepted for url, n in before.items()})


def wait_and_refit(args: argparse.Namespace, targets: dict[str, int]) -> int:
    """Wait until the lifecycle and scoring consumers have processed everything sent, then
    refit scoring."""
    deadline = time.monotonic() + args.timeout
    for url, target in targets.items():
        while (done := consumed(url)) < target:
            print(f"\r{url} processed {max(done, 0):,}/{target:,}", end="", flush=True)
            if time.monotonic() > deadline:
                print(f"\n{url} did not catch up within {args.timeout:.0f}s")
                return 1
            time.sleep(0.5)
    print("\rlifecycle and scoring are up to date" + " " * 30)
    refit = httpx.post(
        f"{args.scoring_url}/v1/model/refit",
        headers={"Authorization": f"Bearer {args.admin_token}"},
        timeout=120,
    )
    model = refit.json() if refit.status_code == 200 else {}
    outcome = model.get("error") or ", ".join(model.get("boundary", [])) or model.get("status")
    print(f"scoring model refit: HTTP {refit.status_code} ({outcome})")
    print(f"dashboard: {args.lifecycle_url}/dashboard (read token: {args.read_token})")
    return 0


def main(argv: list[str]) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="touchline demo", description=__doc__)
    parser.add_argument("--people", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--ingest-url", default=env("TOUCHLINE_INGEST_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument(
        "--lifecycle-url", default=env("TOUCHLINE_LIFECYCLE_URL", "http://127.0.0.1:8001")
    )
    parser.add_argument(
        "--scoring-url", default=env("TOUCHLINE_SCORING_URL", "http://127.0.0.1:8002")
    )
    parser.add_argument("--write-key", default=env("TOUCHLINE_WRITE_KEY", DEV_WRITE_KEY))
    parser.add_argument("--read-token", default=env("TOUCHLINE_READ_TOKEN", DEV_READ_TOKEN))
    parser.add_argument("--admin-token", default=env("TOUCHLINE_ADMIN_TOKEN", DEV_ADMIN_TOKEN))
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the stack")
    return send(parser.parse_args(argv))

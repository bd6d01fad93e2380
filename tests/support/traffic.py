"""Seeded multi-channel traffic for replay tests: the awkward cases of real traffic, mixed."""

from __future__ import annotations

import random
import uuid

from shared.events import CHANNELS, Touchpoint
from tests.support.lifecycle import day, touch


def mixed_traffic(people: int, seed: int) -> list[Touchpoint]:
    """About ten events per person over a year, in publish order: anonymous browsing on every
    channel; identify or alias (before or after the browsing, keyed on another partition); sign-ups;
    orders on one or several days, some after a 200-day silence (reactivation); an order id sent
    twice; refunds; late events (published days after their event time); and 2% of messages
    delivered twice."""
    rng = random.Random(seed)
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    timed: list[tuple[float, Touchpoint]] = []  # (publish time in days, event)

    def add(at_day: float, **fields: object) -> None:
        fields.setdefault("channel", rng.choice(CHANNELS))
        event = touch(day(at_day), message_id=uuid.UUID(int=rng.getrandbits(128)).hex, **fields)  # type: ignore[arg-type]
        late = rng.uniform(0.5, 5) if rng.random() < 0.1 else 0.0
        timed.append((at_day + late, event))
        if rng.random() < 0.02:
            timed.append((at_day + late + rng.uniform(0, 2), event))

    for i in range(people):
        anon, user = f"{run}-a{i}", f"{run}-u{i}"
        start = rng.uniform(0, 300)
        for n in range(rng.randint(1, 4)):
            add(start + n / 24, kind="page", event=None, anon=anon)
        if rng.random() < 0.4:
            continue  # never identified
        link = start + rng.choice([-0.5, 0.2, 1.0])  # before, during or after the browsing
        if rng.random() < 0.8:
            add(link, kind="identify", event=None, user=user, anon=anon, traits={"plan": "free"})
        else:
            add(link, kind="alias", event=None, user=user, previous=anon)
        if rng.random() < 0.5:
            add(link + 0.01, event="Signed Up", user=user)
        at = link + rng.uniform(0.1, 20)
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
            order_id = uuid.UUID(int=rng.getrandbits(128)).hex
            amount = round(rng.uniform(5, 300), 2)
            order = {"order_id": order_id, "revenue": amount}
            add(at, event="Order Completed", user=user, properties=order, revenue=amount)
            if rng.random() < 0.05:  # the same order sent again (another message id)
                add(
                    at + 0.001, event="Order Completed", user=user, properties=order, revenue=amount
                )
            if rng.random() < 0.08:
                refund = {"order_id": order_id}
                add(at + 2, event="Order Refunded", user=user, properties=refund, revenue=amount)
            add(at + 0.3, event="Product Viewed", user=user)
            at += rng.choice([0.5, 3, 30, 200])
    timed.sort(key=lambda pair: pair[0])
    return [event for _, event in timed]

"""Realistic Segment events for benchmarks: page views with UTM campaigns, tracks, identifies,
orders; about 0.6-1 KB each, as analytics.js and the mobile SDKs send them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
_CAMPAIGNS = [
    {"name": "spring_sale", "source": "newsletter", "medium": "email"},
    {"name": "launch", "source": "facebook", "medium": "social"},
    {"name": "brand", "source": "google", "medium": "cpc"},
]
_PAGES = ["/", "/pricing", "/products/42", "/blog/lifecycle-marketing", "/checkout"]


def random_uuid(rng: random.Random) -> str:
    """A UUID4 drawn from `rng`, as SDKs send messageId and anonymousId. Random keys spread a
    table's inserts over its whole key range; sequential ones fill one leaf at a time, which
    made the consumers' processed-message inserts look cheaper than they are."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def event(rng: random.Random, now: datetime) -> dict[str, Any]:
    user = f"user-{rng.randrange(100_000)}"
    ts = now - timedelta(seconds=rng.randrange(3600))
    base: dict[str, Any] = {
        "messageId": random_uuid(rng),
        "anonymousId": f"anon-{rng.randrange(1_000_000)}",
        "timestamp": ts.isoformat(),
        "context": {
            "ip": "203.0.113.7",
            "locale": "en-GB",
            "userAgent": _UA,
            "library": {"name": "analytics.js", "version": "4.1.0"},
            "page": {
                "path": rng.choice(_PAGES),
                "referrer": "https://www.google.com/",
                "title": "Touchline demo shop",
                "url": "https://shop.example.com" + rng.choice(_PAGES),
            },
        },
    }
    if rng.random() < 0.3:
        base["context"]["campaign"] = rng.choice(_CAMPAIGNS)
    kind = rng.random()
    if kind < 0.5:
        base |= {"type": "page", "name": "Product", "properties": {"category": "shop"}}
    elif kind < 0.8:
        base |= {
            "type": "track",
            "userId": user,
            "event": "Product Viewed",
            "properties": {"product_id": str(rng.randrange(500)), "price": 19.99},
        }
    elif kind < 0.9:
        base |= {
            "type": "identify",
            "userId": user,
            "traits": {"plan": "free", "created_at": "2026-01-05T10:00:00Z"},
        }
    else:
        base |= {
            "type": "track",
            "userId": user,
            "event": "Order Completed",
            "properties": {
                "order_id": random_uuid(rng),
                "revenue": round(rng.uniform(5, 300), 2),
                "currency": "USD",
                "products": [{"product_id": "42", "quantity": 1, "price": 19.99}],
            },
        }
    return base


def batches(count: int, size: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` /v1/batch bodies of `size` events each, all with distinct message ids."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        {"batch": [event(rng, now) for _ in range(size)], "sentAt": now.isoformat()}
        for _ in range(count)
    ]

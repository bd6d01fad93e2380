"""The CDNOW sample as Segment `Order Completed` touchpoints with their historical timestamps."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

from shared.events import Touchpoint
from tests.support.cdnow import Transaction, transactions

CALIBRATION_END = date(1997, 9, 30)


def calibration() -> list[Transaction]:
    return [t for t in transactions() if t.day <= CALIBRATION_END]


def segment_calls(rows: list[Transaction], prefix: str) -> list[dict[str, object]]:
    """One Segment track call per transaction (order ids unique per customer and line)."""
    seen: defaultdict[str, int] = defaultdict(int)
    calls = []
    for t in rows:
        seen[t.customer] += 1
        order = f"{prefix}-{t.customer}-{seen[t.customer]}"
        calls.append(
            {
                "type": "track",
                "userId": f"{prefix}-{t.customer}",
                "event": "Order Completed",
                "messageId": order,
                "timestamp": f"{t.day.isoformat()}T12:00:00Z",
                "properties": {"order_id": order, "revenue": t.dollars, "quantity": t.cds},
            }
        )
    return calls


def touchpoints(rows: list[Transaction], prefix: str) -> list[Touchpoint]:
    received = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Touchpoint(
            message_id=str(call["messageId"]),
            type="track",
            event="Order Completed",
            user_id=str(call["userId"]),
            channel="other",
            source="cdnow",
            timestamp=datetime.fromisoformat(str(call["timestamp"])),
            received_at=received,
            properties=dict(call["properties"]),  # type: ignore[call-overload]
            revenue=float(call["properties"]["revenue"]),  # type: ignore[index]
            currency="USD",
        )
        for call in segment_calls(rows, prefix)
    ]

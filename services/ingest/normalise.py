"""Turns one raw Segment call into a normalised Touchpoint, or a reason to reject it. Pure.

Whatever it accepts, every consumer can apply: its limits (docs/ingest-limits.md) are what the
consumers and their databases can hold."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import orjson
from pydantic import ValidationError

from services.ingest.channels import ChannelClassifier
from shared.events import PURCHASE_EVENTS, EventType, Touchpoint

EVENT_TYPES = frozenset(get_args(EventType))
# Ids that SDKs and careless integrations send when they have none: never a real customer.
JUNK_IDS = frozenset(
    {
        "null", "undefined", "none", "nil", "nan", "anonymous", "guest", "unknown", "0", "-1",
        "[object object]", "true", "false", "id", "user_id", "userid", "anonymous_id",
        "distinct_id", "email", "not_authenticated", "{}", "[]",
    }
)  # fmt: skip
MAX_MESSAGE_ID = 100
MAX_EVENT_BYTES = 32 * 1024
FUTURE_LIMIT = timedelta(hours=23)
MAX_DEPTH = 32  # levels of objects and arrays in properties, traits and context
MAX_REVENUE = 1e12  # |revenue|: any realistic number of orders still sums to a finite number
MAX_ID = 255  # characters of an id or order_id (the consumers' columns)
FIRST_YEAR, LAST_YEAR = 1900, 2200  # event times: date arithmetic never leaves datetime's range
TOO_DEEP = f"(nested deeper than {MAX_DEPTH} levels: not recorded)"


class Rejected(Exception):
    """An event that cannot be accepted; `reason` is short, stable and safe to show the client."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # the HTTP status when it is the only event of a request


def event_size(raw: Any) -> int:
    """The bytes of one raw call as JSON; Rejected if it nests too deeply even to be encoded."""
    try:
        return len(orjson.dumps(raw))
    except orjson.JSONEncodeError:  # nested past orjson's limit of 254 levels
        raise Rejected(f"event nests deeper than {MAX_DEPTH} levels") from None


def deeper_than(value: Any, levels: int) -> bool:
    """Do objects and arrays nest more than `levels` deep in `value` ({} is one level)?"""
    containers = [value] if isinstance(value, dict | list) else []
    for _ in range(levels):
        children: list[Any] = []
        for container in containers:
            children.extend(container.values() if isinstance(container, dict) else container)
        containers = [c for c in children if isinstance(c, dict | list)]
        if not containers:
            return False
    return bool(containers)


def recordable(raw: Any) -> Any:
    """A rejected call as the rejected-events topic keeps it: a field nested too deeply to encode
    is replaced by a note."""
    if not deeper_than(raw, MAX_DEPTH + 1):
        return raw
    if not isinstance(raw, dict):
        return TOO_DEEP
    return {k: TOO_DEEP if deeper_than(v, MAX_DEPTH) else v for k, v in raw.items()}


def parse_time(value: Any, name: str) -> datetime | None:
    """ISO 8601 (with `Z` or an offset) to an aware datetime; naive times are taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"{name} is not a valid ISO 8601 time") from None
    if not parsed.tzinfo:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 lies before the first representable UTC time
        raise Rejected(f"{name} must lie in the years {FIRST_YEAR}-{LAST_YEAR}") from None


def event_time(
    timestamp: datetime | None,
    sent_at: datetime | None,
    received_at: datetime,
    *,
    historical: bool,
) -> datetime:
    """Segment's skew correction: timestamp = receivedAt - (sentAt - timestamp).

    A historical import keeps the given timestamp. Anything more than 23 h in the future is
    clamped to receivedAt.
    """
    if timestamp is None:
        return received_at
    corrected = timestamp
    if sent_at is not None and not historical:
        try:
            corrected = received_at - (sent_at - timestamp)
        except OverflowError:  # a device clock thousands of years off
            raise Rejected("timestamp and sentAt are too far apart to correct") from None
    if corrected - received_at > FUTURE_LIMIT:
        return received_at
    return corrected


def customer_id(value: Any, name: str) -> str | None:
    if value is None or value == "":  # RudderStack's userId of an anonymous visitor is ""
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Rejected(f"{name} must be a string")
    text = str(value).strip()
    if text.lower() in JUNK_IDS or not text:
        raise Rejected(f"{name} {text!r} is not a real id")
    if len(text) > MAX_ID:
        raise Rejected(f"{name} is longer than {MAX_ID} characters")
    if "\x00" in text:  # PostgreSQL's text cannot hold it
        raise Rejected(f"{name} must not contain NUL characters")
    return text


def _object(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(f"{name} must be an object")
    return value


def check_nesting(raw: Mapping[str, Any]) -> None:
    """Rejected if the call's properties, traits or context nest deeper than MAX_DEPTH levels."""
    try:
        encoded = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # too deep, or an integer past 64 bits: look closer
        pass
    else:
        # A call with no more objects and arrays in all than the limit allows (the call itself is
        # one) cannot break it: nearly every call, known in a fraction of walking them all.
        if encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH + 1:
            return
    for name in ("properties", "traits", "context"):
        if deeper_than(raw.get(name), MAX_DEPTH):
            raise Rejected(f"{name} nests deeper than {MAX_DEPTH} levels")


def purchase_amount(properties: Mapping[str, Any]) -> float:
    amount = properties.get("revenue", properties.get("total"))
    if amount is None:
        return 0.0
    if isinstance(amount, bool):
        raise Rejected("properties.revenue must be a number")
    try:
        value = float(amount)
    except (TypeError, ValueError):
        raise Rejected("properties.revenue must be a number") from None
    if not -MAX_REVENUE <= value <= MAX_REVENUE:  # NaN too
        raise Rejected(
            f"properties.revenue must be a number from -{MAX_REVENUE:,.0f} to {MAX_REVENUE:,.0f}"
        )
    return value  # signed as sent: the consumers decide what a sign means (a refund subtracts)


def check_order_id(properties: Mapping[str, Any]) -> None:
    """Rejected unless the order_id the consumers key orders by fits their columns."""
    value = properties.get("order_id")
    if value in (None, ""):
        return
    text = str(value)
    if len(text) > MAX_ID:
        raise Rejected(f"properties.order_id is longer than {MAX_ID} characters")
    if "\x00" in text:
        raise Rejected("properties.order_id must not contain NUL characters")


def check_times(fields: Mapping[str, Any]) -> None:
    """Rejected unless every time of the event lies in the years FIRST_YEAR..LAST_YEAR."""
    for name, what in (
        ("original_timestamp", "timestamp (or originalTimestamp)"),
        ("sent_at", "sentAt"),
        ("timestamp", "timestamp corrected by sentAt"),
    ):
        time = fields[name]
        if time is not None and not FIRST_YEAR <= time.year <= LAST_YEAR:
            raise Rejected(f"{what} must lie in the years {FIRST_YEAR}-{LAST_YEAR}")


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted call: its touchpoint as it goes on `touchpoints.v1`, and what ingest reads of
    it (the Kafka key, the channel it counts, the ids the suppression list checks)."""

    value: bytes
    customer_key: str
    channel: str
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None


def touchpoint(fields: dict[str, Any]) -> Touchpoint:
    """The pydantic Touchpoint of `Normaliser.fields`' result, or Rejected."""
    try:
        return Touchpoint(**fields)
    except ValidationError as exc:
        raise Rejected(f"invalid event: {exc.errors()[0]['msg']}") from None


def accept(fields: dict[str, Any]) -> Accepted:
    """`touchpoint(fields)`, ready to publish, without building the pydantic model: ingest's hot
    path (the JSON decodes to that same touchpoint; a unit test holds them together)."""
    if isinstance(fields["event"], str | None):
        value = Touchpoint.json_of(fields)
    else:
        # The one value `fields` passes on unchecked (`event` of an identify, group or alias):
        # the model refuses it, with the reason clients have always been given.
        value = touchpoint(fields).to_json()
    user_id, anonymous_id = fields["user_id"], fields["anonymous_id"]
    return Accepted(
        value,
        user_id or anonymous_id,
        fields["channel"],
        user_id,
        anonymous_id,
        fields["previous_id"],
    )


class Normaliser:
    def __init__(self, channels: ChannelClassifier) -> None:
        self._channels = channels

    def fields(
        self,
        raw: Any,
        *,
        kind: str | None,
        source: str,
        received_at: datetime,
        batch_sent_at: datetime | None = None,
        batch_context: Mapping[str, Any] | None = None,
        historical: bool = False,
    ) -> dict[str, Any]:
        """The Touchpoint's fields (by name) for one raw call (`kind` from the route, else its
        `type`), or Rejected; `touchpoint` or `accept` turns them into the message."""
        if not isinstance(raw, dict):
            raise Rejected("event must be a JSON object")
        kind = kind or raw.get("type")
        if not isinstance(kind, str) or kind not in EVENT_TYPES:
            raise Rejected(f"type must be one of {', '.join(sorted(EVENT_TYPES))}")
        user_id = customer_id(raw.get("userId"), "userId")
        anonymous_id = customer_id(raw.get("anonymousId"), "anonymousId")
        if user_id is None and anonymous_id is None:
            raise Rejected("userId or anonymousId is required")
        message_id = raw.get("messageId")
        if message_id is None:
            message_id = str(uuid.uuid4())
        elif not isinstance(message_id, str) or not message_id.strip():
            raise Rejected("messageId must be a non-empty string")
        elif len(message_id) >= MAX_MESSAGE_ID:
            raise Rejected(f"messageId must be shorter than {MAX_MESSAGE_ID} characters")
        elif "\x00" in message_id:
            raise Rejected("messageId must not contain NUL characters")
        event = raw.get("event")
        if kind == "track" and (not isinstance(event, str) or not event.strip()):
            raise Rejected("track calls need an event name")
        if kind in ("page", "screen"):
            event = raw.get("name") if isinstance(raw.get("name"), str) else None
        previous_id = customer_id(raw.get("previousId"), "previousId")
        if kind == "alias" and previous_id is None:
            raise Rejected("alias calls need a previousId")
        properties = _object(raw, "properties")
        context = _object(raw, "context")
        if batch_context:
            context = {**batch_context, **context}
        if context is not raw.get("context"):
            raw = {**raw, "context": context}
        traits = _object(raw, "traits")
        if kind == "identify" and isinstance(context.get("traits"), dict):
            traits = {**context["traits"], **traits}  # where RudderStack's SDKs put them
        original = parse_time(raw.get("timestamp"), "timestamp")
        if original is None:  # RudderStack's SDKs send the event time as originalTimestamp
            original = parse_time(raw.get("originalTimestamp"), "originalTimestamp")
        sent_at = parse_time(raw.get("sentAt"), "sentAt") or batch_sent_at
        revenue = currency = None
        if kind == "track" and event in PURCHASE_EVENTS:
            revenue = purchase_amount(properties)
            check_order_id(properties)
            currency = str(properties.get("currency") or "USD").upper()[:8]
        check_nesting(raw)  # with the batch's context merged in
        values = {
            "message_id": message_id,
            "type": kind,
            "event": event,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "previous_id": previous_id,
            "group_id": customer_id(raw.get("groupId"), "groupId") if kind == "group" else None,
            "channel": self._channels.classify(kind, raw),
            "source": source,
            "timestamp": event_time(original, sent_at, received_at, historical=historical),
            "original_timestamp": original,
            "sent_at": sent_at,
            "received_at": received_at,
            "properties": properties,
            "traits": traits,
            "context": context,
            "revenue": revenue,
            "currency": currency,
        }
        check_times(values)
        return values

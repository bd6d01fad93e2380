"""Versioned messages on Touchline's Kafka topics, and the topic names themselves."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The topic names, defined beside their configuration; imported from here as well.
from shared.topics import ERASURES, REJECTED, STAGE_CHANGES, TOUCHPOINTS, all_topics, dlq  # noqa: F401

if TYPE_CHECKING:
    from shared.kafka import Record

# Segment e-commerce spec: the purchase events every consumer reads.
ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
PURCHASE_EVENTS = frozenset({ORDER_COMPLETED, ORDER_REFUNDED})

Channel = Literal["web", "email", "mobile", "social", "other"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
EventType = Literal["track", "identify", "page", "screen", "group", "alias"]


def _in_utc(value: datetime | None) -> datetime | None:
    """Aware times in the standard library's UTC: comparing datetimes that share one tzinfo
    object is several times faster, and consumers compare event times constantly."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times must carry a timezone")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


_TIMES = ("timestamp", "original_timestamp", "sent_at", "received_at")  # the Touchpoint times


class Touchpoint(BaseModel):
    """A normalised touchpoint on `touchpoints.v1`, keyed by `customer_key`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    message_id: str
    type: EventType
    event: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    channel: Channel
    source: str
    timestamp: datetime  # skew-corrected event time, UTC
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    revenue: float | None = None
    currency: str | None = None

    @field_validator(*_TIMES)
    @classmethod
    def _times_in_utc(cls, value: datetime | None) -> datetime | None:
        return _in_utc(value)

    @property
    def customer_key(self) -> str:
        """The Kafka key: userId if known, else anonymousId (one is always set)."""
        key = self.user_id or self.anonymous_id
        assert key is not None
        return key

    @property
    def purchase(self) -> str | None:
        """ORDER_COMPLETED or ORDER_REFUNDED for a purchase event, else None."""
        return self.event if self.type == "track" and self.event in PURCHASE_EVENTS else None

    @property
    def order_id(self) -> str:
        """Segment's `order_id`; an order without one is identified by its message."""
        value = self.properties.get("order_id")
        return str(value) if value not in (None, "") else f"message:{self.message_id}"

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def json_of(cls, fields: Mapping[str, Any]) -> bytes:
        """What `cls(**fields).to_json()` writes, without building the model: ingest writes every
        event this way, several times faster (consumers validate what they read anyway).

        `fields` must be values the model takes as they are (what Normaliser checks): JSON values,
        aware times, every required field and no unknown one.
        """
        wire = {}
        for name, wire_name in _WIRE_NAMES.items():  # in the model's order, like to_json
            value = fields.get(name, _DEFAULTS.get(name))
            if value is not None:  # exclude_none
                wire[wire_name] = value
        for name in _TIMES:  # the validator's conversion to UTC, only where one is needed
            time = wire.get(name)
            if time is not None and time.tzinfo is not UTC:
                wire[name] = _in_utc(time)
        try:
            return orjson.dumps(wire, option=orjson.OPT_UTC_Z)  # UTC as `Z`, like pydantic
        except orjson.JSONEncodeError:  # integers past 64 bits (never from a JSON body)
            return cls(**fields).to_json()


# What json_of reads of the model, once: each field's wire name (its alias if it has one; the
# times have none) and the defaults of the optional fields.
_WIRE_NAMES = {name: info.alias or name for name, info in Touchpoint.model_fields.items()}
_DEFAULTS = {
    name: info.get_default(call_default_factory=True)
    for name, info in Touchpoint.model_fields.items()
    if not info.is_required()
}


class RejectedEvent(BaseModel):
    """An input row ingest refused, on `touchpoints.rejected.v1`, with its raw payload."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    reason: str
    raw: Any
    received_at: datetime
    source: str | None = None
    index: int | None = None
    message_id: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class DeadLetter(BaseModel):
    """A message a consumer could not process, on `<topic>.dlq`, with the error."""

    model_config = ConfigDict(frozen=True)

    consumer: str
    topic: str
    partition: int
    offset: int
    error: str
    key: str | None = None
    value: str  # the original bytes, decoded as UTF-8 with replacement

    @classmethod
    def of(cls, consumer: str, record: Record, error: str) -> DeadLetter:
        return cls(
            consumer=consumer,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error[:2000],
            key=record.key.decode("utf-8", "replace") if record.key else None,
            value=record.value.decode("utf-8", "replace"),
        )

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class StageChange(BaseModel):
    """A lifecycle transition on `lifecycle.stage-changes.v1`, keyed by customer id.

    kind: `stage` (entered `to_stage`), `reactivated` (a win-back purchase: lapsed -> active) or
    `reset` (an admin moved the customer). Published only after the transition was committed,
    at least once: consumers deduplicate by `transition_id`.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    transition_id: str
    customer_id: str
    kind: Literal["stage", "reactivated", "reset"]
    from_stage: str | None
    to_stage: str
    at: datetime
    channel: str | None  # the channel of the triggering touch (last-touch credit)
    message_id: str | None  # the triggering message
    recorded_at: datetime

    def to_json(self) -> bytes:
        return StageChange.encode(**self.model_dump(exclude={"schema_version"}))

    @staticmethod
    def encode(
        *,
        transition_id: str,
        customer_id: str,
        kind: str,
        from_stage: str | None,
        to_stage: str,
        at: datetime,
        channel: str | None,
        message_id: str | None,
        recorded_at: datetime,
    ) -> bytes:
        """The message's JSON without building the model: the lifecycle writes one per
        transition, and validating each would cost more than the rest of its row."""
        return orjson.dumps(
            {
                "schema": 1,
                "transition_id": transition_id,
                "customer_id": customer_id,
                "kind": kind,
                "from_stage": from_stage,
                "to_stage": to_stage,
                "at": at.isoformat(),
                "channel": channel,
                "message_id": message_id,
                "recorded_at": recorded_at.isoformat(),
            }
        )


_ID_HASH = re.compile("[0-9a-f]{32}")


class Erasure(BaseModel):
    """A GDPR erasure on `privacy.erasures.v1`: every service erases what it holds for these ids
    and drops their events from then on; ingest rejects new events for them.

    Published by `DELETE /v1/customers/{id}` (lifecycle: the customer and every id merged into it;
    scoring: the id given) and again by lifecycle when it finds ids merged with the requested ones.
    Applying one twice changes nothing. The topic is the suppression list, so it keeps the ids
    (nothing else about the person).
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    erasure_id: str
    ids: list[str] = Field(default_factory=list)
    # Ids known only by their hash (shared.privacy.id_hash): what the embedded stack republishes
    # from the database at start, since its broker forgets the topic. Suppressed, not erased.
    id_hashes: list[str] = Field(default_factory=list)
    requested_at: datetime
    origin: str  # the service that published it

    @model_validator(mode="after")
    def _names_someone(self) -> Self:
        if not self.ids and not self.id_hashes:
            raise ValueError("an erasure names at least one id or id hash")
        if any(not _ID_HASH.fullmatch(h) for h in self.id_hashes):
            raise ValueError("id hashes are 32 lowercase hex digits")
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

"""Normalising one Segment call: ids, message ids, event time (skew, clamp, import), revenue."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.payloads import batches
from services.ingest.channels import ChannelClassifier
from services.ingest.normalise import (
    Accepted,
    Normaliser,
    Rejected,
    accept,
    event_size,
    event_time,
    touchpoint,
)
from shared.events import Touchpoint
from shared.privacy import event_ids

RECEIVED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
normaliser = Normaliser(ChannelClassifier.from_file())


def normalise(raw: dict[str, Any], kind: str | None = "track", **options: Any) -> Any:
    return touchpoint(
        normaliser.fields(raw, kind=kind, source="web-site", received_at=RECEIVED, **options)
    )


def test_skew_correction_uses_the_client_clock_offset() -> None:
    # The client clock runs 10 minutes fast: sentAt and timestamp are both shifted by it.
    ts = normalise(
        {
            "userId": "u1",
            "event": "Signed Up",
            "timestamp": "2026-06-01T12:09:00Z",
            "sentAt": "2026-06-01T12:10:00Z",
        }
    )
    assert ts.timestamp == RECEIVED - timedelta(minutes=1)
    assert ts.original_timestamp == datetime(2026, 6, 1, 12, 9, tzinfo=UTC)
    assert ts.sent_at == datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
    assert ts.received_at == RECEIVED


def test_batch_sent_at_applies_to_items_and_offsets_are_respected() -> None:
    ts = normalise(
        {"userId": "u1", "event": "E", "timestamp": "2026-06-01T14:00:00+02:00"},
        batch_sent_at=datetime(2026, 6, 1, 12, 30, tzinfo=UTC),
    )
    assert ts.timestamp == RECEIVED - timedelta(minutes=30)


def test_without_sent_at_the_timestamp_is_kept_and_without_timestamp_received_at_is_used() -> None:
    kept = normalise({"userId": "u1", "event": "E", "timestamp": "2026-05-01T00:00:00Z"})
    assert kept.timestamp == datetime(2026, 5, 1, tzinfo=UTC)
    assert normalise({"userId": "u1", "event": "E"}).timestamp == RECEIVED


def test_far_future_is_clamped_to_received_at_but_22h_is_kept() -> None:
    future = (RECEIVED + timedelta(hours=24)).isoformat()
    near = RECEIVED + timedelta(hours=22)
    assert normalise({"userId": "u", "event": "E", "timestamp": future}).timestamp == RECEIVED
    assert normalise({"userId": "u", "event": "E", "timestamp": near.isoformat()}).timestamp == near


def test_historical_import_keeps_the_given_timestamp_despite_sent_at() -> None:
    raw = {
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "1997-01-01T00:00:00Z",
        "sentAt": "2026-06-01T12:10:00Z",
    }
    assert normalise(raw, historical=True).timestamp == datetime(1997, 1, 1, tzinfo=UTC)
    assert normalise(raw).timestamp != datetime(1997, 1, 1, tzinfo=UTC)


def test_event_time_arithmetic() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    assert event_time(
        ts, ts + timedelta(seconds=5), RECEIVED, historical=False
    ) == RECEIVED - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp must lie in the years 1900-2200"),
        ({"timestamp": "9999-12-31T23:59:59-10:00"}, "timestamp must lie in the years 1900-2200"),
        ({"sentAt": "0001-01-01T00:00:00+01:00"}, "sentAt must lie in the years 1900-2200"),
        (
            {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
            "too far apart to correct",
        ),
    ],
)
def test_times_outside_the_representable_range_are_rejected(
    times: dict[str, str], reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        normalise({"userId": "u", "event": "E", **times})


@pytest.mark.parametrize(
    "junk", ["null", "undefined", "anonymous", "0", "-1", "[object Object]", "NaN", "  ", "None", 0]
)
def test_junk_ids_are_rejected(junk: Any) -> None:
    with pytest.raises(Rejected, match="not a real id"):
        normalise({"userId": junk, "event": "E"})


def test_numeric_ids_are_strings_and_a_customer_id_is_required() -> None:
    assert normalise({"userId": 42, "event": "E"}).user_id == "42"
    with pytest.raises(Rejected, match="userId or anonymousId is required"):
        normalise({"event": "E"})


def test_message_id_is_assigned_when_missing_and_validated_when_given() -> None:
    a, b = normalise({"userId": "u", "event": "E"}), normalise({"userId": "u", "event": "E"})
    assert a.message_id and b.message_id and a.message_id != b.message_id
    assert normalise({"userId": "u", "event": "E", "messageId": "m-1"}).message_id == "m-1"
    with pytest.raises(Rejected, match="shorter than 100"):
        normalise({"userId": "u", "event": "E", "messageId": "x" * 100})
    with pytest.raises(Rejected, match="messageId"):
        normalise({"userId": "u", "event": "E", "messageId": 12})


def test_call_specific_requirements() -> None:
    with pytest.raises(Rejected, match="need an event name"):
        normalise({"userId": "u"})
    with pytest.raises(Rejected, match="need a previousId"):
        normalise({"userId": "u"}, kind="alias")
    with pytest.raises(Rejected, match="type must be one of"):
        normalise({"userId": "u", "type": "purchase"}, kind=None)
    page = normalise({"anonymousId": "a", "name": "Pricing"}, kind="page")
    assert (page.type, page.event, page.channel) == ("page", "Pricing", "web")


@pytest.mark.parametrize(
    ("properties", "revenue"),
    [({"revenue": 19.5, "total": 25}, 19.5), ({"total": "25.00"}, 25.0), ({}, 0.0)],
)
def test_order_revenue_prefers_revenue_then_total(
    properties: dict[str, Any], revenue: float
) -> None:
    ts = normalise({"userId": "u", "event": "Order Completed", "properties": properties})
    assert (ts.revenue, ts.currency) == (revenue, "USD")


def test_refund_revenue_and_currency_and_bad_amounts() -> None:
    refund = normalise(
        {"userId": "u", "event": "Order Refunded", "properties": {"revenue": 10, "currency": "eur"}}
    )
    assert (refund.revenue, refund.currency) == (10.0, "EUR")
    assert normalise({"userId": "u", "event": "Signed Up"}).revenue is None
    for bad in ("ten", True, float("nan"), float("inf"), "-inf", 1.7e308, 1e12 + 1e3, -1.01e12):
        with pytest.raises(Rejected, match="revenue must be a number"):
            normalise({"userId": "u", "event": "Order Completed", "properties": {"revenue": bad}})


@pytest.mark.parametrize("revenue", [-25.5, -1e12, 1e12, "-3"])
def test_revenue_keeps_the_sign_it_was_sent_with(revenue: Any) -> None:
    for event in ("Order Completed", "Order Refunded"):
        ts = normalise({"userId": "u", "event": event, "properties": {"revenue": revenue}})
        assert ts.revenue == float(revenue)


def nested(levels: int) -> Any:
    """An object with objects and arrays nested `levels` deep in all: {} is one level."""
    value: Any = {"leaf": 1}
    for n in range(levels - 1, 0, -1):
        value = [value] if n % 5 == 0 else {"k": value}
    return value


@pytest.mark.parametrize("field", ["properties", "traits", "context"])
def test_nesting_deeper_than_32_levels_is_rejected(field: str) -> None:
    assert normalise({"userId": "u", "event": "E", field: nested(32)}).customer_key == "u"
    for levels in (33, 220, 300):
        with pytest.raises(Rejected, match=f"{field} nests deeper than 32 levels"):
            normalise({"userId": "u", "event": "E", field: nested(levels)})
    with pytest.raises(Rejected, match="context nests deeper"):
        normalise({"userId": "u", "event": "E"}, batch_context=nested(33))


def test_event_size_rejects_what_json_cannot_encode() -> None:
    assert event_size({"a": nested(200)}) > 0
    with pytest.raises(Rejected, match="nests deeper than 32 levels"):
        event_size({"a": nested(300)})


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        ({"timestamp": "1899-12-31T23:59:59Z"}, r"timestamp \(or originalTimestamp\) must lie"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, r"timestamp \(or originalTimestamp\) must lie"),
        ({"originalTimestamp": "0001-01-01T00:00:00Z"}, r"\(or originalTimestamp\) must lie"),
        ({"timestamp": "2026-01-01T00:00:00Z", "sentAt": "2201-01-01T00:00:00Z"}, "sentAt must"),
        # The device clock is 300 years fast: the corrected time lies before 1900.
        (
            {"timestamp": "1900-01-01T00:00:00Z", "sentAt": "2200-01-01T00:00:00Z"},
            "timestamp corrected by sentAt must lie in the years 1900-2200",
        ),
    ],
)
def test_event_times_outside_1900_to_2200_are_rejected(times: dict[str, str], reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        normalise({"userId": "u", "event": "E", **times})
    if "sentAt" not in times:  # an import keeps its timestamp, uncorrected
        with pytest.raises(Rejected, match=reason):
            normalise({"userId": "u", "event": "E", **times}, historical=True)


def test_event_times_at_the_edges_of_the_range_are_kept() -> None:
    for at in ("1900-01-01T00:00:00Z", "2200-12-31T23:59:59Z"):
        ts = normalise({"userId": "u", "event": "E", "timestamp": at}, historical=True)
        assert ts.original_timestamp == datetime.fromisoformat(at)


def test_ids_and_order_ids_the_databases_cannot_hold_are_rejected() -> None:
    for field in ("userId", "anonymousId", "messageId"):
        with pytest.raises(Rejected, match=f"{field} must not contain NUL"):
            normalise({"userId": "u", "event": "E", field: "a\x00b"})
    order = {"userId": "u", "event": "Order Completed"}
    with pytest.raises(Rejected, match="order_id is longer than 255"):
        normalise({**order, "properties": {"order_id": "o" * 256}})
    with pytest.raises(Rejected, match="order_id must not contain NUL"):
        normalise({**order, "properties": {"order_id": "o\x00"}})
    assert normalise({**order, "properties": {"order_id": "o" * 255}}).order_id == "o" * 255


def test_bad_shapes_and_times_are_rejected_with_reasons() -> None:
    with pytest.raises(Rejected, match="JSON object"):
        touchpoint(normaliser.fields([1], kind="track", source="s", received_at=RECEIVED))
    with pytest.raises(Rejected, match="properties must be an object"):
        normalise({"userId": "u", "event": "E", "properties": [1]})
    with pytest.raises(Rejected, match="timestamp is not a valid ISO 8601"):
        normalise({"userId": "u", "event": "E", "timestamp": "yesterday"})


def test_batch_context_is_merged_under_the_event_context() -> None:
    ts = normalise(
        {"userId": "u", "event": "E", "context": {"app": {"name": "Shop"}}},
        batch_context={"library": {"name": "analytics-python"}, "app": {"name": "ignored"}},
    )
    assert ts.context == {"library": {"name": "analytics-python"}, "app": {"name": "Shop"}}
    assert ts.channel == "mobile"


def assert_published_as_built(
    raw: dict[str, Any], kind: str | None = "track", **options: Any
) -> Accepted:
    """What ingest publishes (`accept`, no model built) is the touchpoint the model builds: the
    same bytes, decoding to the same touchpoint, with the same key, channel and ids beside it."""
    built = normalise(raw, kind, **options)
    accepted = accept(
        normaliser.fields(raw, kind=kind, source="web-site", received_at=RECEIVED, **options)
    )
    decoded = Touchpoint.model_validate_json(accepted.value)
    if "messageId" not in raw:  # each call draws a new one
        decoded = decoded.model_copy(update={"message_id": built.message_id})
    else:
        assert accepted.value == built.to_json()
    assert decoded == built
    assert (accepted.customer_key, accepted.channel) == (built.customer_key, built.channel)
    assert event_ids(accepted) == event_ids(built)
    return accepted


def test_published_json_is_the_touchpoint_for_the_benchmark_traffic() -> None:
    for body in batches(5, 100):
        sent_at = datetime.fromisoformat(body["sentAt"])
        for raw in body["batch"]:
            assert_published_as_built(raw, None, batch_sent_at=sent_at)


@pytest.mark.parametrize(
    ("raw", "kind", "options"),
    [
        ({"userId": "u", "event": "E", "timestamp": "2026-06-01T11:00:00"}, "track", {}),  # naive
        ({"userId": "u", "event": "E", "timestamp": "2026-06-01T14:00:00+02:00"}, "track", {}),
        (
            {"userId": "u", "event": "E", "timestamp": "2026-06-01T12:09:00.5Z"},
            "track",
            {"batch_sent_at": datetime(2026, 6, 1, 12, 10, tzinfo=UTC)},
        ),
        (
            {"userId": "u", "event": "E", "timestamp": "1997-01-01T00:00:00-05:00"},
            "track",
            {"historical": True, "batch_sent_at": datetime(2026, 6, 1, tzinfo=UTC)},
        ),
        (
            {
                "userId": "u",
                "event": "E",
                "timestamp": "2026-06-01T12:09:00+01:00",
                "sentAt": "2026-06-01T12:10:00+01:00",
            },
            "track",
            {},
        ),
        ({"userId": "u", "event": "E", "timestamp": "2026-06-03T12:00:00Z"}, "track", {}),
        (
            {"userId": "u", "event": "Order Completed", "properties": {"revenue": 19, "total": 2}},
            "track",
            {},
        ),
        (
            {
                "type": "track",
                "userId": "u",
                "event": "Order Completed",
                "properties": {"total": "-2"},
            },
            None,
            {},
        ),
        (
            {
                "userId": "u",
                "event": "Order Refunded",
                "properties": {"revenue": 1, "currency": "e"},
            },
            "track",
            {},
        ),
        ({"userId": "new", "previousId": 7, "type": "alias"}, None, {}),
        ({"anonymousId": "a", "groupId": "g", "traits": {"name": "Acme"}}, "group", {}),
        ({"userId": "u", "traits": {"plan": None, "n": 1.5}, "event": "odd"}, "identify", {}),
        ({"anonymousId": "a", "name": "Home", "context": {"app": {"name": "Shop"}}}, "screen", {}),
        (
            {"userId": "u", "event": "E", "context": {"app": {"name": "Shop"}}},
            "track",
            {"batch_context": {"library": {"name": "py"}, "app": {"name": "ignored"}}},
        ),
        ({"userId": 42, "event": "E", "properties": {"big": 2**63, "s": "é\u0000"}}, "track", {}),
        ({"userId": "u", "event": "E", "properties": {"huge": 2**70}}, "track", {}),  # not JSON
    ],
)
def test_published_json_is_the_touchpoint_for_every_kind_of_call(
    raw: dict[str, Any], kind: str | None, options: dict[str, Any]
) -> None:
    assert_published_as_built({**raw, "messageId": "m-1"}, kind, **options)
    assert_published_as_built(raw, kind, **options)  # without a messageId: one is assigned


def test_values_the_model_refuses_are_refused_alike() -> None:
    raw = {"userId": "u", "event": {"not": "a name"}}
    with pytest.raises(Rejected) as built:
        normalise(raw, kind="identify")
    with pytest.raises(Rejected) as published:
        accept(normaliser.fields(raw, kind="identify", source="web-site", received_at=RECEIVED))
    assert (
        published.value.reason
        == built.value.reason
        == "invalid event: Input should be a valid string"
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = (
    "type", "userId", "anonymousId", "previousId", "messageId", "event", "name", "timestamp",
    "sentAt", "originalTimestamp", "properties", "traits", "context", "groupId",
)  # fmt: skip


@settings(max_examples=300)
@given(raw=st.dictionaries(st.sampled_from(FIELDS), JSON), kind=st.sampled_from([None, "track"]))
def test_any_json_either_normalises_or_is_rejected_with_a_reason(
    raw: dict[str, Any], kind: str | None
) -> None:
    """Whatever a client sends in a call's fields, the answer is a touchpoint or a Rejected
    with a readable reason: never another exception (a 500). What ingest publishes agrees."""
    try:
        built = normalise(raw, kind=kind)
    except Rejected as exc:
        assert exc.reason and 400 <= exc.status < 500
        with pytest.raises(Rejected) as published:
            accept(normaliser.fields(raw, kind=kind, source="web-site", received_at=RECEIVED))
        assert (published.value.reason, published.value.status) == (exc.reason, exc.status)
    else:
        assert built.customer_key
        assert_published_as_built(raw, kind)

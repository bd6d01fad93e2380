"""The minimal per-customer summary is order-free: any order of the same events, same result."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.scoring.touch_summary import summarise
from shared.events import CHANNELS, Touchpoint

START = datetime(2026, 1, 1, tzinfo=UTC)

touchpoints = st.lists(
    st.builds(
        lambda n, customer, minutes, channel: Touchpoint(
            message_id=f"m{n}",
            type="track",
            event="E",
            user_id=f"c{customer}",
            channel=channel,
            source="test",
            timestamp=START + timedelta(minutes=minutes),
            received_at=START,
        ),
        n=st.integers(0, 10**9),
        customer=st.integers(0, 3),
        minutes=st.integers(0, 20),  # a small range, so ties in time are common
        channel=st.sampled_from(CHANNELS),
    ),
    min_size=1,
    max_size=30,
)


@given(touchpoints, st.randoms())
def test_any_permutation_gives_the_same_summary(events: list[Touchpoint], rnd: object) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert summarise(shuffled) == summarise(events)


@given(touchpoints)
def test_summary_matches_a_direct_computation(events: list[Touchpoint]) -> None:
    for customer, summary in summarise(events).items():
        own = [e for e in events if e.customer_key == customer]
        latest = max((e.timestamp, e.channel) for e in own)
        earliest = min((e.timestamp, e.channel) for e in own)
        assert (summary.first_seen, summary.first_channel) == earliest
        assert (summary.last_seen, summary.last_channel) == latest
        assert summary.event_count == len(own)

"""Attribution models on small journeys, against credit computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.lifecycle.attribution import MODELS, credit
from services.lifecycle.journey import Touch

T = datetime(2026, 3, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return T + timedelta(days=days)


def path(*touches: tuple[float, str]) -> tuple[Touch, ...]:
    return tuple(Touch(at(d), channel) for d, channel in touches)


def approx(shares: dict[str, float]) -> dict[str, object]:
    return {channel: pytest.approx(value) for channel, value in shares.items()}


@pytest.mark.parametrize("model", MODELS)
def test_a_single_touch_gets_all_the_credit(model: str) -> None:
    assert credit(model, path((0, "email")), at(3)) == approx({"email": 1.0})


@pytest.mark.parametrize("model", MODELS)
def test_no_touch_no_credit(model: str) -> None:
    assert credit(model, (), at(0)) == {}


THREE = path((0, "web"), (7, "email"), (14, "social"))  # converted at day 14


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("first_touch", {"web": 1.0, "email": 0.0, "social": 0.0}),
        ("last_touch", {"web": 0.0, "email": 0.0, "social": 1.0}),
        ("linear", {"web": 1 / 3, "email": 1 / 3, "social": 1 / 3}),
        # ages 14, 7, 0 days -> weights 1/4, 1/2, 1 (7-day half-life) -> 1/7, 2/7, 4/7
        ("time_decay", {"web": 1 / 7, "email": 2 / 7, "social": 4 / 7}),
        ("position_based", {"web": 0.4, "email": 0.2, "social": 0.4}),
    ],
)
def test_three_touches(model: str, expected: dict[str, float]) -> None:
    assert credit(model, THREE, at(14)) == approx(expected)


def test_position_based_shares_the_middle_20_percent() -> None:
    four = path((0, "web"), (1, "email"), (2, "mobile"), (3, "social"))
    assert credit("position_based", four, at(3)) == approx(
        {"web": 0.4, "email": 0.1, "mobile": 0.1, "social": 0.4}
    )
    two = path((0, "web"), (1, "email"))
    assert credit("position_based", two, at(1)) == approx({"web": 0.5, "email": 0.5})


def test_touches_of_one_channel_add_up() -> None:
    shares = credit("linear", path((0, "web"), (1, "email"), (2, "web")), at(2))
    assert shares == approx({"web": 2 / 3, "email": 1 / 3})


def test_touches_at_the_same_instant_share_their_credit() -> None:
    tied = path((0, "web"), (0, "email"), (5, "social"))
    assert credit("first_touch", tied, at(5)) == approx({"web": 0.5, "email": 0.5, "social": 0})
    # 40% first + 20% middle go to the two simultaneous touches: 30% each.
    assert credit("position_based", tied, at(5)) == approx(
        {"web": 0.3, "email": 0.3, "social": 0.4}
    )
    assert credit("last_touch", path((0, "web"), (2, "email"), (2, "web")), at(2)) == approx(
        {"web": 0.5, "email": 0.5}
    )


def test_the_order_of_the_path_does_not_matter() -> None:
    assert credit("first_touch", tuple(reversed(THREE)), at(14)) == approx(
        {"web": 1.0, "email": 0.0, "social": 0.0}
    )


def test_an_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown attribution model 'data_driven'"):
        credit("data_driven", THREE, at(14))


touches = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),
        st.sampled_from(["web", "email", "mobile", "social", "other"]),
    ),
    min_size=1,
    max_size=12,
)


@given(touches, st.sampled_from(MODELS))
def test_credit_always_sums_to_one(raw: list[tuple[int, str]], model: str) -> None:
    shares = credit(model, path(*raw), at(30))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in shares.values())

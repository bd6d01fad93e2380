"""The lifecycle stage model (a TOML file users edit) and the pure rules that place a customer
in it: which stages were entered and when, their status as of a time, and their win-backs.

Everything is computed from facts kept by event time (first touch, engagement times, the
customer's distinct orders), so the same events in any order give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from shared.datafiles import read_toml, table_array

DEFAULT_MODEL = Path(__file__).with_name("stages.toml")
CONDITIONS = (
    "any_touch", "events", "identify_traits", "min_orders", "min_purchase_days", "min_revenue",
)  # fmt: skip


class StageModelError(ValueError):
    """The stage model file is not valid; the message says where and why."""


@dataclass(frozen=True)
class Stage:
    name: str
    any_touch: bool = False
    events: frozenset[str] = frozenset()
    identify_traits: frozenset[str] = frozenset()
    min_orders: int | None = None
    min_purchase_days: int | None = None
    min_revenue: float | None = None

    @property
    def engagement(self) -> bool:
        return bool(self.events or self.identify_traits)


@dataclass(frozen=True)
class StatusRules:
    at_risk_after_days: int = 90
    lapsed_after_days: int = 180
    non_buyer_lapsed_after_days: int = 30


@dataclass(frozen=True)
class StageModel:
    stages: tuple[Stage, ...]
    status: StatusRules = StatusRules()
    # Every stage's engagement conditions together (`engaging` runs for every event).
    engaging_events: frozenset[str] = field(init=False, repr=False, compare=False)
    engaging_traits: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        events = frozenset().union(*(s.events for s in self.stages))
        traits = frozenset().union(*(s.identify_traits for s in self.stages))
        object.__setattr__(self, "engaging_events", events)
        object.__setattr__(self, "engaging_traits", traits)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @classmethod
    def from_file(cls, path: Path = DEFAULT_MODEL) -> StageModel:
        return cls.parse(read_toml(path, "stage model", StageModelError), str(path))

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str = "stages") -> StageModel:
        items = table_array(data, "stage", source, StageModelError)
        stages = [_stage(item, f"{source}: stage {n}") for n, item in enumerate(items, 1)]
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise StageModelError(f"{source}: stage names must be unique, got {names}")
        if not stages[0].any_touch:
            raise StageModelError(
                f"{source}: the first stage ({names[0]!r}) needs any_touch = true"
            )
        return cls(tuple(stages), _status(data.get("status", {}), f"{source}: [status]"))

    def engaging(self, event: str | None, traits: Mapping[str, Any]) -> bool:
        """Does this call meet some stage's engagement condition (event name or trait)?"""
        if event is not None and event in self.engaging_events:
            return True
        return any(traits.get(t) not in (None, "") for t in self.engaging_traits)


def _stage(item: Any, where: str) -> Stage:
    if not isinstance(item, dict):
        raise StageModelError(f"{where}: must be a table")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StageModelError(f"{where}: needs a `name`")
    where = f"{where} ({name!r})"
    unknown = set(item) - {"name", *CONDITIONS}
    if unknown:
        raise StageModelError(f"{where}: unknown keys {sorted(unknown)}; known: {list(CONDITIONS)}")
    if not set(item) & set(CONDITIONS):
        raise StageModelError(f"{where}: needs at least one condition of {list(CONDITIONS)}")
    values: dict[str, Any] = {"name": name}
    if "any_touch" in item:
        if item["any_touch"] is not True:
            raise StageModelError(f"{where}: any_touch can only be true")
        values["any_touch"] = True
    for key in ("events", "identify_traits"):
        if key in item:
            if not isinstance(item[key], list) or not all(isinstance(v, str) for v in item[key]):
                raise StageModelError(f"{where}: `{key}` must be a list of strings")
            values[key] = frozenset(item[key])
    for key in ("min_orders", "min_purchase_days"):
        if key in item:
            if not isinstance(item[key], int) or isinstance(item[key], bool) or item[key] < 1:
                raise StageModelError(f"{where}: `{key}` must be a whole number >= 1")
            values[key] = item[key]
    if "min_revenue" in item:
        value = item["min_revenue"]
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise StageModelError(f"{where}: `min_revenue` must be a number > 0")
        values["min_revenue"] = float(value)
    return Stage(**values)


def _status(item: Any, where: str) -> StatusRules:
    if not isinstance(item, dict):
        raise StageModelError(f"{where}: must be a table")
    values = {}
    for key in StatusRules.__dataclass_fields__:
        if key in item:
            if not isinstance(item[key], int) or isinstance(item[key], bool) or item[key] < 1:
                raise StageModelError(f"{where}: `{key}` must be a whole number of days >= 1")
            values[key] = item[key]
    unknown = set(item) - set(StatusRules.__dataclass_fields__)
    if unknown:
        raise StageModelError(f"{where}: unknown keys {sorted(unknown)}")
    rules = StatusRules(**values)
    if rules.lapsed_after_days <= rules.at_risk_after_days:
        raise StageModelError(f"{where}: lapsed_after_days must exceed at_risk_after_days")
    return rules


class Mark(NamedTuple):
    """The event behind a fact: when (event time), which message, which channel.

    Ordered by time, then message id, so ties between events resolve the same way every time (a
    named tuple: compared in C, and facts compare marks many times per event)."""

    at: datetime
    message_id: str
    channel: str


@dataclass(frozen=True)
class Order:
    order_id: str
    mark: Mark
    amount: float


@dataclass(frozen=True)
class Refund:
    mark: Mark
    amount: float


@dataclass(frozen=True)
class Reset:
    """An admin put the customer in `stage` at `at`; rules apply again only to later events."""

    stage: str
    at: datetime


@dataclass(frozen=True)
class Facts:
    """What the stage rules read about one customer, all by event time and order-free: the same
    events in any order, or repeated, give equal facts."""

    first_touch: Mark | None = None
    last_touch_at: datetime | None = None
    engaged: Mark | None = None  # earliest engaging call (after the reset, if any)
    orders: tuple[Order, ...] = field(default=())  # distinct by order_id, in time order
    refunds: tuple[Refund, ...] = field(default=())  # distinct by message id, in time order
    reset: Reset | None = None

    def touched(self, mark: Mark, engaging: bool = False) -> Facts:
        """These facts after a touchpoint (engaging: it meets an engagement condition)."""
        engaged = self.engaged
        if engaging and (self.reset is None or mark.at > self.reset.at):
            engaged = _earliest(engaged, mark)
        last = mark.at if self.last_touch_at is None else max(self.last_touch_at, mark.at)
        first = _earliest(self.first_touch, mark)
        if (first, last, engaged) == (self.first_touch, self.last_touch_at, self.engaged):
            return self
        # Not dataclasses.replace (nor in `ordered`, `refunded`): this runs for every event, and
        # replace costs several times more.
        return Facts(first, last, engaged, self.orders, self.refunds, self.reset)

    def ordered(self, order: Order) -> Facts:
        """These facts after an order (also a touch). The same order_id twice is one order: the
        earliest message for it wins, whatever the arrival order."""
        t = self.touched(order.mark)
        same = [o for o in self.orders if o.order_id == order.order_id]
        if same and same[0].mark <= order.mark:
            return t
        others = [o for o in self.orders if o.order_id != order.order_id]
        orders = tuple(sorted([*others, order], key=_mark))
        return Facts(t.first_touch, t.last_touch_at, t.engaged, orders, t.refunds, t.reset)

    def refunded(self, refund: Refund) -> Facts:
        """These facts after a refund (also a touch); the same message twice is one refund."""
        t = self.touched(refund.mark)
        if any(r.mark.message_id == refund.mark.message_id for r in self.refunds):
            return t
        refunds = tuple(sorted([*self.refunds, refund], key=_mark))
        return Facts(t.first_touch, t.last_touch_at, t.engaged, t.orders, refunds, t.reset)

    def merged(self, other: Facts) -> Facts:
        """One customer's facts from two profiles' (identity merge); order-free as well."""
        result = self
        if other.reset is not None and (result.reset is None or other.reset.at > result.reset.at):
            result = replace(result, reset=other.reset)
        if other.first_touch is not None:
            result = result.touched(other.first_touch)
        if other.engaged is not None:
            result = result.touched(other.engaged, engaging=True)
        if other.last_touch_at is not None and result.last_touch_at is not None:
            result = replace(result, last_touch_at=max(result.last_touch_at, other.last_touch_at))
        for order in other.orders:
            result = result.ordered(order)
        for refund in other.refunds:
            result = result.refunded(refund)
        return result

    @property
    def revenue(self) -> float:
        """Net revenue: orders less refunds."""
        return sum(o.amount for o in self.orders) - sum(r.amount for r in self.refunds)

    @property
    def last_order_at(self) -> datetime | None:
        return max((o.mark.at for o in self.orders), default=None)


def _mark(fact: Order | Refund) -> Mark:
    return fact.mark


def _earliest(current: Mark | None, mark: Mark) -> Mark:
    return mark if current is None else min(current, mark)


def entry_marks(model: StageModel, facts: Facts) -> list[Mark | None]:
    """The event that entered each stage (None: not yet), forward-only with pass-through.

    After a reset, stages up to the reset one are not re-entered, and later stages count only
    events after the reset."""
    floor, since = -1, None
    if facts.reset is not None and facts.reset.stage in model.names:
        floor, since = model.names.index(facts.reset.stage), facts.reset.at
    orders = [o for o in facts.orders if since is None or o.mark.at > since]  # sorted by time
    refunds = [r for r in facts.refunds if since is None or r.mark.at > since]
    own = [
        _condition_met(stage, facts, orders, refunds) if i > floor else None
        for i, stage in enumerate(model.stages)
    ]
    entered: list[Mark | None] = [None] * len(own)
    later: Mark | None = None
    for i in range(len(own) - 1, floor, -1):  # reaching a stage passes through every earlier one
        marks = [m for m in (own[i], later) if m is not None]
        entered[i] = min(marks) if marks else None
        later = entered[i]
    return entered


def _condition_met(
    stage: Stage, facts: Facts, orders: Sequence[Order], refunds: Sequence[Refund]
) -> Mark | None:
    marks: list[Mark] = []
    first = facts.first_touch
    if stage.any_touch and first and (facts.reset is None or first.at > facts.reset.at):
        marks.append(first)
    if stage.engagement and facts.engaged is not None:
        marks.append(facts.engaged)
    if stage.min_orders is not None and len(orders) >= stage.min_orders:
        marks.append(orders[stage.min_orders - 1].mark)
    if stage.min_purchase_days is not None:
        days: set[object] = set()
        for order in orders:
            days.add(order.mark.at.date())
            if len(days) == stage.min_purchase_days:
                marks.append(order.mark)
                break
    if stage.min_revenue is not None:
        # Net revenue over time: a refund after the threshold was crossed does not undo it.
        moves = sorted(
            [(o.mark, o.amount) for o in orders] + [(r.mark, -r.amount) for r in refunds]
        )
        total = 0.0
        for mark, amount in moves:
            total += amount
            if total >= stage.min_revenue - 1e-9:
                marks.append(mark)
                break
    return min(marks) if marks else None


def current_stage(model: StageModel, facts: Facts) -> tuple[str, datetime] | None:
    """The furthest stage entered and when (the reset stage if nothing was entered since)."""
    result = None
    if facts.reset is not None:
        result = (facts.reset.stage, facts.reset.at)
    for stage, mark in zip(model.stages, entry_marks(model, facts), strict=True):
        if mark is not None:
            result = (stage.name, mark.at)
    return result


def status(
    rules: StatusRules,
    last_purchase_at: datetime | None,
    last_touch_at: datetime | None,
    as_of: datetime,
) -> str:
    """active / at_risk / lapsed as of `as_of`, given the last purchase and the last touch at or
    before it: buyers by days since their last purchase, everyone else by days since a touch."""
    if last_purchase_at is not None:
        idle = as_of - last_purchase_at
        if idle > timedelta(days=rules.lapsed_after_days):
            return "lapsed"
        return "at_risk" if idle > timedelta(days=rules.at_risk_after_days) else "active"
    if last_touch_at is None:
        return "lapsed"
    idle = as_of - last_touch_at
    return "lapsed" if idle > timedelta(days=rules.non_buyer_lapsed_after_days) else "active"


def reactivations(model: StageModel, facts: Facts) -> list[Mark]:
    """Win-backs: orders placed after more than `lapsed_after_days` without one."""
    orders = [o.mark for o in facts.orders]
    gap = timedelta(days=model.status.lapsed_after_days)
    return [later for earlier, later in pairwise(orders) if later.at - earlier.at > gap]

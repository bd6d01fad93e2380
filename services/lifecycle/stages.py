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
from typing import Any

from shared.datafiles import read_toml

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

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @classmethod
    def from_file(cls, path: Path = DEFAULT_MODEL) -> StageModel:
        return cls.parse(read_toml(path, "stage model", StageModelError), str(path))

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str = "stages") -> StageModel:
        items = data.get("stage")
        if not isinstance(items, list) or not items:
            raise StageModelError(f"{source}: expected one or more [[stage]] tables")
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
        for stage in self.stages:
            if event is not None and event in stage.events:
                return True
            if any(traits.get(t) not in (None, "") for t in stage.identify_traits):
                return True
        return False


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


@dataclass(frozen=True)
class Order:
    order_id: str
    at: datetime
    net: float


@dataclass(frozen=True)
class Facts:
    """What the stage rules read about one customer, all by event time."""

    first_touch_at: datetime | None = None
    last_touch_at: datetime | None = None
    engaged_at: datetime | None = None  # earliest engaging call
    orders: tuple[Order, ...] = field(default=())  # distinct orders, any order

    def touched(self, at: datetime, engaging: bool = False) -> Facts:
        """These facts after a touchpoint at `at` (engaging: it meets an engagement condition)."""
        return replace(
            self,
            first_touch_at=_earliest(self.first_touch_at, at),
            last_touch_at=at if self.last_touch_at is None else max(self.last_touch_at, at),
            engaged_at=_earliest(self.engaged_at, at) if engaging else self.engaged_at,
        )

    def ordered(self, order: Order) -> Facts:
        """These facts after an order; the same order_id again changes nothing."""
        if any(o.order_id == order.order_id for o in self.orders):
            return self
        return replace(self.touched(order.at), orders=(*self.orders, order))


def _earliest(current: datetime | None, at: datetime) -> datetime:
    return at if current is None else min(current, at)


def entry_times(model: StageModel, facts: Facts) -> list[datetime | None]:
    """When each stage was entered (None: not yet), forward-only with pass-through."""
    orders = sorted(facts.orders, key=lambda o: o.at)
    own = [_condition_met_at(stage, facts, orders) for stage in model.stages]
    entered: list[datetime | None] = [None] * len(own)
    later: datetime | None = None
    for i in range(len(own) - 1, -1, -1):  # reaching a stage passes through every earlier one
        times = [t for t in (own[i], later) if t is not None]
        entered[i] = min(times) if times else None
        later = entered[i]
    return entered


def _condition_met_at(stage: Stage, facts: Facts, orders: Sequence[Order]) -> datetime | None:
    times: list[datetime] = []
    if stage.any_touch and facts.first_touch_at is not None:
        times.append(facts.first_touch_at)
    if stage.engagement and facts.engaged_at is not None:
        times.append(facts.engaged_at)
    if stage.min_orders is not None and len(orders) >= stage.min_orders:
        times.append(orders[stage.min_orders - 1].at)
    if stage.min_purchase_days is not None:
        days: set[object] = set()
        for order in orders:
            days.add(order.at.date())
            if len(days) == stage.min_purchase_days:
                times.append(order.at)
                break
    if stage.min_revenue is not None:
        total = 0.0
        for order in orders:
            total += order.net
            if total >= stage.min_revenue:
                times.append(order.at)
                break
    return min(times) if times else None


def current_stage(
    model: StageModel, facts: Facts, as_of: datetime | None = None
) -> tuple[str, datetime] | None:
    """The furthest stage entered by `as_of` (default: ever) and when."""
    result = None
    for stage, at in zip(model.stages, entry_times(model, facts), strict=True):
        if at is not None and (as_of is None or at <= as_of):
            result = (stage.name, at)
    return result


def status(model: StageModel, facts: Facts, as_of: datetime) -> str:
    """active / at_risk / lapsed as of `as_of`, from the last purchase, else the last touch.

    Non-buyers keep only their first and last touch: an `as_of` between the two counts as
    active (a touch is known to follow it).
    """
    rules = model.status
    purchases = [o.at for o in facts.orders if o.at <= as_of]
    if purchases:
        idle = as_of - max(purchases)
        if idle > timedelta(days=rules.lapsed_after_days):
            return "lapsed"
        return "at_risk" if idle > timedelta(days=rules.at_risk_after_days) else "active"
    if facts.first_touch_at is None or facts.first_touch_at > as_of:
        return "lapsed"
    last = facts.last_touch_at or facts.first_touch_at
    idle = as_of - min(last, as_of)
    return "lapsed" if idle > timedelta(days=rules.non_buyer_lapsed_after_days) else "active"


def reactivations(model: StageModel, facts: Facts) -> list[datetime]:
    """Win-backs: purchases made after more than `lapsed_after_days` without one."""
    times = sorted(o.at for o in facts.orders)
    gap = timedelta(days=model.status.lapsed_after_days)
    return [later for earlier, later in pairwise(times) if later - earlier > gap]

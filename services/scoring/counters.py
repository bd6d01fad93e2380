"""Per-customer purchase counters, updated in O(1) per event and independent of event order.

State is three kinds of small rows (so it persists as plain tables):
- `Order`: one per (customer, order_id): completed amount and day, refunds received so far;
- `Day`: one per (customer, purchase day): net amount and orders that day;
- `Counters`: first/last purchase time, orders, net revenue, distinct purchase days and the net
  amount of the first purchase day (repeat-purchase spend = revenue - first-day amount).
An order counts once however often it is sent; a refund that arrives before its order is kept on
the order and netted when the order arrives, so any order of the same events gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

WEEK_DAYS = 7.0


@dataclass
class Order:
    completed_at: datetime | None = None
    amount: float = 0.0
    refunded: float = 0.0

    @property
    def day(self) -> date | None:
        return self.completed_at.date() if self.completed_at else None


@dataclass
class Day:
    net: float = 0.0
    orders: int = 0


@dataclass
class Counters:
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    order_count: int = 0
    revenue_total: float = 0.0
    distinct_days: int = 0
    first_day_net: float = 0.0

    def summary(self, observation_end: date) -> BtydSummary | None:
        """x, t_x, T (weeks) and mean repeat spend as of `observation_end`; None for non-buyers."""
        if self.first_purchase_at is None or self.last_purchase_at is None:
            return None
        first = self.first_purchase_at.date()
        x = self.distinct_days - 1
        return BtydSummary(
            x=x,
            t_x=(self.last_purchase_at.date() - first).days / WEEK_DAYS,
            T=max((observation_end - first).days, 0) / WEEK_DAYS,
            mean_repeat_spend=(self.revenue_total - self.first_day_net) / x if x > 0 else 0.0,
        )


@dataclass(frozen=True)
class BtydSummary:
    x: int
    t_x: float
    T: float
    mean_repeat_spend: float


class PurchaseBook:
    """The slice of state one batch touches: load the rows, apply events, save the rows."""

    def __init__(
        self,
        counters: dict[str, Counters],
        orders: dict[tuple[str, str], Order],
        days: dict[tuple[str, date], Day],
    ) -> None:
        self.counters = counters
        self.orders = orders
        self.days = days

    def complete(self, customer: str, order_id: str, at: datetime, amount: float) -> None:
        order = self.orders.setdefault((customer, order_id), Order())
        if order.completed_at is not None:
            return  # the same order again: one order
        order.completed_at, order.amount = at, amount
        net = amount - order.refunded
        day = self.days.setdefault((customer, at.date()), Day())
        day.net += net
        day.orders += 1
        counters = self.counters.setdefault(customer, Counters())
        counters.order_count += 1
        counters.revenue_total += net
        counters.distinct_days += day.orders == 1
        if counters.first_purchase_at is None or at < counters.first_purchase_at:
            counters.first_purchase_at = at
        if counters.last_purchase_at is None or at > counters.last_purchase_at:
            counters.last_purchase_at = at
        if at.date() == counters.first_purchase_at.date():
            counters.first_day_net = day.net

    def refund(self, customer: str, order_id: str, amount: float) -> None:
        order = self.orders.setdefault((customer, order_id), Order())
        order.refunded += amount
        if order.completed_at is None:
            return  # netted when the order arrives
        day = self.days[(customer, order.completed_at.date())]
        day.net -= amount
        counters = self.counters[customer]
        counters.revenue_total -= amount
        if (
            counters.first_purchase_at
            and order.completed_at.date() == counters.first_purchase_at.date()
        ):
            counters.first_day_net = day.net

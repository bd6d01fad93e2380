"""The lifecycle engine: folds a batch of touchpoints into customer profiles and journeys inside
the consumer loop's transaction (and performs the audited admin reset the same way).

Per batch: lock and resolve the batch's ids -> load the profiles they name -> merge anonymous
profiles into known ones -> apply every event to its customer's facts -> for customers whose stage
facts changed, derive the transitions the facts imply and make the stored journey match -> write.
Most events (a page view of a known customer) only move counters: no orders or journey loaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from services.lifecycle import repository
from services.lifecycle.attribution import credits
from services.lifecycle.journey import (
    RESET,
    STAGE,
    Changes,
    Path,
    Stored,
    Touch,
    Transition,
    decode_path,
    implied,
    reconcile,
    touch_path,
)
from services.lifecycle.repository import NewTransition, Profile
from services.lifecycle.stages import (
    DEFAULT_MODEL,
    Facts,
    Mark,
    Order,
    Refund,
    Reset,
    StageModel,
    current_stage,
)
from shared.events import ORDER_COMPLETED, ORDER_REFUNDED, Touchpoint
from shared.settings import Settings


class UnknownCustomer(LookupError):
    pass


def build_engine(settings: Settings) -> LifecycleEngine:
    """The engine the settings describe; a bad stage model file raises StageModelError here."""
    model = StageModel.from_file(settings.stage_model or DEFAULT_MODEL)
    return LifecycleEngine(
        model,
        lookback=timedelta(days=settings.attribution_lookback_days),
        path_limit=settings.touch_path_limit,
    )


class LifecycleEngine:
    def __init__(self, model: StageModel, *, lookback: timedelta, path_limit: int) -> None:
        self.model = model
        self.lookback = lookback
        self.path_limit = path_limit

    def apply(self, session: Session, events: Sequence[Touchpoint]) -> None:
        """The consumer loop's handler."""
        if not events:
            return
        now = repository.utcnow()
        graph, read = repository.lock_ids(
            session, {i for e in events for i in (e.user_id, e.anonymous_id, e.previous_id) if i}
        )
        owners = [graph.resolve(e.user_id, e.anonymous_id, e.previous_id) for e in events]
        owners = [graph.final(o) for o in owners]
        merged = {into for _, into in graph.merges}
        profiles = repository.load_profiles(
            session, set(owners) | {absorbed for absorbed, _ in graph.merges}, read=read
        )
        known_before = {c: p.known for c, p in profiles.items()}
        needs_journey = set(merged) | {a for a, _ in graph.merges}
        by_owner: dict[str, list[Touchpoint]] = defaultdict(list)
        for event, owner in zip(events, owners, strict=True):
            by_owner[owner].append(event)
        for owner, own in by_owner.items():
            profile = profiles.get(owner)
            if profile is None or self._moves_stage_facts(profile, own):
                needs_journey.add(owner)
        repository.complete_profiles(
            session, [p for c, p in profiles.items() if c in needs_journey]
        )

        dirty_orders: set[tuple[str, str]] = set()
        moves = []
        for absorbed, into in graph.merges:
            source = profiles.pop(absorbed, None)
            target = profiles.setdefault(into, Profile(into, True, Facts()))
            if source is not None:
                target.facts = target.facts.merged(source.facts)
                target.event_count += source.event_count
                moves.append((absorbed, into))
        repository.move_customers(session, moves)
        repository.link_ids(session, {i: graph.customer_of[i] for i in graph.changed})

        touches: list[tuple[str, Mark]] = []
        refunds: list[tuple[str, Refund]] = []
        for event, owner in zip(events, owners, strict=True):
            profile = profiles.setdefault(owner, Profile(owner, owner in graph.known, Facts()))
            mark = Mark(event.timestamp, event.message_id, event.channel)
            profile.facts = profile.facts.touched(mark, self._engaging(event))
            profile.event_count += 1
            touches.append((owner, mark))
            if event.purchase == ORDER_COMPLETED:
                order = Order(event.order_id, mark, event.revenue or 0.0)
                profile.facts = profile.facts.ordered(order)
                dirty_orders.add((owner, order.order_id))
            elif event.purchase == ORDER_REFUNDED:
                # A refund subtracts, whether sent positive (Segment's spec) or negative.
                refund = Refund(mark, abs(event.revenue or 0.0))
                profile.facts = profile.facts.refunded(refund)
                refunds.append((owner, refund))
        for profile in profiles.values():
            profile.known = profile.known or profile.customer_id in graph.known
        repository.add_touches(session, touches)

        touched_at: dict[str, list[datetime]] = defaultdict(list)
        for owner, mark in touches:
            touched_at[owner].append(mark.at)
        self._update_journeys(
            session, [profiles[c] for c in needs_journey if c in profiles], touched_at, merged, now
        )
        touched_only = {
            c
            for c, p in profiles.items()
            if p.stored and c not in needs_journey and p.known == known_before.get(c)
        }
        repository.save_touched(session, [profiles[c] for c in touched_only], now)
        repository.save_profiles(
            session, [p for c, p in profiles.items() if c not in touched_only], now
        )
        repository.save_orders(
            session,
            [
                (c, o)
                for c, p in profiles.items()
                for o in p.facts.orders
                if c in merged or (c, o.order_id) in dirty_orders
            ],
        )
        repository.save_refunds(session, refunds)

    def reset(self, session: Session, any_id: str, stage: str, note: str | None) -> Profile:
        """Put a customer in `stage` now (an audited `reset` transition); rules then apply again to
        later events only. Raises UnknownCustomer, or ValueError for a stage not in the model."""
        if stage not in self.model.names:
            raise ValueError(f"unknown stage {stage!r}; the model has {self.model.names}")
        if not repository.claim(session, any_id):
            raise UnknownCustomer(any_id)
        graph, read = repository.lock_ids(session, {any_id})
        customer = graph.customer_of[any_id]
        profile = repository.load_profiles(session, [customer], read=read)[customer]
        repository.complete_profiles(session, [profile])
        now = repository.utcnow()
        reset = Transition(RESET, profile.stage, stage, Mark(now, "", ""))
        repository.add_transitions(session, [NewTransition(customer, reset, (), note)], now)
        profile.facts = replace(profile.facts, reset=Reset(stage, now), engaged=None)
        self._update_journeys(session, [profile], {}, set(), now, rewrite_funnel=True)
        repository.save_profiles(session, [profile], now)
        return profile

    def _engaging(self, event: Touchpoint) -> bool:
        if event.type == "track":
            return self.model.engaging(event.event, {})
        if event.type == "identify":
            return self.model.engaging(None, event.traits)
        return False

    def _moves_stage_facts(self, profile: Profile, events: Sequence[Touchpoint]) -> bool:
        """Could these events change the customer's stage entries or a stored touch path?"""
        facts, last = profile.facts, profile.last_transition_at
        for event in events:
            mark = Mark(event.timestamp, event.message_id, event.channel)
            if event.purchase or facts.first_touch is None or mark < facts.first_touch:
                return True
            after_reset = facts.reset is None or mark.at > facts.reset.at
            if (
                self._engaging(event)
                and after_reset
                and (not facts.engaged or mark < facts.engaged)
            ):
                return True
            if last is not None and mark.at <= last:
                return True  # a late touch: it may belong in the path of a stored transition
        return False

    def _update_journeys(
        self,
        session: Session,
        profiles: Sequence[Profile],
        touched_at: dict[str, list[datetime]],
        merged: set[str],
        now: datetime,
        rewrite_funnel: bool = False,
    ) -> None:
        """Make each profile's stored transitions equal those its facts imply, with touch paths,
        and its funnel rows (conversion's view) equal its live stage entries."""
        stored = repository.load_transitions(session, [p.customer_id for p in profiles])
        wanted = {p.customer_id: implied(self.model, p.facts) for p in profiles}

        def changes(p: Profile, path_of: Callable[[datetime], Path]) -> Changes:
            times = touched_at.get(p.customer_id, [])
            return reconcile(
                wanted[p.customer_id],
                stored.get(p.customer_id, []),
                reset_at=p.facts.reset.at if p.facts.reset else None,
                path_of=path_of,
                refresh=lambda at: (
                    p.customer_id in merged or any(at - self.lookback <= t <= at for t in times)
                ),
            )

        # First pass: which transition times need a touch path, so touches load in one query.
        since: dict[str, datetime] = {}
        for p in profiles:
            needed: list[datetime] = []
            changes(p, _recorder(needed))
            if needed:
                since[p.customer_id] = min(needed) - self.lookback
        touches = repository.load_touches(session, since)

        inserts: list[NewTransition] = []
        updates: list[tuple[str, Transition, Path]] = []
        deletes: list[str] = []
        stale: list[tuple[str, str]] = []  # funnel rows (customer, stage) to replace or drop
        funnel: list[repository.FunnelEntry] = []
        for p in profiles:
            change = changes(p, self._paths(touches.get(p.customer_id, [])))
            own = stored.get(p.customer_id, [])
            if rewrite_funnel or p.customer_id in merged:
                moved = set(self.model.names)
            else:
                moved = _moved_stages(change, own)
            stale += [(p.customer_id, stage) for stage in sorted(moved)]
            funnel += _funnel(p, wanted[p.customer_id], own, change, moved)
            inserts += [NewTransition(p.customer_id, t, path) for t, path in change.insert]
            updates += change.update
            deletes += change.delete
            gone = set(change.delete) | {row_id for row_id, _, _ in change.update}
            times = [s.mark.at for s in stored.get(p.customer_id, []) if s.id not in gone]
            times += [t.mark.at for t, _ in change.insert] + [
                t.mark.at for _, t, _ in change.update
            ]
            p.last_transition_at = max(times, default=None)
            stage = current_stage(self.model, p.facts)
            if stage is not None:
                p.stage, p.stage_entered_at = stage
            f = p.facts
            p.order_count, p.revenue, p.last_order_at = len(f.orders), f.revenue, f.last_order_at
        repository.delete_transitions(session, deletes)
        repository.update_transitions(session, updates)
        repository.add_transitions(session, inserts, now)
        repository.save_funnel(session, stale, funnel)

    def _paths(self, touches: Sequence[Touch]) -> Callable[[datetime], Path]:
        return lambda at: touch_path(touches, at, self.lookback, self.path_limit)


def _moved_stages(change: Changes, stored: Sequence[Stored]) -> set[str]:
    """Stages whose live entry `change` adds, moves or removes."""
    gone = set(change.delete)
    return (
        {t.to_stage for t, _ in change.insert if t.kind == STAGE}
        | {t.to_stage for _, t, _ in change.update if t.kind == STAGE}
        | {s.to_stage for s in stored if s.id in gone and s.kind == STAGE}
    )


def _funnel(
    p: Profile,
    wanted: Sequence[Transition],
    stored: Sequence[Stored],
    change: Changes,
    stages: set[str],
) -> list[repository.FunnelEntry]:
    """The customer's live entries into `stages` once `change` is applied, with their touch
    paths' credits and the amount of the order behind each (what conversion reads)."""
    paths = {t: path for t, path in change.insert}
    paths |= {t: path for _, t, path in change.update}
    amounts = {o.mark.message_id: o.amount for o in p.facts.orders}
    entries = []
    for t in wanted:
        if t.kind != STAGE or t.to_stage not in stages:
            continue
        path = paths.get(t)
        if path is None:  # kept as stored
            row = next(
                s
                for s in stored
                if s.kind == STAGE and s.to_stage == t.to_stage and s.mark == t.mark
            )
            path = decode_path(row.path)
        entries.append(
            repository.FunnelEntry(
                customer_id=p.customer_id,
                stage=t.to_stage,
                at=t.mark.at,
                channel=t.mark.channel or "other",
                value=amounts.get(t.mark.message_id, 0.0),
                credits=credits(path, t.mark.at),
            )
        )
    return entries


def _recorder(needed: list[datetime]) -> Callable[[datetime], Path]:
    """A path_of that only notes which times were asked for."""

    def path_of(at: datetime) -> Path:
        needed.append(at)
        return ()

    return path_of

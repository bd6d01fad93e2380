"""The lifecycle fold (pure): a batch of touchpoints applied to the state it needs, read by
`queries.load`, giving the new state and every row change for `repository.write`.

Per batch: resolve the batch's ids -> merge anonymous profiles into known ones -> apply every
event to its customer's facts -> for customers whose stage facts may move (`State.journeys`),
derive the transitions the facts imply and the changes that make the stored journey match.
Most events (a page view of a known customer) only move counters: no orders or journey read.
The touches a journey's paths need are known only once its facts are: `touch_windows` folds the
stored journeys' events once without paths to find them, for the loader to read.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from services.lifecycle.attribution import credits
from services.lifecycle.identity import Identities
from services.lifecycle.journey import (
    RESET,
    STAGE,
    Changes,
    Path,
    Stored,
    Touch,
    Transition,
    decode_path,
    encode_path,
    implied,
    reconcile,
    touch_path,
)
from services.lifecycle.stages import (
    Facts,
    Mark,
    Order,
    Refund,
    Reset,
    StageModel,
    current_stage,
)
from shared.events import ORDER_COMPLETED, ORDER_REFUNDED, Touchpoint


@dataclass(frozen=True)
class Rules:
    """The settings the fold runs under: the stage model and the touch path's window."""

    model: StageModel
    lookback: timedelta
    path_limit: int

    def engaging(self, event: Touchpoint) -> bool:
        if event.type == "track":
            return event.event in self.model.engaging_events
        if event.type == "identify":
            return self.model.engaging(None, event.traits)
        return False


@dataclass
class Profile:
    """One customer's state as the fold works on it.

    `complete`: orders and refunds are loaded into `facts` (needed to recompute the journey);
    otherwise the purchase counters are the stored ones and do not change.
    """

    customer_id: str
    known: bool
    facts: Facts
    event_count: int = 0
    order_count: int = 0
    revenue: float = 0.0
    last_order_at: datetime | None = None
    stage: str | None = None
    stage_entered_at: datetime | None = None
    last_transition_at: datetime | None = None
    complete: bool = True
    stored: bool = False  # has a row

    def copy(self) -> Profile:
        """A shallow copy, several times cheaper than `copy.copy` (it runs for every stored
        journey a batch moves)."""
        clone = object.__new__(Profile)
        clone.__dict__.update(self.__dict__)
        return clone


def _time_ordered_id() -> str:
    """32 hex digits, creation time first (like UUIDv7): new rows append to the primary key's
    B-tree instead of landing on random pages. The random half comes from `random` (seeded by
    the OS, reseeded in a forked child): os.urandom per row cost a system call each."""
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"


@dataclass(frozen=True)
class NewTransition:
    customer_id: str
    transition: Transition
    path: Path
    note: str | None = None
    id: str = field(default_factory=_time_ordered_id)
    touch_path: str = field(init=False)  # the path as stored: the row and the new state need it

    def __post_init__(self) -> None:
        object.__setattr__(self, "touch_path", encode_path(self.path))


@dataclass(frozen=True)
class FunnelEntry:
    """A live stage entry with what conversion needs: its channel, the converting order's
    amount, and its credit per channel under every attribution model (attribution.MODELS)."""

    customer_id: str
    stage: str
    at: datetime
    channel: str
    value: float
    credits: Mapping[str, tuple[float, ...]]


# A stored touch as the fold reads it: (at, message_id, channel), unique per customer by
# (at, message_id) like the table's primary key.
TouchRow = tuple[datetime, str, str]


@dataclass
class State:
    """What a batch reads: its slice of the id graph (as stored), the stored profiles of the
    customers it names, and for the customers whose journey it recomputes (`journeys`): their
    orders and refunds (in the profiles' facts), stored transitions, and the touches from the
    earliest time a touch path needs on (`touch_windows`)."""

    ids: Identities
    profiles: dict[str, Profile] = field(default_factory=dict)
    journeys: set[str] = field(default_factory=set)
    transitions: dict[str, list[Stored]] = field(default_factory=dict)
    touches: dict[str, list[TouchRow]] = field(default_factory=dict)
    # Each event's customer when the batch was resolved on `ids` already (`queries.load` does,
    # to know which profiles to read); otherwise the fold resolves it.
    owners: list[str] | None = None
    # The transitions each customer's facts implied when `touch_windows` folded them, kept for
    # the fold to reuse while the facts are equal (it derives the same ones otherwise).
    implied: dict[str, tuple[Facts, list[Transition]]] = field(default_factory=dict)


@dataclass
class Writes:
    """Every row change of a batch, in the order `repository.write` applies them."""

    moves: list[tuple[str, str]] = field(default_factory=list)  # (absorbed, into)
    links: dict[str, str] = field(default_factory=dict)  # id -> its new customer
    touches: list[tuple[str, Mark]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # transition ids
    updates: list[tuple[str, Transition, str]] = field(default_factory=list)  # path as stored
    inserts: list[NewTransition] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)  # funnel rows to drop
    funnel: list[FunnelEntry] = field(default_factory=list)
    touched: list[Profile] = field(default_factory=list)  # only last touch and event count moved
    profiles: list[Profile] = field(default_factory=list)  # whole rows
    orders: list[tuple[str, Order]] = field(default_factory=list)
    refunds: list[tuple[str, Refund]] = field(default_factory=list)


def batch_ids(events: Iterable[Touchpoint]) -> set[str]:
    return {i for e in events for i in (e.user_id, e.anonymous_id, e.previous_id) if i}


def empty(ids: Iterable[str] = ()) -> State:
    """The state of a store that has seen nothing (each id its own customer)."""
    return State(Identities({i: i for i in ids}, set(), set()))


def owners(graph: Identities, events: Sequence[Touchpoint]) -> list[str]:
    """The customer each event ends up with once the batch's links and merges are made (every
    id of the events is in the graph: `queries.lock_ids` or `resolve` put it there)."""
    resolved = [graph.resolve(e.user_id, e.anonymous_id, e.previous_id) for e in events]
    return [graph.final(o) for o in resolved]


def resolve(graph: Identities, events: Sequence[Touchpoint]) -> list[str]:
    """`owners`, with the ids the graph has never seen as customers of their own (as
    `queries.lock_ids` stores them)."""
    for i in batch_ids(events) - graph.customer_of.keys():
        graph.customer_of[i] = i
    return owners(graph, events)


def plan(rules: Rules, state: State, events: Sequence[Touchpoint]) -> set[str]:
    """The customers whose journey folding `events` into `state` recomputes (what
    `queries.load` reads orders, refunds, transitions and touches for)."""
    graph = copy_ids(state.ids)
    return journeys(rules, graph, state.profiles, resolve(graph, events), events)


def copy_ids(graph: Identities) -> Identities:
    """The graph as stored, before any batch resolved on it."""
    return Identities(dict(graph.customer_of), set(graph.existing), set(graph.known))


def journeys(
    rules: Rules,
    graph: Identities,
    profiles: Mapping[str, Profile],
    owned: Sequence[str],
    events: Sequence[Touchpoint],
) -> set[str]:
    """The customers whose journey the batch must recompute (`graph` resolved, `owned` each
    event's customer): merged and absorbed ones, new ones, those whose stage facts may move."""
    result = {into for _, into in graph.merges} | {a for a, _ in graph.merges}
    by_owner: dict[str, list[Touchpoint]] = defaultdict(list)
    for event, owner in zip(events, owned, strict=True):
        by_owner[owner].append(event)
    for owner, own in by_owner.items():
        profile = profiles.get(owner)
        if profile is None or _moves_stage_facts(rules, profile, own):
            result.add(owner)
    return result


def _moves_stage_facts(rules: Rules, profile: Profile, events: Sequence[Touchpoint]) -> bool:
    """Could these events change the customer's stage entries or a stored touch path?"""
    facts, last = profile.facts, profile.last_transition_at
    for event in events:
        mark = Mark(event.timestamp, event.message_id, event.channel)
        if event.purchase or facts.first_touch is None or mark < facts.first_touch:
            return True
        after_reset = facts.reset is None or mark.at > facts.reset.at
        if rules.engaging(event) and after_reset and (not facts.engaged or mark < facts.engaged):
            return True
        if last is not None and mark.at <= last:
            return True  # a late touch: it may belong in the path of a stored transition
    return False


def fold(rules: Rules, state: State, events: Sequence[Touchpoint]) -> tuple[State, Writes]:
    """The state after `events`, and the row changes that store it. `state` is consumed (its
    profiles are updated in place: this runs for every event)."""
    return _fold(rules, state, events, None)


def touch_windows(rules: Rules, state: State, events: Sequence[Touchpoint]) -> dict[str, datetime]:
    """From when on each customer's touches are needed to fold `events` into `state` (the
    absorbed customers of a merge under the customer they merge into). `state` is not changed
    but for its `implied` cache.

    Only customers with stored touches get one: stored journeys and those merged with one. A
    customer new in the batch has none (its touches are the batch's), nor is a customer outside
    the journeys changed by its events; so only the others' events are folded here again."""
    needed: dict[str, list[datetime]] = {}
    graph = copy_ids(state.ids) if state.owners is None else state.ids  # the fold only reads it
    owned = resolve(graph, events) if state.owners is None else state.owners
    stored = {c for c in state.journeys if c in state.profiles}
    stored |= {graph.final(absorbed) for absorbed, _ in graph.merges if absorbed in state.profiles}
    own = [(e, o) for e, o in zip(events, owned, strict=True) if o in stored]
    profiles = dict(state.profiles)
    for c in stored & profiles.keys():
        profiles[c] = profiles[c].copy()
    scratch = State(graph, profiles, stored, state.transitions, owners=[o for _, o in own])
    scratch.implied = state.implied
    _fold(rules, scratch, [e for e, _ in own], needed)
    return _windows(rules, graph, needed)


def reset(
    rules: Rules, state: State, customer: str, stage: str, now: datetime, note: str | None
) -> tuple[State, Writes]:
    """Put a stored customer in `stage` now (an audited `reset` transition); rules then apply
    again to later events only."""
    return _reset(rules, state, customer, stage, now, note, None)


def reset_windows(
    rules: Rules, state: State, customer: str, stage: str, now: datetime
) -> dict[str, datetime]:
    needed: dict[str, list[datetime]] = {}
    scratch = replace(state, profiles={c: p.copy() for c, p in state.profiles.items()})
    _reset(rules, scratch, customer, stage, now, None, needed)
    return _windows(rules, state.ids, needed)


def _windows(
    rules: Rules, graph: Identities, needed: Mapping[str, list[datetime]]
) -> dict[str, datetime]:
    since = {c: min(times) - rules.lookback for c, times in needed.items() if times}
    for absorbed, _ in graph.merges:  # their touches move to the customer they merged into
        into = graph.final(absorbed)
        if into in since:
            since[absorbed] = since[into]
    return since


def _reset(
    rules: Rules,
    state: State,
    customer: str,
    stage: str,
    now: datetime,
    note: str | None,
    record: dict[str, list[datetime]] | None,
) -> tuple[State, Writes]:
    profile = state.profiles[customer]
    writes = Writes()
    audited = Transition(RESET, profile.stage, stage, Mark(now, "", ""))
    writes.inserts.append(NewTransition(customer, audited, (), note))
    profile.facts = replace(profile.facts, reset=Reset(stage, now), engaged=None)
    stored = {customer: [*state.transitions.get(customer, []), _stored(writes.inserts[0])]}
    _journeys(rules, state, [profile], stored, {}, set(), writes, record, rewrite_funnel=True)
    if record is not None:
        return state, writes
    state.transitions.update(_apply(stored, writes))
    writes.profiles.append(profile)
    return state, writes


def _fold(
    rules: Rules,
    state: State,
    events: Sequence[Touchpoint],
    record: dict[str, list[datetime]] | None,
) -> tuple[State, Writes]:
    """`record`: only note, per customer, the times whose touch paths the journeys need."""
    writes = Writes()
    if not events:
        return state, writes
    graph, profiles = state.ids, state.profiles
    owned = resolve(graph, events) if state.owners is None else state.owners
    merged = {into for _, into in graph.merges}
    needs_journey = state.journeys | merged | {a for a, _ in graph.merges}
    needs_journey |= {o for o in owned if o not in profiles}  # new customers

    dirty_orders: set[tuple[str, str]] = set()
    stored = {c: state.transitions.get(c, []) for c in needs_journey}
    for absorbed, into in graph.merges:
        source = profiles.pop(absorbed, None)
        target = profiles.setdefault(into, Profile(into, True, Facts()))
        # Their transition rows are re-keyed to `into`; read back in time order (the index).
        rows = stored.pop(absorbed, [])
        stored[into] = sorted([*stored.get(into, []), *rows], key=lambda s: s.mark.at)
        if source is not None:
            target.facts = target.facts.merged(source.facts)
            target.event_count += source.event_count
            writes.moves.append((absorbed, into))
    writes.links = {i: graph.customer_of[i] for i in graph.changed}

    touches = writes.touches
    by_owner: dict[str, list[Mark]] = defaultdict(list)
    for event, owner in zip(events, owned, strict=True):
        if record is not None and owner not in needs_journey:
            continue  # only the journeys' times are recorded
        profile = profiles.get(owner)
        if profile is None:
            profile = profiles[owner] = Profile(owner, owner in graph.known, Facts())
        mark = Mark(event.timestamp, event.message_id, event.channel)
        profile.facts = profile.facts.touched(mark, rules.engaging(event))
        profile.event_count += 1
        touches.append((owner, mark))
        by_owner[owner].append(mark)
        if event.purchase == ORDER_COMPLETED:
            order = Order(event.order_id, mark, event.revenue or 0.0)
            profile.facts = profile.facts.ordered(order)
            dirty_orders.add((owner, order.order_id))
        elif event.purchase == ORDER_REFUNDED:
            # A refund subtracts, whether sent positive (Segment's spec) or negative.
            refund = Refund(mark, abs(event.revenue or 0.0))
            profile.facts = profile.facts.refunded(refund)
            writes.refunds.append((owner, refund))
    touched_at = {c: [m.at for m in by_owner[c]] for c in needs_journey if c in by_owner}
    if record is None:
        _add_touches(state, graph, by_owner)
    journey_profiles = [profiles[c] for c in needs_journey if c in profiles]
    if record is not None:  # only stored touches need a window (see touch_windows)
        journey_profiles = [p for p in journey_profiles if p.customer_id in state.journeys]
    _journeys(rules, state, journey_profiles, stored, touched_at, merged, writes, record)
    if record is not None:
        return state, writes

    for absorbed, _ in graph.merges:
        state.transitions.pop(absorbed, None)
    state.transitions.update(_apply(stored, writes))
    # One pass over the batch's profiles (this runs for every customer of every batch): which
    # are known now, which get whole rows and which only their counters, which orders to write.
    known = set()
    for c, p in profiles.items():
        was_known = p.known
        p.known = was_known or c in graph.known
        if p.known:
            known.add(c)
        if p.stored and c not in needs_journey and p.known == was_known:
            writes.touched.append(p)
        else:
            writes.profiles.append(p)
        p.stored = True
        if c in merged:
            writes.orders += [(c, o) for o in p.facts.orders]
        elif p.facts.orders and dirty_orders:
            writes.orders += [(c, o) for o in p.facts.orders if (c, o.order_id) in dirty_orders]
    new_ids = Identities(graph.customer_of, set(profiles), known)
    return State(new_ids, profiles, set(), state.transitions, state.touches), writes


def _add_touches(state: State, graph: Identities, by_owner: Mapping[str, list[Mark]]) -> None:
    """The batch's touches (and the absorbed customers') into the state's, as the table takes
    them: the first of the same (customer, at, message_id) stays."""
    for absorbed, _ in graph.merges:
        rows = state.touches.pop(absorbed, None)
        if rows:
            state.touches.setdefault(graph.final(absorbed), []).extend(rows)
    for owner, marks in by_owner.items():
        rows = state.touches.get(owner)
        if rows is None and len(marks) == 1:  # most of a batch: one touch of a customer
            state.touches[owner] = [marks[0]]
            continue
        rows = state.touches.setdefault(owner, [])
        keys = {row[:2] for row in rows}  # (at, message_id)
        for mark in marks:
            if mark[:2] not in keys:
                keys.add(mark[:2])
                rows.append(mark)


def _stored(new: NewTransition) -> Stored:
    t = new.transition
    return Stored(new.id, t.kind, t.from_stage, t.to_stage, t.mark, new.touch_path)


def _apply(stored: Mapping[str, list[Stored]], writes: Writes) -> dict[str, list[Stored]]:
    """Each customer's stored transitions once `writes` are applied."""
    gone = set(writes.deletes)
    updated = {row_id: (t, path) for row_id, t, path in writes.updates}
    result: dict[str, list[Stored]] = {}
    for customer, rows in stored.items():
        kept = result[customer] = []
        for s in rows:
            if s.id in updated:
                t, path = updated[s.id]
                s = Stored(s.id, s.kind, t.from_stage, s.to_stage, t.mark, path)
            if s.id not in gone:
                kept.append(s)
    for new in writes.inserts:
        rows = result.setdefault(new.customer_id, [])
        if not rows or rows[-1].id != new.id:  # a reset's row is in `stored` already, last
            rows.append(_stored(new))
    return result


def _journeys(
    rules: Rules,
    state: State,
    profiles: Sequence[Profile],
    stored: Mapping[str, list[Stored]],
    touched_at: Mapping[str, list[datetime]],
    merged: set[str],
    writes: Writes,
    record: dict[str, list[datetime]] | None,
    rewrite_funnel: bool = False,
) -> None:
    """Make each profile's stored transitions equal those its facts imply, with touch paths,
    and its funnel rows (conversion's view) equal its live stage entries."""
    wanted = {}
    for p in profiles:
        seen = state.implied.get(p.customer_id)
        if seen is not None and seen[0] == p.facts:
            wanted[p.customer_id] = seen[1]
        else:
            wanted[p.customer_id] = implied(rules.model, p.facts)
            if record is not None:
                state.implied[p.customer_id] = (p.facts, wanted[p.customer_id])

    def changes(p: Profile, path_of: Callable[[datetime], Path]) -> Changes:
        times = touched_at.get(p.customer_id, [])
        return reconcile(
            wanted[p.customer_id],
            stored.get(p.customer_id, []),
            reset_at=p.facts.reset.at if p.facts.reset else None,
            path_of=path_of,
            refresh=lambda at: (
                p.customer_id in merged or any(at - rules.lookback <= t <= at for t in times)
            ),
        )

    if record is not None:
        for p in profiles:
            changes(p, _recorder(record.setdefault(p.customer_id, [])))
        return
    # Plain loops below, not comprehensions: this runs for every journey a batch moves, and a
    # comprehension costs a function call each (Python 3.11).
    for p in profiles:
        change = changes(p, _paths(rules, state.touches.get(p.customer_id, ())))
        own = stored.get(p.customer_id, [])
        if rewrite_funnel or p.customer_id in merged:
            moved = set(rules.model.names)
        else:
            moved = _moved_stages(change, own)
        if moved:
            writes.stale += [(p.customer_id, stage) for stage in sorted(moved)]
            writes.funnel += _funnel(p, wanted[p.customer_id], own, change, moved)
        latest = None
        for t, path in change.insert:
            writes.inserts.append(NewTransition(p.customer_id, t, path))
            latest = t.mark.at if latest is None else max(latest, t.mark.at)
        gone = set(change.delete)
        for row_id, t, path in change.update:
            writes.updates.append((row_id, t, encode_path(path)))
            latest = t.mark.at if latest is None else max(latest, t.mark.at)
            gone.add(row_id)
        writes.deletes += change.delete
        for s in own:
            if s.id not in gone and (latest is None or s.mark.at > latest):
                latest = s.mark.at
        p.last_transition_at = latest
        stage = current_stage(rules.model, p.facts)
        if stage is not None:
            p.stage, p.stage_entered_at = stage
        f = p.facts
        p.order_count, p.revenue, p.last_order_at = len(f.orders), f.revenue, f.last_order_at


def _paths(rules: Rules, rows: Sequence[TouchRow]) -> Callable[[datetime], Path]:
    """A customer's touch paths from its touch rows (made touches only once a path is asked)."""
    touches: list[Touch] = []

    def path_of(at: datetime) -> Path:
        if not touches:
            touches.extend([Touch(when, channel) for when, _, channel in rows])
        return touch_path(touches, at, rules.lookback, rules.path_limit)

    return path_of


def _moved_stages(change: Changes, stored: Sequence[Stored]) -> set[str]:
    """Stages whose live entry `change` adds, moves or removes."""
    if not (change.insert or change.update or change.delete):
        return set()
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
) -> list[FunnelEntry]:
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
            FunnelEntry(
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

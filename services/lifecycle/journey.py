"""A customer's journey (pure): the transitions their facts imply, the touch path before each,
and the changes that make a stored journey match them.

Transitions are derived from order-free facts, so a late or out-of-order event corrects the
journey (an earlier entry time, a longer touch path) instead of appending to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from services.lifecycle.stages import Facts, Mark, StageModel, entry_marks, reactivations

STAGE, REACTIVATED, RESET = "stage", "reactivated", "reset"


@dataclass(frozen=True, order=True)
class Touch:
    at: datetime
    channel: str


Path = tuple[Touch, ...]


@dataclass(frozen=True)
class Transition:
    kind: str
    from_stage: str | None
    to_stage: str
    mark: Mark


@dataclass(frozen=True)
class Stored:
    """A transition row as stored (its touch path as the stored JSON text)."""

    id: str
    kind: str
    from_stage: str | None
    to_stage: str
    mark: Mark
    path: str


@dataclass
class Changes:
    insert: list[tuple[Transition, Path]] = field(default_factory=list)
    update: list[tuple[str, Transition, Path]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def implied(model: StageModel, facts: Facts) -> list[Transition]:
    """Every transition the facts imply: stage entries (one step at a time, pass-through at the
    same instant) and win-backs (lapsed -> active)."""
    names = model.names
    result = [
        Transition(STAGE, names[i - 1] if i else None, names[i], mark)
        for i, mark in enumerate(entry_marks(model, facts))
        if mark is not None
    ]
    result += [Transition(REACTIVATED, "lapsed", "active", m) for m in reactivations(model, facts)]
    return result


def touch_path(touches: Sequence[Touch], at: datetime, lookback: timedelta, limit: int) -> Path:
    """The touches within `lookback` up to `at`, in time order; past `limit`, the first one and
    the latest `limit - 1` (what first-, last-touch and position-based credit need most)."""
    window = sorted(t for t in touches if at - lookback <= t.at <= at)
    if len(window) > limit:
        window = [window[0], *window[len(window) - limit + 1 :]]
    return tuple(window)


def encode_path(path: Path) -> str:
    """The stored form of a touch path: JSON `[[at ISO 8601, channel], ...]`."""
    return orjson.dumps([[t.at.isoformat(), t.channel] for t in path]).decode()


def decode_path(text: str) -> Path:
    return tuple(Touch(datetime.fromisoformat(at), channel) for at, channel in orjson.loads(text))


def reconcile(
    desired: Sequence[Transition],
    stored: Sequence[Stored],
    *,
    reset_at: datetime | None,
    path_of: Callable[[datetime], Path],
    refresh: Callable[[datetime], bool],
) -> Changes:
    """What to insert, update and delete so the stored journey equals `desired`.

    Resets, and stage rows from before the latest reset, are history and stay. A kept row gets a
    new path when its time moved or `refresh(at)` says new touches fell in its window.
    """
    changes = Changes()
    live = [
        s
        for s in stored
        if s.kind == REACTIVATED or (s.kind == STAGE and (reset_at is None or s.mark.at > reset_at))
    ]
    for want in desired:
        if want.kind == STAGE:
            candidates = [s for s in live if s.kind == STAGE and s.to_stage == want.to_stage]
        else:
            candidates = [s for s in live if s.kind == REACTIVATED and s.mark == want.mark]
        if not candidates:
            changes.insert.append((want, path_of(want.mark.at)))
            continue
        keep = next((s for s in candidates if s.mark == want.mark), candidates[0])
        for row in candidates:
            live.remove(row)
            if row is not keep:
                changes.delete.append(row.id)  # the same stage twice: profiles were merged
        moved = (keep.mark, keep.from_stage) != (want.mark, want.from_stage)
        if moved or refresh(want.mark.at):
            path = path_of(want.mark.at)
            if moved or encode_path(path) != keep.path:
                changes.update.append((keep.id, want, path))
    changes.delete += [s.id for s in live]  # no longer implied (a win-back a late order filled)
    return changes

"""Marketing channel classification from ordered, first-match rules kept in a TOML file."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.datafiles import read_toml, table_array
from shared.events import CHANNELS

DEFAULT_RULES = Path(__file__).with_name("channel_rules.toml")

Event = Mapping[str, Any]
Test = Callable[[str, Any], bool]  # (call type, the value of the condition's field) -> matches
FieldPath = tuple[str, ...]  # a dotted field split on its dots; () is the whole event


class ChannelRulesError(ValueError):
    """The rules file is not valid; the message says where and why."""


def _lower(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _host(url: str) -> str:
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    except ValueError:  # not a URL (`http://[x`): no host, so no domain matches
        return ""
    return host.removeprefix("www.")


@dataclass(frozen=True)
class Condition:
    path: FieldPath  # the field the test is given
    test: Test


def _condition(spec: Any, where: str) -> Condition:
    if not isinstance(spec, dict):
        raise ChannelRulesError(f"{where}: must be a table")

    def strings(key: str, lower: bool = True) -> frozenset[str]:
        values = spec.get(key)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ChannelRulesError(f"{where}: `{key}` must be a list of strings")
        return frozenset(v.lower() if lower else v for v in values)

    if "event_in" in spec:
        names = strings("event_in", lower=False)
        return Condition(("event",), lambda kind, v: kind == "track" and v in names)
    if "type_in" in spec:
        types = strings("type_in")
        return Condition((), lambda kind, v: kind in types)
    if "domain_field" in spec:
        path, domains = _path(spec["domain_field"], where), strings("domains")

        # Referrers repeat (search engines, the site itself), and parsing a URL costs more than
        # the rest of a classification: remember the answer for the recent ones.
        @functools.lru_cache(maxsize=4096)
        def in_domains(url: str) -> bool:
            # the host or any parent domain of it (m.facebook.com -> facebook.com) is listed
            labels = _host(url).split(".")
            return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))

        return Condition(path, lambda kind, v: isinstance(v, str) and v != "" and in_domains(v))
    if "field" in spec:
        path = _path(spec["field"], where)
        if "in" in spec:
            allowed = strings("in")
            return Condition(path, lambda kind, v: _lower(v) in allowed)
        if "contains" in spec:
            pattern = re.compile("|".join(re.escape(p) for p in sorted(strings("contains"))))
            return Condition(path, lambda kind, v: pattern.search(_lower(v)) is not None)
        if spec.get("present") is True:
            return Condition(path, lambda kind, v: v not in (None, "", {}, []))
    raise ChannelRulesError(f"{where}: unknown condition {dict(spec)!r}")


def _path(dotted: Any, where: str) -> FieldPath:
    if not isinstance(dotted, str) or not dotted:
        raise ChannelRulesError(f"{where}: a field must be a dotted path such as context.app.name")
    return tuple(dotted.split("."))


def _names_a_channel(kind: str, value: Any) -> bool:
    return _lower(value) in CHANNELS


@dataclass(frozen=True)
class Rule:
    name: str
    channel: str | None  # None: take the channel from `from_fields`
    conditions: tuple[Condition, ...] = ()
    from_fields: tuple[FieldPath, ...] = ()

    def checks(self) -> list[tuple[FieldPath, Test, str | None]]:
        """The rule as (field, test, channel) checks tried in order, the first passing one
        deciding; channel None: the channel is the field's value (`from_fields`)."""
        if self.channel is None:
            return [(path, _names_a_channel, None) for path in self.from_fields]
        return [(c.path, c.test, self.channel) for c in self.conditions]


class ChannelClassifier:
    """Tries the rules in order; the first that matches names the channel, else "other".

    Every event goes through here, so the rules are flattened into one list of checks, and each
    field any of them reads is looked up once per event: the dictionaries of each prefix of a path
    (`context`, `context.page`) are fetched once for all the paths below it.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        slots: dict[FieldPath, int] = {(): 0}  # a path -> its value's index in `_values`
        self._steps: list[tuple[int, str]] = []  # (index of the parent's value, key), parents first
        self._checks: list[tuple[int, Test, str | None]] = []
        for rule in rules:
            for path, test, channel in rule.checks():
                for n in range(1, len(path) + 1):
                    if path[:n] not in slots:
                        slots[path[:n]] = len(slots)
                        self._steps.append((slots[path[: n - 1]], path[n - 1]))
                self._checks.append((slots[path], test, channel))

    @classmethod
    def from_file(cls, path: Path = DEFAULT_RULES) -> ChannelClassifier:
        data = read_toml(path, "channel rules", ChannelRulesError)
        return cls(parse_rules(data, str(path)))

    def _values(self, event: Event) -> list[Any]:
        values: list[Any] = [event]
        for parent, key in self._steps:
            node = values[parent]
            values.append(node.get(key) if isinstance(node, dict) else None)
        return values

    def classify(self, kind: str, event: Event) -> str:
        values = self._values(event)
        for slot, test, channel in self._checks:
            if test(kind, values[slot]):
                return channel or _lower(values[slot])
        return "other"


def parse_rules(data: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    items = table_array(data, "rule", source, ChannelRulesError)
    rules = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ChannelRulesError(f"{source}: rule {n} must be a table")
        where = f"{source}: rule {n} ({item.get('name', 'unnamed')!r})"
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ChannelRulesError(f"{where}: needs a `name`")
        if "from_fields" in item:
            fields = item["from_fields"]
            if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
                raise ChannelRulesError(f"{where}: `from_fields` must be a list of field paths")
            rules.append(Rule(name, None, from_fields=tuple(_path(f, where) for f in fields)))
            continue
        channel = item.get("channel")
        if channel not in CHANNELS:
            raise ChannelRulesError(f"{where}: `channel` must be one of {', '.join(CHANNELS)}")
        when = item.get("when")
        if not isinstance(when, list) or not when:
            raise ChannelRulesError(f"{where}: needs at least one [[rule.when]] condition")
        conditions = tuple(_condition(c, f"{where} condition {i}") for i, c in enumerate(when, 1))
        rules.append(Rule(name, channel, conditions))
    return rules

"""Marketing channel classification from ordered, first-match rules kept in a TOML file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.datafiles import read_toml
from shared.events import CHANNELS

DEFAULT_RULES = Path(__file__).with_name("channel_rules.toml")

Event = Mapping[str, Any]
Condition = Callable[[str, Event], bool]  # (call type, raw event) -> matches


class ChannelRulesError(ValueError):
    """The rules file is not valid; the message says where and why."""


def field(event: Event, path: tuple[str, ...]) -> Any:
    """The value at a field path split on dots (`("context", "page", "referrer")`), or None."""
    value: Any = event
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _lower(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _host(url: Any) -> str:
    if not isinstance(url, str) or not url:
        return ""
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    return host.removeprefix("www.")


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
        return lambda kind, e: kind == "track" and e.get("event") in names
    if "type_in" in spec:
        types = strings("type_in")
        return lambda kind, e: kind in types
    if "domain_field" in spec:
        path, domains = _path(spec["domain_field"], where), strings("domains")

        def in_domains(kind: str, e: Event) -> bool:
            # the host or any parent domain of it (m.facebook.com -> facebook.com) is listed
            labels = _host(field(e, path)).split(".")
            return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))

        return in_domains
    if "field" in spec:
        path = _path(spec["field"], where)
        if "in" in spec:
            allowed = strings("in")
            return lambda kind, e: _lower(field(e, path)) in allowed
        if "contains" in spec:
            pattern = re.compile("|".join(re.escape(p) for p in sorted(strings("contains"))))
            return lambda kind, e: pattern.search(_lower(field(e, path))) is not None
        if spec.get("present") is True:
            return lambda kind, e: field(e, path) not in (None, "", {}, [])
    raise ChannelRulesError(f"{where}: unknown condition {dict(spec)!r}")


def _path(dotted: Any, where: str) -> tuple[str, ...]:
    if not isinstance(dotted, str) or not dotted:
        raise ChannelRulesError(f"{where}: a field must be a dotted path such as context.app.name")
    return tuple(dotted.split("."))


@dataclass(frozen=True)
class Rule:
    name: str
    channel: str | None  # None: take the channel from `from_fields`
    conditions: tuple[Condition, ...] = ()
    from_fields: tuple[tuple[str, ...], ...] = ()

    def match(self, kind: str, event: Event) -> str | None:
        if self.channel is None:
            for path in self.from_fields:
                value = _lower(field(event, path))
                if value in CHANNELS:
                    return value
            return None
        for condition in self.conditions:
            if condition(kind, event):
                return self.channel
        return None


class ChannelClassifier:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def from_file(cls, path: Path = DEFAULT_RULES) -> ChannelClassifier:
        data = read_toml(path, "channel rules", ChannelRulesError)
        return cls(parse_rules(data, str(path)))

    def classify(self, kind: str, event: Event) -> str:
        for rule in self.rules:
            channel = rule.match(kind, event)
            if channel is not None:
                return channel
        return "other"


def parse_rules(data: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    items = data.get("rule")
    if not isinstance(items, list) or not items:
        raise ChannelRulesError(f"{source}: expected one or more [[rule]] tables")
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

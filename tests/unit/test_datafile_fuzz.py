"""Fuzzing the user-editable data files (stage model, channel rules, segment map): whatever a file
holds, loading it either works or fails with the file's own error naming the file, never with a
stray KeyError or AttributeError from deep inside."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.channels import DEFAULT_RULES, ChannelClassifier, ChannelRulesError
from services.lifecycle.stages import DEFAULT_MODEL, StageModel, StageModelError
from services.scoring.segments import DEFAULT_MAP, SegmentMap, SegmentMapError

FILES: list[tuple[Path, Callable[[Path], object], type[ValueError]]] = [
    (DEFAULT_MODEL, StageModel.from_file, StageModelError),
    (DEFAULT_RULES, ChannelClassifier.from_file, ChannelRulesError),
    (DEFAULT_MAP, SegmentMap.from_file, SegmentMapError),
]

toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a parsed document, by key and list index."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += paths(item, (*prefix, n))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: replaced(document[head], rest, value)}
    return [replaced(item, rest, value) if n == head else item for n, item in enumerate(document)]


def toml_text(value: dict[str, Any]) -> str:
    """A TOML document for `value` (a dict) written as inline values, so any structure fits."""

    def inline(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{quoted(k)} = {inline(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(inline(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return quoted(str(v))

    return "".join(f"{quoted(k)} = {inline(v)}\n" for k, v in value.items() if v is not None)


def quoted(text: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " -_" else f"\\U{ord(c):08x}" for c in text) + '"'


def without_nones(value: Any) -> Any:
    """TOML has no null: drop them the way a user could not write them."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value if v is not None]
    return value


def check(load: Callable[[Path], object], error: type[ValueError], path: Path) -> None:
    try:
        load(path)
    except error as exc:
        assert str(path) in str(exc), f"the error must name the file: {exc}"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.sampled_from(range(len(FILES))), data=st.data())
def test_a_default_file_with_any_value_replaced_loads_or_fails_clearly(
    tmp_path: Path, which: int, data: st.DataObject
) -> None:
    default, load, error = FILES[which]
    document: Any = tomllib.loads(default.read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(document)[1:]))
        document = replaced(document, where, data.draw(toml_values))
    path = tmp_path / "fuzzed.toml"
    path.write_text(toml_text(without_nones(document)))
    check(load, error, path)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.sampled_from(range(len(FILES))), cut=st.floats(0, 1), junk=st.binary(max_size=40))
def test_a_truncated_or_corrupted_file_fails_clearly(
    tmp_path: Path, which: int, cut: float, junk: bytes
) -> None:
    default, load, error = FILES[which]
    original = default.read_bytes()
    path = tmp_path / "corrupted.toml"
    path.write_bytes(original[: int(len(original) * cut)] + junk)
    check(load, error, path)


def test_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    for _, load, error in FILES:
        with pytest.raises(error, match=r"absent\.toml"):
            load(tmp_path / "absent.toml")

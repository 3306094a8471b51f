"""The package's architecture, checked by import-linter on every test run.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``):

- ``pipeline-layers``: each stage imports only the stages before it (data -> features -> model ->
  risk -> execution -> training -> backtest -> report -> persistence -> cli), so the domain never
  imports persistence;
- ``no-import-cycles``: no cycle between sibling modules or packages anywhere in ``colmena``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli", reason="Python 3.10 needs tomli to read pyproject.toml")

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter not installed")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_import_contracts_are_kept() -> None:
    code = importlinter_cli.lint_imports(
        config_filename=str(PYPROJECT), no_cache=True, no_logo=True, verbose=False
    )
    assert code == 0, "an import contract is broken: run `lint-imports` for the chains"


def test_every_pipeline_stage_is_a_package_in_the_layers() -> None:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    assert set(contracts) >= {"pipeline-layers", "no-import-cycles"}
    layered = {name.strip() for layer in contracts["pipeline-layers"]["layers"]
               for name in layer.split("|")}  # fmt: skip
    package = Path(__import__("colmena").__file__).parent
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in package.glob("*/__init__.py")}
    # every subpackage and module of colmena sits in a layer (the compiled core is a leaf)
    assert (modules | packages) - {"_core"} <= layered, sorted((modules | packages) - layered)

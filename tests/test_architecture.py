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


def test_nothing_in_the_package_can_unpickle() -> None:
    """Nothing colmena reads (checkpoints, messages, saved state, records, configuration) goes
    through a format that runs code when loaded: no pickle, marshal, shelve or dill, no
    ``torch.load`` (whose default unpickles) and no ``allow_pickle``."""
    import ast

    banned_modules = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                      "joblib"}  # fmt: skip
    found = []
    root = Path(__file__).resolve().parents[1] / "python" / "colmena"
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{path.name}:{node.lineno} imports {n}" for n in names
                      if n in banned_modules]  # fmt: skip
            if isinstance(node, ast.Attribute) and node.attr == "load":
                base = node.value
                if isinstance(base, ast.Name) and base.id in {"torch", "np", "numpy"}:
                    found.append(f"{path.name}:{node.lineno} calls {base.id}.load")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                found.append(f"{path.name}:{node.lineno} passes allow_pickle")
    assert found == []


def test_sql_is_only_parameterised() -> None:
    """No SQL text is built from values: every query the package sends (``execute``,
    ``executemany``, ``psycopg.sql.SQL``) is a literal, a name bound to one, or composed with
    psycopg.sql (identifiers quoted by the library); never an f-string, ``%`` or ``.format``
    of a string, so every value goes as a parameter."""
    import ast

    def built(arg: ast.expr) -> bool:
        if isinstance(arg, ast.JoinedStr):
            return True
        if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mod | ast.Add):
            return built(arg.left) or built(arg.right) or isinstance(arg.op, ast.Mod)
        return (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Attribute)
            and arg.func.attr == "format"
            and isinstance(arg.func.value, ast.Constant)
        )

    found = []
    calls = 0
    root = Path(__file__).resolve().parents[1] / "python" / "colmena"
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in {"execute", "executemany", "SQL"} or not node.args:
                continue
            calls += 1
            if built(node.args[0]):
                found.append(f"{path.name}:{node.lineno} {node.func.attr} of a built string")
    assert calls > 20
    assert found == []

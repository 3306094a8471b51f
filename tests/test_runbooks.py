"""docs/runbooks.md: every ``colmena`` command in it parses as written (subcommand, options,
choices and required values), the shell snippets it gives are valid, and the ports and alert
names it names are the ones the package uses."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click
import pytest

from colmena.cli import main
from colmena.services.config import HealthSettings
from colmena.services.health import role_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks.md"
ALERTS = (Path(__file__).resolve().parents[1] / "python" / "colmena" / "services" / "monitoring"
          / "prometheus" / "colmena-alerts.yml")  # fmt: skip


def _text() -> str:
    return RUNBOOKS.read_text()


def _commands() -> list[str]:
    """Every ``colmena`` command of the steps (the tables' rows; prose only names them)."""
    spans = [c for line in _text().splitlines() if line.startswith("| ")
             for c in re.findall(r"`([^`]+)`", line)]  # fmt: skip
    return [c for c in spans if c.startswith("colmena ")]


def test_the_runbooks_cover_the_incidents_of_the_design_documents() -> None:
    headings = re.findall(r"^## (.+)$", _text(), flags=re.M)
    assert headings == [
        "Start",
        "Graceful shutdown",
        "Incident: the exchange is disconnected",
        "Incident: drawdown halt (kill switch)",
        "Incident: reconciliation difference (a real venue)",
        "Rollback of a deployment",
    ]
    assert len(_commands()) >= 20


@pytest.mark.parametrize("command", _commands())
def test_every_colmena_command_parses(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLMENA_DB_DSN", "postgresql://localhost/colmena")  # the export above
    argv = shlex.split(command)
    assert argv[0] == "colmena"
    name, args = argv[1], argv[2:]
    group = main
    command_obj = group.commands.get(name)
    assert command_obj is not None, f"no command colmena {name}"
    if isinstance(command_obj, click.Group):
        name, args = args[0], args[1:]
        command_obj = command_obj.commands[name]
    # Parses the options and arguments, checks choices, types and required values; runs nothing.
    ctx = command_obj.make_context(name, list(args))
    assert ctx.params is not None


def test_the_shell_and_toml_snippets_are_valid() -> None:
    text = _text()
    (toml,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    health = HealthSettings(**tomllib.loads(toml)["health"])
    roles = ("ingest", "risk", "execution", "recorder", "strategy")
    ports = {role: role_port(health, role) for role in roles}
    assert ports == {"ingest": 9464, "risk": 9465, "execution": 9466, "recorder": 9467,
                     "strategy": 9468}  # fmt: skip
    assert "ingest 9464, risk 9465, execution 9466, recorder 9467, strategy 9468" in text
    for role in ("ingest", "risk"):
        assert f"127.0.0.1:{ports[role]}" in text
    (bash,) = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    snippet = re.search(r"python -c '(.*?)'", bash)
    assert snippet is not None
    compile(snippet.group(1), "runbooks.md", "exec")


def test_the_alerts_named_exist() -> None:
    names = set(re.findall(r"alert: (\w+)", ALERTS.read_text()))
    named = set(re.findall(r"`(Colmena\w+)`", _text()))
    assert named
    assert named <= names

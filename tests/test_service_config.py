"""The live system's configuration file (colmena.services.config): strict TOML, every bad field
named with the file, secrets only from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.execution import ExecutionSettings
from colmena.risk import RiskConfig
from colmena.services.config import (
    DB_DSN_ENV,
    MAX_CONFIG_BYTES,
    ConfigError,
    LiveConfig,
    load_config,
)
from fuzzing import fuzz_settings

EXAMPLE = """
bar_seconds = 60

[nats]
url = "nats://127.0.0.1:4222"

[database]
dsn = "postgresql://colmena@db.example:5432/records"

[stream]
max_age_seconds = 86400.0
duplicate_window_seconds = 120.0

[[symbols]]
symbol = "BTC/USDT"
checkpoint = "runs/btc/checkpoints"

[[symbols]]
symbol = "ETH/USDT"
checkpoint = "runs/eth/checkpoint-00000003-gen000030.safetensors"

[feed]
kind = "exchange"
exchange = "kraken"

[risk]
max_leverage = 2.0
halt_drawdown = 0.25

[execution]
market = "margin"
fee_bps = 7.5
"""


def write(tmp_path: Path, text: str | bytes, name: str = "colmena.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_example_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.nats.url == "nats://127.0.0.1:4222"
    assert [s.symbol for s in config.symbols] == ["BTC/USDT", "ETH/USDT"]
    assert config.feed.kind == "exchange"
    assert config.feed.poll_seconds == 60.0
    assert config.feed.limit == 1000
    assert config.stream.duplicate_window_seconds == 120.0
    assert config.risk == RiskConfig(max_leverage=2.0, halt_drawdown=0.25)
    assert config.execution == ExecutionSettings(market="margin", fee_bps=7.5)
    assert config.database_dsn() == "postgresql://colmena@db.example:5432/records"


def test_empty_file_is_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DB_DSN_ENV, raising=False)
    config = load_config(write(tmp_path, ""))
    assert config == LiveConfig()
    assert config.database_dsn() is None
    monkeypatch.setenv(DB_DSN_ENV, "postgresql://u:secret@h/db")
    assert config.database_dsn() == "postgresql://u:secret@h/db"


BAD_FIELDS = [
    ("[risk]\nkelly_window = 'fifty'",
     r"colmena.toml: Expected `int`, got `str` - at `\$.risk.kelly_window`"),
    ("[risk]\nkelly_windw = 50", r"unknown field `kelly_windw` - at `\$.risk`"),
    ("[execution]\nslippage_bps = 20000.0", r"at `\$.execution.slippage_bps`"),
    ("[[symbols]]\nsymbol = 'BTC.USDT'\ncheckpoint = 'c'",
     r"symbol 'BTC.USDT' cannot be a subject token.* - at `\$.symbols\[0\]`"),
    ("[[symbols]]\nsymbol = 'A/B'\ncheckpoint = 'c'\n[[symbols]]\nsymbol = 'A/B'\n"
     "checkpoint = 'd'", r"symbols repeated: A/B"),
    ("[nats]\nurl = 'http://x'", r"must start with nats://"),
    ("[database]\ndsn = 'postgresql://u:hunter2@h/db'",
     r"dsn carries a password: put the DSN in \$COLMENA_DB_DSN"),
    ("[database]\ndsn = 'host=h password=hunter2'", r"dsn carries a password"),
    ("[feed]\nkind = 'websocket'", r"Invalid enum value 'websocket' - at `\$.feed.kind`"),
    ("[feed]\nlimit = 5000", r"Expected `int` <= 1000 - at `\$.feed.limit`"),
    ("bar_seconds = true", r"Expected `int`, got `bool` - at `\$.bar_seconds`"),
    ("[stream]\nmax_bytes = 10", r"at `\$.stream.max_bytes`"),
    ("[risk\nmax_leverage = 1", r"not valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FIELDS)
def test_bad_fields_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_password_never_appears_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[database]\ndsn = 'postgresql://u:hunter2@h/db'"))
    assert "hunter2" not in str(info.value)


def test_files_that_are_not_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a regular file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"not a regular file"):
        load_config(tmp_path / "missing.toml")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.toml"
        os.mkfifo(fifo)
        with pytest.raises(ConfigError, match=r"not a regular file"):
            load_config(fifo)  # never opened: no hang
    big = write(tmp_path, b"#" * (MAX_CONFIG_BYTES + 1), "big.toml")
    with pytest.raises(ConfigError, match=r"larger than"):
        load_config(big)
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load_config(write(tmp_path, b"bar_seconds = 60 # \xff\xfe", "latin.toml"))


@pytest.mark.fuzz
@fuzz_settings()
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_load_or_raise_config_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_bytes(data)
        try:
            config = load_config(path)
        except ConfigError as exc:
            message = str(exc)
        else:
            message = ""
            assert isinstance(config, LiveConfig)
            # What was accepted passes the checks again (bounds, symbols, DSN).
            msgspec.convert(msgspec.to_builtins(config), type=LiveConfig)
        assert message == "" or message.startswith(str(path))

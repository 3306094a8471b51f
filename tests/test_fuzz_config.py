"""Fuzzing every setting a user can give: the settings structs decoded from hostile documents
(values of any type, bounds, NaN, infinities, huge, nested, unknown fields) are accepted within
their documented ranges or refused with a msgspec error naming the field; the CLI answers
hostile arguments with one line and exit code 2, never a traceback.

Inputs and checks: ``tests/fuzz_strategies.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from colmena.cli import main
from colmena.model.vae import VAEConfig
from colmena.risk.config import RiskConfig
from fuzz_strategies import ConfigDocument, check_config_document, config_documents
from fuzzing import fuzz_settings
from helpers import run_cli


@pytest.mark.fuzz
@fuzz_settings(default=500)
@given(config_documents())
def test_settings_are_accepted_in_range_or_refused_naming_the_field(
    document: ConfigDocument,
) -> None:
    assert check_config_document(document) in (
        "ok", "ValidationError", "DecodeError", "ValueError", "unencodable",
    )  # fmt: skip


@pytest.mark.parametrize("hidden", [[0], [-3], [16, 0]])
def test_vae_hidden_widths_below_one_are_refused(hidden: list[int]) -> None:
    with pytest.raises(msgspec.ValidationError, match="hidden"):
        msgspec.convert({"hidden": hidden}, type=VAEConfig)


# ---------------------------------------------------------------- the command line

_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
)
_NUMBER_TEXT = st.one_of(
    _TEXT,
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e309", "1e-400", "2.5", "3", "-0",
                     "99999999999999999999", "true", "0x10", "", " "]),
)  # fmt: skip


def _assert_user_error(result) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output


@pytest.fixture(scope="module")
def bad_candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "candles.csv"
    path.write_text("open_time,open,high,low,close,volume\n")  # no rows: refused on loading
    return path


@pytest.mark.fuzz
@fuzz_settings(default=40)
@given(
    option=st.sampled_from(["--d", "--threshold", "--window", "--confidence"]),
    value=_NUMBER_TEXT,
    extra=st.lists(st.sampled_from(["--auto-d", "--force", "--d", "0.4"]), max_size=2),
)
def test_features_with_hostile_options_is_one_line_and_exit_2(
    bad_candles: Path, option: str, value: str, extra: list[str]
) -> None:
    result = CliRunner().invoke(main, ["features", str(bad_candles), option, value, *extra])
    _assert_user_error(result)


_CONFIG_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.fuzz
@fuzz_settings(default=40)
@given(
    document=st.one_of(
        st.dictionaries(
            st.sampled_from(["train_fraction", "folds", "seed", "execution", "risk", "training",
                             "junk"]),
            _CONFIG_VALUES, max_size=3,
        ),
        _CONFIG_VALUES,
    ),
    raw=st.one_of(st.none(), st.binary(max_size=20)),
)  # fmt: skip
def test_backtest_with_a_hostile_config_file_is_one_line_and_exit_2(
    bad_candles: Path, tmp_path_factory: pytest.TempPathFactory, document: object, raw: bytes | None
) -> None:
    folder = tmp_path_factory.mktemp("config")
    config = folder / "config.json"
    config.write_bytes(raw if raw is not None else json.dumps(document).encode())
    result = CliRunner().invoke(
        main, ["backtest", str(bad_candles), "--config", str(config), "--out", str(folder / "run")]
    )
    _assert_user_error(result)
    assert not (folder / "run").exists()


@pytest.mark.fuzz
@pytest.mark.fuzz_long
@fuzz_settings(default=10)
@given(
    args=st.sampled_from([
        ["features"], ["features", "/nonexistent.csv", "--d", "0.4"], ["backtest"],
        ["train"], ["report", "/nonexistent"], ["download"], ["nosuchcommand"],
    ]),
    hostile=st.lists(_NUMBER_TEXT.filter(lambda s: not s.startswith("-")), max_size=2),
)  # fmt: skip
def test_cli_in_a_child_process_with_hostile_arguments(args: list[str], hostile: list[str]) -> None:
    result = run_cli([*args, *hostile], timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len([x for x in result.stderr.splitlines() if x.startswith("Error")]) == 1, result.stderr


@pytest.mark.parametrize("field", ["stale_after_seconds", "halt_window_seconds"])
def test_a_sub_nanosecond_duration_is_refused_on_decoding(field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({field: 1e-10}, type=RiskConfig)

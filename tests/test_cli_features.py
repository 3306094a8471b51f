"""`colmena features` end to end on real candles, and its failure modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import colmena
from colmena.cli import main

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"


def test_features_with_fixed_d_writes_parquet_matching_numpy(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(
        main, ["features", str(shared_data_dir / BTC_2023), "--d", "0.4", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "30,240" in result.output  # rows
    table = pq.read_table(out)
    assert table.column_names == [
        "ts", "open", "high", "low", "close", "volume", "after_gap", "log_return", "ffd",
    ]  # fmt: skip
    close = table.column("close").to_numpy()
    log_return = table.column("log_return").to_numpy()
    assert np.isnan(log_return[0])
    np.testing.assert_allclose(log_return[1:], np.diff(np.log(close)), atol=1e-14)
    weights = colmena.fracdiff_weights(0.4, threshold=1e-4)
    ffd = table.column("ffd").to_numpy()
    assert np.all(np.isnan(ffd[: weights.size - 1]))
    expected = np.convolve(np.log(close), weights, mode="valid")
    np.testing.assert_allclose(ffd[weights.size - 1 :], expected, rtol=1e-9, atol=1e-12)
    assert not table.column("after_gap").to_numpy().any()  # this file has no gaps


def test_features_auto_d_reports_adf(shared_data_dir: Path) -> None:
    result = CliRunner().invoke(main, ["features", str(shared_data_dir / BTC_2023), "--auto-d"])
    assert result.exit_code == 0, result.output
    assert "(auto, ADF)" in result.output
    assert "ADF statistic" in result.output


def test_features_reports_gaps_of_real_2018_file(shared_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc2018.parquet"
    result = CliRunner().invoke(
        main,
        [
            "features",
            str(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet"),
            "--d",
            "0.5",
            "--window",
            "500",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3,992 gaps" in result.output
    after_gap = pq.read_table(out, columns=["after_gap"]).column(0).to_numpy()
    assert int(after_gap.sum()) == 3_992


def test_bad_file_fails_cleanly_and_leaves_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "open_time,open,high,low,close,volume\n"
        "2023-03-01 00:00:00+00:00,10,11,9,10,1\n"
        "2023-03-01 00:01:00+00:00,10,11,9,-10,1\n"
    )
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["features", str(bad), "--d", "0.4", "--out", str(out)])
    assert result.exit_code != 0
    assert "bad.csv" in result.output
    assert "close" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["features", str(tmp_path / "nope.parquet"), "--d", "0.4"])
    assert result.exit_code != 0
    assert "nope.parquet" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--d", "0.4", "--auto-d"],
        [],
        ["--d", "3"],
        ["--d", "0.4", "--window", "10", "--threshold", "0.001"],
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "x.csv"
    path.write_text("open_time,open,high,low,close,volume\n")
    result = CliRunner().invoke(main, ["features", str(path), *args])
    assert result.exit_code == 2, result.output


def test_info_prints_build(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0
    assert "simd_selected" in result.output

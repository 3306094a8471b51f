"""Self-contained HTML report of a backtest: figures (matplotlib, embedded PNG) and tables."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from colmena.backtest import BacktestRun

__all__ = ["render_html"]

MAX_POINTS = 4_000


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thin(n: int) -> slice:
    return slice(None, None, max(1, n // MAX_POINTS))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def render_html(run: BacktestRun) -> str:
    """The report as one HTML string with every figure inlined (no external files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import msgspec

    from colmena.backtest import ExecutionSettings, buy_and_hold_equity

    report = run.report
    eq = run.equity.to_pydict()
    ts = np.asarray(run.equity.column("timestamp").cast("int64").to_numpy()).astype(
        "datetime64[ns]"
    )
    equity = np.asarray(eq["equity"], dtype=float)
    close = run.bars.column("close").to_numpy()
    open_ = run.bars.column("open").to_numpy()
    execution = msgspec.convert(report["config"]["execution"], ExecutionSettings)
    bh = buy_and_hold_equity(open_, close, execution)
    k = _thin(len(equity))
    figures = []

    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(ts[k], equity[k], label="swarm", lw=1.2)
    ax.plot(ts[k], bh[k], label="buy and hold", lw=1.0, alpha=0.8)
    ax.set_ylabel("equity (quote)")
    ax.set_title("Equity, out of sample, net of fees and slippage")
    ax.legend()
    ax.grid(alpha=0.3)
    figures.append(("Equity against buy-and-hold", _png(fig)))

    fig, ax = plt.subplots(figsize=(10, 2.8))
    for series, label in ((equity, "swarm"), (bh, "buy and hold")):
        dd = 1 - series / np.maximum.accumulate(series)
        ax.fill_between(ts[k], -dd[k] * 100, 0, alpha=0.4, label=label)
    ax.set_ylabel("drawdown (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    figures.append(("Drawdown", _png(fig)))

    position = np.asarray(eq["position"], dtype=float)
    exposure = np.divide(position * close, equity, out=np.zeros_like(equity), where=equity > 0)
    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.plot(ts[k], exposure[k], lw=0.8)
    ax.set_ylabel("exposure (fraction of equity)")
    ax.grid(alpha=0.3)
    figures.append(("Position", _png(fig)))

    r = np.concatenate([[0.0], equity[1:] / equity[:-1] - 1])
    window = 1440
    if r.size > window:
        c1 = np.cumsum(np.insert(r, 0, 0.0))
        c2 = np.cumsum(np.insert(r * r, 0, 0.0))
        mean = (c1[window:] - c1[:-window]) / window
        var = np.maximum((c2[window:] - c2[:-window]) / window - mean**2, 1e-30)
        bars_per_year = 365 * 1440
        rolling = mean / np.sqrt(var) * math.sqrt(bars_per_year)
        rk = _thin(rolling.size)
        fig, ax = plt.subplots(figsize=(10, 2.8))
        ax.plot(ts[window - 1 :][rk], rolling[rk], lw=0.8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("Sharpe (annualized)")
        ax.set_title(f"Rolling Sharpe, {window}-bar window")
        ax.grid(alpha=0.3)
        figures.append(("Rolling Sharpe", _png(fig)))

    gens = [(f["fold"], g) for f in report["folds"] for g in f["generations"]]
    if gens:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for fold in sorted({f for f, _ in gens}):
            rows = [g for f, g in gens if f == fold]
            x = [g["generation"] for g in rows]
            a1.plot(x, [g["best_fitness"] for g in rows], label=f"fold {fold} best")
            a1.plot(x, [g["median_fitness"] for g in rows], ls="--", label=f"fold {fold} median")
            a2.plot(x, [g["entropy"] for g in rows], label=f"fold {fold}")
        a1.set_xlabel("generation")
        a1.set_ylabel("fitness")
        a1.legend(fontsize=7)
        a2.set_xlabel("generation")
        a2.set_ylabel("entropy (0..1)")
        a2.legend(fontsize=7)
        for a in (a1, a2):
            a.grid(alpha=0.3)
        figures.append(("Swarm fitness and entropy per generation", _png(fig)))

    m, b = report["metrics"], report["buy_and_hold"]
    metric_rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{_fmt(m.get(key))}</td><td>{_fmt(b.get(key))}</td></tr>"
        for key in m
    )
    var_rows = "".join(
        f"<tr><td>{html.escape(v['method'])}</td><td>{v['confidence']:.0%}</td>"
        f"<td>{_fmt(v['var'])}</td><td>{_fmt(v['expected_shortfall'])}</td></tr>"
        for v in report["value_at_risk"]
    )
    stress_rows = "".join(
        f"<tr><td>{html.escape(s['scenario'])}</td><td>{s['shock']:+.2%}</td>"
        f"<td>{_fmt(s['pnl'])}</td><td>{s['pnl_fraction']:+.2%}</td></tr>"
        for s in report["stress_tests"]
    )
    fold_rows = "".join(
        f"<tr><td>{f['fold']}</td><td>{f['train']}</td><td>{f['test']}</td>"
        f"<td>{len(f['generations'])}</td></tr>"
        for f in report["folds"]
    )
    figs = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
        for title, png in figures
    )
    data = report["data"]
    source = f"{html.escape(data['file'])} ({data['rows']:,} candles, sha256 {data['sha256']})"
    oos = (
        "out of sample"
        if report["out_of_sample"]
        else "NOT out of sample (checkpoint data overlaps)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colmena backtest</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>colmena backtest</h1>
<p>{source};
traded {data["traded_rows"]:,} bars from {data["first"]} to {data["last"]};
mode {html.escape(report["mode"])}, {oos}; seed {report["seed"]}.</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>swarm</th><th>buy and hold</th></tr>{metric_rows}</table>
{figs}
<h2>Walk-forward folds (bar ranges)</h2>
<table><tr><th>fold</th><th>train</th><th>test</th><th>generations</th></tr>{fold_rows}</table>
<h2>Value at Risk of the strategy (1-day horizon for Monte Carlo, per bar otherwise)</h2>
<table><tr><th>method</th><th>confidence</th><th>VaR</th><th>expected shortfall</th></tr>
{var_rows}</table>
<h2>Stress tests of the final position</h2>
<table><tr><th>scenario</th><th>shock</th><th>PnL</th><th>of equity</th></tr>{stress_rows}</table>
<h2>Events</h2><p>{html.escape(str(report["events"]))}</p>
</body></html>
"""

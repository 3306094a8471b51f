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


def _pct(value: Any) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:+.2%}"


#: Metrics shown side by side for the swarm and every baseline: (key, label, format).
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "pct"),
    ("net_pnl", "net PnL (quote)", "num"),
    ("gross_pnl", "gross PnL before costs (quote)", "num"),
    ("fees_paid", "fees (quote)", "num"),
    ("slippage_paid", "slippage and impact (quote)", "num"),
    ("borrow_paid", "borrow (quote)", "num"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe (daily, x sqrt 365)", "num"),
    ("sortino", "Sortino (daily, x sqrt 365)", "num"),
    ("annualized_volatility", "volatility (annualised)", "pct"),
    ("max_drawdown", "max drawdown", "pct"),
    ("max_drawdown_duration_days", "longest drawdown (days)", "num"),
    ("time_in_market", "time in market", "pct"),
    ("mean_gross_exposure", "mean gross exposure (of equity)", "pct"),
    ("turnover", "turnover (x mean equity)", "num"),
    ("n_fills", "fills", "num"),
    ("n_trades", "closed round trips", "num"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
)


def _cell(value: Any, kind: str) -> str:
    if kind == "pct":
        return _pct(value).lstrip("+") if value is not None and value >= 0 else _pct(value)
    return _fmt(float(value) if isinstance(value, (int, float)) else value)


def render_html(run: BacktestRun) -> str:
    """The report as one HTML string with every figure inlined (no external files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = run.report
    eq = run.equity.to_pydict()
    ts = np.asarray(run.equity.column("timestamp").cast("int64").to_numpy()).astype(
        "datetime64[ns]"
    )
    equity = np.asarray(eq["equity"], dtype=float)
    close = run.bars.column("close").to_numpy()
    curves = run.baseline_equity
    k = _thin(len(equity))
    figures = []

    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(ts[k], equity[k], label="swarm", lw=1.2)
    for name, label in (("buy_and_hold", "buy and hold"), ("momentum", "momentum")):
        if name in curves:
            ax.plot(ts[k], curves[name][k], label=label, lw=0.9, alpha=0.8)
    for f in report["folds"]:
        if f["test"]["first"]:
            ax.axvline(np.datetime64(f["test"]["first"].rstrip("Z")), color="grey", lw=0.5)
    ax.set_ylabel("equity (quote currency)")
    ax.set_title("Equity, out of sample, net of fees, slippage and borrow (grey: fold starts)")
    ax.legend()
    ax.grid(alpha=0.3)
    figures.append(("Equity against the baselines", _png(fig)))

    fig, ax = plt.subplots(figsize=(10, 2.8))
    series = [(equity, "swarm")]
    if "buy_and_hold" in curves:
        series.append((curves["buy_and_hold"], "buy and hold"))
    for values, label in series:
        dd = 1 - values / np.maximum.accumulate(values)
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

    from colmena.metrics import daily_equity

    close_ns = run.equity.column("timestamp").cast("int64").to_numpy()
    days, day_eq = daily_equity(np.asarray(close_ns, dtype=np.int64), equity)
    initial = report["metrics"]["initial_equity"]
    r = np.diff(np.concatenate([[initial], day_eq])) / np.concatenate([[initial], day_eq[:-1]])
    window = 30
    if r.size > window:
        c1 = np.cumsum(np.insert(r, 0, 0.0))
        c2 = np.cumsum(np.insert(r * r, 0, 0.0))
        mean = (c1[window:] - c1[:-window]) / window
        var = np.maximum((c2[window:] - c2[:-window]) / window - mean**2, 1e-30)
        rolling = mean / np.sqrt(var) * math.sqrt(365.0)
        day_ts = (days[window - 1 :] * 86_400).astype("datetime64[s]")
        fig, ax = plt.subplots(figsize=(10, 2.8))
        ax.plot(day_ts, rolling, lw=0.8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("Sharpe (annualised)")
        ax.set_title(f"Rolling Sharpe ratio of daily returns, {window}-day window")
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
        a1.set_ylabel("fitness (daily Sharpe, net)")
        a1.legend(fontsize=7)
        a2.set_xlabel("generation")
        a2.set_ylabel("entropy (0..1)")
        a2.legend(fontsize=7)
        for a in (a1, a2):
            a.grid(alpha=0.3)
        figures.append(("Swarm fitness and entropy per generation", _png(fig)))

    baselines = report["baselines"]
    names = [("swarm", report["metrics"])] + [(name, m) for name, m in baselines.items()]
    header = "".join(f"<th>{html.escape(name.replace('_', ' '))}</th>" for name, _ in names)
    metric_rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{_cell(m.get(key), kind)}</td>" for _, m in names)
        + "</tr>"
        for key, label, kind in METRIC_ROWS
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    warning_box = (
        f"<div class='warn'><b>Read this first</b><ul>{warnings}</ul></div>" if warnings else ""
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

    def gate_text(f: dict[str, Any]) -> str:
        g = f["gate"]
        if g is None:
            return "n/a"
        verdict = "traded" if f["traded"] else "gated flat"
        return html.escape(f"{verdict}: {g['reason']} (validation {g['net_return']:+.2%})")

    fold_rows = "".join(
        f"<tr><td>{f['fold']}</td>"
        f"<td>{f['train']['first'] or 'n/a'} .. {f['train']['last'] or 'n/a'}</td>"
        f"<td>{f['test']['first']} .. {f['test']['last']}</td><td>{gate_text(f)}</td>"
        f"<td>{_pct(f['metrics']['total_return'])}</td><td>{_pct(f['buy_and_hold_return'])}</td>"
        f"<td>{f['metrics']['n_fills']}</td>"
        f"<td>{_pct(f['metrics']['time_in_market'])}</td></tr>"
        for f in report["folds"]
    )
    regime_rows = "".join(
        f"<tr><td>{html.escape(g['regime'])}</td><td>{g['share_of_bars']:.1%}</td>"
        f"<td>{g['decisions']}</td><td>{_pct(math.expm1(g['swarm_log_return']))}</td>"
        f"<td>{_pct(math.expm1(g['buy_and_hold_log_return']))}</td>"
        f"<td>{g['time_in_market']:.1%}</td></tr>"
        for g in report["regimes"]
    )
    figs = "".join(
        f"<h2>{html.escape(title)}</h2>"
        f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
        for title, png in figures
    )
    lookback = baselines.get("momentum", {}).get("lookback_days", 30)
    otherwise = " and short otherwise" if report["market"] == "margin" else ", flat otherwise"
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
.warn {{ background: #fff4e5; border: 1px solid #f0a030; padding: 0.5em 1em; }}
</style></head><body>
<h1>colmena backtest</h1>
<p>{source};
traded {data["traded_rows"]:,} bars from {data["first"]} to {data["last"]};
mode {html.escape(report["mode"])}, {oos};
decisions every {html.escape(report["decision_interval"])};
{html.escape(report["market"])} market; seed {report["seed"]}.</p>
{warning_box}
<h2>Metrics: the swarm and the baselines (same executor, same costs)</h2>
<table><tr><th>metric</th>{header}</tr>{metric_rows}</table>
<p>Sharpe and Sortino from daily returns over calendar days; the baselines trade through the same
paper executor with the same fees, slippage and volume limits. Buy and hold exposure-matched holds
the swarm's mean gross exposure; momentum is long when the last {lookback:g}
days' return is positive{otherwise}.</p>
<h2>Walk-forward folds</h2>
<table><tr><th>fold</th><th>train</th><th>test</th><th>validation gate</th><th>return</th>
<th>buy and hold</th><th>fills</th><th>time in market</th></tr>{fold_rows}</table>
<h2>By market regime (regime in force at each bar)</h2>
<table><tr><th>regime</th><th>bars</th><th>decisions</th><th>swarm</th><th>buy and hold</th>
<th>time in market</th></tr>{regime_rows}</table>
{figs}
<h2>Value at Risk of the strategy's daily returns</h2>
<table><tr><th>method</th><th>confidence</th><th>VaR</th><th>expected shortfall</th></tr>
{var_rows}</table>
<h2>Stress tests of the final position</h2>
<table><tr><th>scenario</th><th>shock</th><th>PnL</th><th>of equity</th></tr>{stress_rows}</table>
<h2>Events</h2><p>{html.escape(str(report["events"]))}</p>
</body></html>
"""

"""The backtest's tear sheet: one self-contained HTML file with interactive plotly charts.

Everything a quant checks before trusting a number, in the order they check it: what would
mislead (warnings first), the swarm next to its baselines, costs against gross profit, the
benchmark-relative figures, equity on a log scale, price with every fill, drawdowns and their
periods, exposure and the risk state over time ("why did it not trade"), monthly returns, the
round trips, the walk-forward folds with their validation gates, the market regimes, Value at Risk
and stress tests, and the events. Charts are plotly (zoom, hover, toggle series); plotly.js is
inlined once, so the file opens offline and anywhere.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from colmena.backtest.engine import BacktestRun

__all__ = ["render_html"]

#: Points per chart line (longer series are thinned evenly).
MAX_POINTS: Final = 4_000
#: Round trips listed in full (the rest are in trades.parquet).
MAX_TRADE_ROWS: Final = 500
GAP: Final = "&ndash;"  # an undefined value is shown as a gap (a dash), never as 0

#: Metrics shown side by side for the swarm and every baseline: (key, label, format).
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "signed"),
    ("net_pnl", "net PnL (quote)", "money"),
    ("gross_pnl", "gross PnL before costs (quote)", "money"),
    ("fees_paid", "fees (quote)", "money"),
    ("slippage_paid", "slippage and impact (quote)", "money"),
    ("borrow_paid", "borrow (quote)", "money"),
    ("cagr", "CAGR", "signed"),
    ("sharpe", "Sharpe (daily, x sqrt 365)", "ratio"),
    ("sortino", "Sortino (daily, x sqrt 365)", "ratio"),
    ("annualized_volatility", "volatility (annualised)", "pct"),
    ("max_drawdown", "max drawdown", "pct"),
    ("max_drawdown_duration_days", "longest drawdown (days)", "ratio"),
    ("time_in_market", "time in market", "pct"),
    ("mean_gross_exposure", "mean gross exposure (of equity)", "pct"),
    ("turnover", "turnover (x mean equity)", "ratio"),
    ("n_fills", "fills", "count"),
    ("n_trades", "closed round trips", "count"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "ratio"),
)
#: Names of the codes of drawdown_threshold, alert and error events.
EVENT_CODES: Final = {
    "drawdown_threshold": {
        1: "ladder 5%: pause",
        2: "ladder 10%: pause",
        3: "ladder 15%: stop and flatten",
        4: "kill switch: halt",
        5: "daily loss: pause until the next UTC day",
        6: "ladder re-armed after a stop",
    },
    "alert": {
        0: "drawdown warning",
        1: "drawdown critical",
        2: "daily PnL warning",
        3: "daily PnL critical",
        4: "data feed silent",
    },
    "error": {0: "no volume to fill", 1: "bad price"},
}
MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _defined(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any, kind: str) -> str:
    """A value in a consistent format: percentages, thousands separators, gaps for undefined."""
    if not _defined(value):
        return GAP
    if kind == "signed":
        return f"{value:+.2%}"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "count":
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _thin(n: int) -> slice:
    return slice(None, None, max(1, -(-n // MAX_POINTS)))


def _table(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


class _Figures:
    """Plotly figures as HTML fragments; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []

    def add(self, title: str, fig: Any, height: int = 360) -> None:
        fig.update_layout(
            title=title,
            height=height,
            margin={"l": 60, "r": 20, "t": 50, "b": 40},
            template="plotly_white",
            legend={"orientation": "h", "y": -0.15},
        )
        fragment = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.parts,
            config={"displaylogo": False, "responsive": True},
        )
        self.parts.append((title, fragment))


def _per_day(times: Any, labels: list[str]) -> tuple[Any, dict[str, Any]]:
    """Days present in ``times`` (datetime64) and, per label, its count on each of them."""
    days, day_index = np.unique(np.asarray(times).astype("datetime64[D]"), return_inverse=True)
    names, label_index = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    table = np.zeros((names.size, days.size), dtype=np.int64)
    np.add.at(table, (label_index, day_index), 1)
    return days, {str(name): table[i] for i, name in enumerate(names)}


def _charts(run: BacktestRun) -> _Figures:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    report = run.report
    figures = _Figures()
    eq = run.equity
    ts = np.asarray(eq.column("mark_time").cast("int64").to_numpy()).astype("datetime64[ns]")
    equity = np.asarray(eq.column("equity").to_numpy(), dtype=float)
    close = np.asarray(run.bars.column("close").to_numpy(), dtype=float)
    k = _thin(ts.size)

    fig = go.Figure()
    fig.add_scatter(x=ts[k], y=equity[k], name="swarm", line={"width": 2})
    for name, curve in run.baseline_equity.items():
        fig.add_scatter(x=ts[k], y=curve[k], name=name.replace("_", " "), line={"width": 1})
    for f in report["folds"]:
        if f["test"]["first"]:
            fig.add_vline(x=f["test"]["first"].rstrip("Z"), line={"color": "grey", "width": 1})
    fig.update_yaxes(title="equity (quote)")
    fig.update_layout(
        updatemenus=[
            {
                "buttons": [
                    {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                    {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
                ],
                "x": 1.0,
                "xanchor": "right",
                "y": 1.18,
                "direction": "left",
                "type": "buttons",
            }
        ]
    )
    figures.add("Equity, net of every cost, against the baselines (grey: fold starts)", fig)

    fig = go.Figure()
    fig.add_scatter(x=ts[k], y=close[k], name="close", line={"width": 1, "color": "#555"})
    fills = run.fills
    if fills.num_rows:
        f_ts = np.asarray(fills.column("fill_time").cast("int64").to_numpy()).astype(
            "datetime64[ns]"
        )
        price = np.asarray(fills.column("price").to_numpy(), dtype=float)
        side = np.array(fills.column("side").to_pylist(), dtype=object)
        for name, symbol, color in (
            ("buy", "triangle-up", "green"),
            ("sell", "triangle-down", "red"),
        ):
            mine = side == name
            fig.add_scatter(
                x=f_ts[mine], y=price[mine], mode="markers", name=f"{name} fills",
                marker={"symbol": symbol, "color": color, "size": 7},
            )  # fmt: skip
    fig.update_yaxes(title="price (quote)")
    figures.add("Price with every fill (zoom in)", fig)

    fig = go.Figure()
    series = [("swarm", equity)] + [
        (n, c) for n, c in run.baseline_equity.items() if n == "buy_and_hold"
    ]
    for name, values in series:
        dd = 1.0 - values / np.maximum.accumulate(values)
        fig.add_scatter(x=ts[k], y=-dd[k] * 100, fill="tozeroy", name=name.replace("_", " "))
    fig.update_yaxes(title="drawdown (%)")
    figures.add("Drawdown", fig, height=300)

    position = np.asarray(eq.column("position").to_numpy(), dtype=float)
    exposure = np.divide(position * close, equity, out=np.zeros_like(equity), where=equity > 0)
    fig = go.Figure()
    fig.add_scatter(x=ts[k], y=exposure[k] * 100, name="exposure", line={"width": 1})
    fig.update_yaxes(title="exposure (% of equity)")
    figures.add("Exposure over time", fig, height=280)

    # Risk state and verdicts per day: why the swarm did (not) trade.
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("trading state (bars per day)",
                                        "decisions per day by verdict"))  # fmt: skip
    days, state_counts = _per_day(ts, eq.column("trading_state").to_pylist())
    for state in ("ACTIVE", "REDUCING", "PAUSED", "HALTED"):
        if state in state_counts:
            fig.add_bar(x=days, y=state_counts[state], name=state, row=1, col=1)
    decisions = run.decisions
    if decisions.num_rows:
        opened = np.asarray(decisions.column("bar_open_time").cast("int64").to_numpy())
        d_days, verdict_counts = _per_day(
            opened.astype("datetime64[ns]"), decisions.column("verdict").to_pylist()
        )
        for verdict, counts in sorted(verdict_counts.items()):
            fig.add_bar(x=d_days, y=counts, name=verdict, row=2, col=1)
    fig.update_layout(barmode="stack")
    figures.add("Trading state and risk verdicts over time", fig, height=480)

    from colmena.analysis.tearsheet import daily_returns

    initial = report["metrics"]["initial_equity"]
    close_ns = np.asarray(eq.column("mark_time").cast("int64").to_numpy(), dtype=np.int64)
    daily = daily_returns(close_ns, equity, initial)
    fig = go.Figure()
    fig.add_histogram(x=daily.to_numpy() * 100, name="swarm", opacity=0.7, nbinsx=60)
    if "buy_and_hold" in run.baseline_equity:
        bench = daily_returns(close_ns, run.baseline_equity["buy_and_hold"], initial)
        fig.add_histogram(x=bench.to_numpy() * 100, name="buy and hold", opacity=0.5, nbinsx=60)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="daily return (%)")
    figures.add("Distribution of daily returns", fig, height=300)

    window = 30
    r = daily.to_numpy()
    if r.size > window:
        c1 = np.cumsum(np.insert(r, 0, 0.0))
        c2 = np.cumsum(np.insert(r * r, 0, 0.0))
        mean = (c1[window:] - c1[:-window]) / window
        var = np.maximum((c2[window:] - c2[:-window]) / window - mean**2, 1e-30)
        rolling = mean / np.sqrt(var) * math.sqrt(365.0)
        fig = go.Figure()
        fig.add_scatter(x=daily.index[window - 1 :], y=rolling, name="rolling Sharpe")
        fig.add_hline(y=0, line={"color": "black", "width": 1})
        figures.add(f"Rolling Sharpe ratio of daily returns, {window}-day window", fig, height=280)

    gens = [(f["fold"], g) for f in report["folds"] for g in f["generations"]]
    if gens:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("fitness (daily Sharpe, net)",
                                                            "entropy (0..1)"))  # fmt: skip
        for fold in sorted({f for f, _ in gens}):
            rows = [g for f, g in gens if f == fold]
            x = [g["generation"] for g in rows]
            fig.add_scatter(x=x, y=[g["best_fitness"] for g in rows], name=f"fold {fold} best",
                            row=1, col=1)  # fmt: skip
            fig.add_scatter(
                x=x,
                y=[g["median_fitness"] for g in rows],
                name=f"fold {fold} median",
                line={"dash": "dash"},
                row=1,
                col=1,
            )
            fig.add_scatter(x=x, y=[g["entropy"] for g in rows], name=f"fold {fold} entropy",
                            row=1, col=2)  # fmt: skip
        figures.add("Swarm fitness and entropy per generation", fig, height=320)
    return figures


def _monthly_table(monthly: list[dict[str, Any]]) -> str:
    if not monthly:
        return f"<p>{GAP}</p>"
    years = sorted({m["year"] for m in monthly})
    rows = []
    for year in years:
        values = {m["month"]: m["return"] for m in monthly if m["year"] == year}
        total = float(np.prod([1.0 + v for v in values.values()]) - 1.0)
        rows.append(
            [str(year)]
            + [_cell(values.get(i + 1), "signed") for i in range(12)]
            + [_cell(total, "signed")]
        )
    return _table(["year", *MONTHS, "year"], rows)


def _trade_tables(run: BacktestRun) -> str:
    stats = run.report["tear_sheet"]["trades"]
    rows = [
        ["all", _cell(stats["count"], "count"), _cell(stats["win_rate"], "pct"),
         _cell(stats["average_pnl"], "money")],
        ["long", _cell(stats["long"]["count"], "count"), _cell(stats["long"]["win_rate"], "pct"),
         _cell(stats["long"]["pnl"], "money")],
        ["short", _cell(stats["short"]["count"], "count"),
         _cell(stats["short"]["win_rate"], "pct"), _cell(stats["short"]["pnl"], "money")],
    ]  # fmt: skip
    summary = _table(["round trips", "count", "win rate", "PnL (quote; all: average)"], rows)
    extra = _table(
        ["best", "worst", "max consecutive losses", "average holding (hours)", "exit reasons"],
        [[
            _cell(stats["best"], "money"), _cell(stats["worst"], "money"),
            _cell(stats["max_consecutive_losses"], "count"),
            _cell(stats["average_holding_hours"], "ratio"),
            html.escape(", ".join(f"{k}: {v}" for k, v in stats["exit_reasons"].items())) or GAP,
        ]],
    )  # fmt: skip
    trades = run.trades
    if trades is None or trades.num_rows == 0:
        return summary + extra + "<p>No round trip was closed.</p>"
    t = trades.to_pydict()
    n = trades.num_rows
    shown = range(min(n, MAX_TRADE_ROWS))
    listing = _table(
        ["entry", "exit", "side", "size", "entry price", "exit price", "PnL", "return", "fees",
         "hours", "exit reason", "fold"],
        [[
            str(t["entry_time"][i])[:19], str(t["exit_time"][i])[:19], t["side"][i],
            f"{t['quantity'][i]:,.6g}", _cell(t["entry_price"][i], "money"),
            _cell(t["exit_price"][i], "money"), _cell(t["pnl"][i], "money"),
            _cell(t["return"][i], "signed"), _cell(t["fees"][i], "money"),
            _cell(t["holding_hours"][i], "ratio"), t["exit_reason"][i], str(t["fold"][i]),
        ] for i in shown],
        caption=f"{min(n, MAX_TRADE_ROWS):,} of {n:,} round trips (all of them in trades.parquet)",
    )  # fmt: skip
    return summary + extra + listing


def _events_table(run: BacktestRun) -> str:
    from colmena import _core

    events = run.events.to_pydict()
    states = _core.trading_state_names()
    counts: dict[tuple[str, str], int] = {}
    for kind, code in zip(events["type"], events["code"], strict=True):
        if kind == "regime_changed":
            detail = f"state -> {states[code]}"
        elif kind == "trade_executed":
            detail = "fill"
        else:
            detail = EVENT_CODES.get(kind, {}).get(code, str(code))
        counts[(kind, detail)] = counts.get((kind, detail), 0) + 1
    rows = [[html.escape(k.replace("_", " ")), html.escape(d), f"{c:,}"]
            for (k, d), c in sorted(counts.items())]  # fmt: skip
    return _table(["event", "what", "count"], rows) if rows else "<p>No events.</p>"


def render_html(run: BacktestRun) -> str:
    """The tear sheet as one HTML string (plotly.js inlined; no external file or request)."""
    report = run.report
    sheet = report["tear_sheet"]
    figures = _charts(run)
    names = [("swarm", report["metrics"]), *report["baselines"].items()]
    metrics_table = _table(
        ["metric"] + [n.replace("_", " ") for n, _ in names],
        [[html.escape(label)] + [_cell(m.get(key), kind) for _, m in names]
         for key, label, kind in METRIC_ROWS],
    )  # fmt: skip
    costs = sheet["costs"]
    costs_table = _table(
        ["gross PnL", "costs (fees, slippage, borrow)", "net PnL", "costs / |gross|"],
        [[_cell(costs["gross_pnl"], "money"), _cell(costs["costs"], "money"),
          _cell(costs["net_pnl"], "money"), _cell(costs["cost_share_of_gross"], "pct")]],
    )  # fmt: skip
    bench = sheet["benchmark"]
    bench_table = _table(
        ["alpha (annualised)", "beta", "correlation", "tracking error", "information ratio",
         "up capture", "down capture"],
        [[_cell(bench["alpha"], "signed"), _cell(bench["beta"], "ratio"),
          _cell(bench["correlation"], "ratio"), _cell(bench["tracking_error"], "pct"),
          _cell(bench["information_ratio"], "ratio"), _cell(bench["up_capture"], "ratio"),
          _cell(bench["down_capture"], "ratio")]],
        caption="daily returns of the swarm against buy-and-hold (empyrical)",
    )  # fmt: skip
    drawdowns = _table(
        ["peak", "trough", "recovery", "depth", "days"],
        [[p["peak"], p["trough"], p["recovery"] or "not recovered", _cell(p["depth"], "pct"),
          _cell(p["days"], "ratio")] for p in sheet["drawdown_periods"]],
    )  # fmt: skip

    def gate_text(f: dict[str, Any]) -> str:
        g = f["gate"]
        if g is None:
            return GAP
        verdict = "traded" if f["traded"] else "gated flat"
        return html.escape(f"{verdict}: {g['reason']} (validation {g['net_return']:+.2%})")

    folds = _table(
        ["fold", "train", "test", "validation gate", "return", "buy and hold", "fills",
         "time in market"],
        [[str(f["fold"]),
          f"{f['train']['first'] or GAP} .. {f['train']['last'] or GAP}",
          f"{f['test']['first']} .. {f['test']['last']}", gate_text(f),
          _cell(f["metrics"]["total_return"], "signed"),
          _cell(f["buy_and_hold_return"], "signed"), _cell(f["metrics"]["n_fills"], "count"),
          _cell(f["metrics"]["time_in_market"], "pct")] for f in report["folds"]],
    )  # fmt: skip
    regimes = _table(
        ["regime", "bars", "decisions", "swarm", "buy and hold", "time in market"],
        [[html.escape(g["regime"]), _cell(g["share_of_bars"], "pct"),
          _cell(g["decisions"], "count"), _cell(math.expm1(g["swarm_log_return"]), "signed"),
          _cell(math.expm1(g["buy_and_hold_log_return"]), "signed"),
          _cell(g["time_in_market"], "pct")] for g in report["regimes"]],
    )  # fmt: skip
    var_table = _table(
        ["method", "confidence", "horizon", "VaR", "expected shortfall"],
        [[html.escape(v["method"]), f"{v['confidence']:.0%}", report["value_at_risk_horizon"],
          _cell(v["var"], "pct"), _cell(v["expected_shortfall"], "pct")]
         for v in report["value_at_risk"]],
    )  # fmt: skip
    largest = sheet["largest_position"]
    stress_table = _table(
        ["scenario", "shock", "PnL (quote)", "of equity"],
        [[html.escape(s["scenario"]), _cell(s["shock"], "signed"), _cell(s["pnl"], "money"),
          _cell(s["pnl_fraction"], "signed")] for s in report["stress_tests"]],
        caption=f"the largest position held: {largest['position']:,.6g} at {largest['time']}",
    )  # fmt: skip
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    warning_box = (
        f"<div class='warn'><b>Read this first</b><ul>{warnings}</ul></div>" if warnings else ""
    )
    lookback = report["baselines"].get("momentum", {}).get("lookback_days", 30)
    otherwise = " and short otherwise" if report["market"] == "margin" else ", flat otherwise"
    data = report["data"]
    execution = report["config"]["execution"]
    source = f"{html.escape(data['file'])} ({data['rows']:,} candles, sha256 {data['sha256']})"
    oos = (
        "out of sample"
        if report["out_of_sample"]
        else "NOT out of sample (checkpoint data overlaps)"
    )
    charts = {title: fragment for title, fragment in figures.parts}

    def chart(prefix: str) -> str:
        return "".join(
            f"<div class='chart'>{fragment}</div>"
            for title, fragment in charts.items()
            if title.startswith(prefix)
        )

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>colmena backtest</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
caption {{ caption-side: bottom; font-size: 0.85em; color: #666; text-align: left; }}
.warn {{ background: #fff4e5; border: 1px solid #f0a030; padding: 0.5em 1em; }}
.chart {{ margin: 1em 0; }}
</style></head><body>
<h1>colmena backtest</h1>
<p>{source};
traded {data["traded_rows"]:,} bars from {data["first"]} to {data["last"]};
mode {html.escape(report["mode"])}, {oos};
decisions every {html.escape(report["decision_interval"])};
{html.escape(report["market"])} market; starting capital {execution["initial_cash"]:,.0f};
fee {execution["fee_bps"]:g} bps, slippage {execution["slippage_bps"]:g} bps;
seed {report["seed"]}.</p>
{warning_box}
<h2>The swarm and the baselines (same executor, same costs)</h2>
{metrics_table}
<p>Sharpe and Sortino from daily returns over calendar days; undefined values are shown as
{GAP}. Buy and hold exposure-matched holds the swarm's mean gross exposure over the period (a
benchmark chosen with hindsight); momentum is long when the last {lookback:g} days' return is
positive{otherwise}.</p>
<h2>Costs</h2>
{costs_table}
<h2>Against buy-and-hold</h2>
{bench_table}
{chart("Equity")}
{chart("Price")}
{chart("Drawdown")}
<h3>Deepest drawdowns</h3>
{drawdowns}
{chart("Exposure")}
{chart("Trading state")}
<h2>Monthly returns</h2>
{_monthly_table(sheet["monthly_returns"])}
{chart("Distribution")}
{chart("Rolling")}
<h2>Round trips</h2>
{_trade_tables(run)}
<h2>Walk-forward folds</h2>
{folds}
{chart("Swarm fitness")}
<h2>By market regime (regime in force at each bar)</h2>
{regimes}
<h2>Value at Risk of the strategy's daily returns</h2>
{var_table}
<h2>Stress tests</h2>
{stress_table}
<h2>Events</h2>
{_events_table(run)}
</body></html>
"""

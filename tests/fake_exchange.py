"""A local HTTP server speaking Binance's public REST format (``/api/v3/exchangeInfo``,
``/api/v3/klines``), for tests of the exchange code through a real ccxt client: no network, faults
injected at points the test chooses, and a clock the test sets (imported with the tests folder
on sys.path)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

MINUTE_MS = 60_000


def _market(base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": base + quote, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False, "permissions": ["SPOT"],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000",
             "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000",
             "stepSize": "0.00001"},
        ],
    }  # fmt: skip


def exchange_info(symbols: list[str]) -> dict[str, Any]:
    """Binance's ``exchangeInfo`` answer listing the spot markets ``symbols`` (``"BTC/USDT"``)."""
    return {
        "timezone": "UTC",
        "serverTime": 0,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [_market(*s.split("/")) for s in symbols],
    }


#: The answer for the one market BTC/USDT.
EXCHANGE_INFO = exchange_info(["BTC/USDT"])


def kline(open_ms: int, o: float, h: float, lo: float, c: float, v: float) -> list[object]:
    """One Binance kline row (prices and volume as strings, as Binance sends them)."""
    return [open_ms, repr(o), repr(h), repr(lo), repr(c), repr(v), open_ms + MINUTE_MS - 1,
            "0", 1, "0", "0", "0"]  # fmt: skip


class FakeBinance:
    """Serves ``exchangeInfo`` and ``klines`` of one or several markets, with injected faults.

    Parameters
    ----------
    klines : list of kline rows, or dict of symbol -> list of kline rows
        Ascending open times (ms). A list is the market BTC/USDT.

    Attributes
    ----------
    now_ms : int or None
        The exchange's clock (ms since the epoch): a request without ``startTime`` gets the
        last ``limit`` klines that opened at or before it (the newest one still forming, as
        Binance does). None: every kline.
    rewrite : callable or None
        ``rewrite(symbol, rows)`` returns the rows to send instead (bad candles, repeats).
    fail_next : int
        The next this many kline requests get ``fail_status``.
    fail_always : bool
        Every kline request fails with ``fail_status`` (an exchange that stays down).
    fail_status, fail_code : int
        HTTP status and Binance error code of a failure (-1003, "too many requests", is a
        rate limit to ccxt; -1121, "invalid symbol", is not worth retrying).
    requests : list of dict
        The query of every kline request, in order.
    delay_seconds : float
        Every kline request is answered this much later (a slow exchange; past the client's
        timeout, a silent one).
    """

    def __init__(self, klines: list[list[object]] | dict[str, list[list[object]]]) -> None:
        self.markets = {"BTC/USDT": klines} if isinstance(klines, list) else dict(klines)
        self.ids = {s.replace("/", ""): s for s in self.markets}
        self.klines = next(iter(self.markets.values()))
        self.open_times = {
            s: np.array([k[0] for k in rows], dtype=np.int64) for s, rows in self.markets.items()
        }
        self.info = exchange_info(list(self.markets))
        self.now_ms: int | None = None
        self.rewrite: Callable[[str, list[list[object]]], list[list[object]]] | None = None
        self.requests: list[dict[str, str]] = []
        self.fail_next = 0
        self.fail_always = False
        self.fail_status = 500
        self.fail_code = -1003
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/api/v3/exchangeInfo":
                    self.reply(200, server.info)
                elif url.path == "/api/v3/klines":
                    if server.delay_seconds > 0:
                        time.sleep(server.delay_seconds)
                    status, body = server.answer(query)
                    self.reply(status, body)
                else:
                    self.reply(404, {"code": -1, "msg": "not found"})

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, query: dict[str, str]) -> tuple[int, object]:
        """Status and body of one kline request."""
        with self._lock:
            self.requests.append(query)
            if self.fail_always or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                return self.fail_status, {"code": self.fail_code, "msg": "try later"}
            symbol = self.ids.get(query.get("symbol", ""))
            if symbol is None:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            rows, times = self.markets[symbol], self.open_times[symbol]
            limit = int(query.get("limit", 500))
            if "startTime" in query:
                i = int(np.searchsorted(times, int(query["startTime"])))
                out = rows[i : i + limit]
            else:
                end = len(rows) if self.now_ms is None else int(
                    np.searchsorted(times, self.now_ms, side="right")
                )  # fmt: skip
                out = rows[max(0, end - limit) : end]
            if self.rewrite is not None:
                out = self.rewrite(symbol, list(out))
            return 200, out

    def close(self) -> None:
        """Stop the server."""
        self.httpd.shutdown()
        self.httpd.server_close()

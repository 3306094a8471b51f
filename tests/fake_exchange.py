"""A local HTTP server speaking Binance's REST format, for tests of the exchange code through a
real ccxt client: no network, faults injected at points the test chooses, and a clock the test
sets (imported with the tests folder on sys.path).

Public: ``/api/v3/exchangeInfo``, ``/api/v3/klines``. Signed (a spot account, for the venue
execution of :mod:`colmena.live.venue`): ``POST/GET/DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``GET /api/v3/account``. Any key and signature are accepted, but a
signed request must carry the ``X-MBX-APIKEY`` header and the ``timestamp`` and ``signature``
fields (Binance's -2014/-1102 otherwise). Market orders fill at once at :attr:`FakeBinance.prices`
against :attr:`FakeBinance.balances`; partial fills, rejects, duplicate client order ids and lost
replies are injected through the attributes documented on the class.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
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

    The spot account (order endpoints; every knob is read under the server's lock):

    balances : dict of asset -> [free, locked]
        The account's balances (``GET /api/v3/account``), moved by every fill.
    prices : dict of symbol -> float
        The price market orders fill at (default: the last kline's close of the symbol).
    fee_bps : float
        Commission on each fill, in the quote asset, basis points of its notional.
    min_notional : float
        Smallest order notional (quote) accepted; smaller orders are rejected as Binance's
        ``Filter failure: NOTIONAL`` (-1013).
    fill_ratio : float
        Fraction of each market order's quantity that fills (1: all).
    leave_open : bool
        With ``fill_ratio < 1``: the order stays ``PARTIALLY_FILLED`` and open (listed by
        ``openOrders`` until cancelled) instead of ending ``EXPIRED``.
    reject_next : list of (int, int, str)
        The next order placements get these answers (HTTP status, Binance code, message), one
        each, without placing anything (e.g. ``(400, -2010, "Account has insufficient balance
        for requested action.")``).
    fail_orders_next : int
        The next this many signed requests (any order or account endpoint) get HTTP 503
        without doing anything (a transient failure).
    lose_next : int
        The next this many order placements are carried out (the order exists, the balances
        moved) and then their reply is lost: ``lose_mode = "drop"`` closes the connection
        without an answer; ``"delay"`` holds the answer until :attr:`release` is set (or
        ``hold_seconds`` pass), past the client's timeout.
    hide_next_lookups : int
        The next this many order lookups (``GET /api/v3/order``) answer "Order does not exist"
        whatever the venue holds (so that a placement meets the duplicate refusal).
    orders : dict of int -> dict
        Every order placed, by ``orderId`` (Binance's order JSON).
    order_posts : int
        Placement requests received (``POST /api/v3/order``), placed or not.
    placed : list of str
        The client order id of every order placed, in order.
    signed_requests : list of (str, str)
        Method and path of every signed request, in order.
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
        # The spot account.
        self.balances: dict[str, list[float]] = {}
        self.prices: dict[str, float] = {
            s: float(str(rows[-1][4])) for s, rows in self.markets.items() if rows
        }
        self.fee_bps = 0.0
        self.min_notional = 0.0
        self.fill_ratio = 1.0
        self.leave_open = False
        self.reject_next: list[tuple[int, int, str]] = []
        self.fail_orders_next = 0
        self.hide_next_lookups = 0
        self.lose_next = 0
        self.lose_mode: Literal["drop", "delay"] = "drop"
        self.release = threading.Event()
        self.hold_seconds = 10.0
        self.orders: dict[int, dict[str, Any]] = {}
        self.client_ids: dict[str, int] = {}
        self.order_posts = 0
        self.placed: list[str] = []
        self.signed_requests: list[tuple[str, str]] = []
        self._next_order_id = 1
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
                    self.signed("GET", url.path, query)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(length).decode() if length else ""
                query.update({k: v[0] for k, v in parse_qs(form).items()})
                self.signed("POST", url.path, query)

            def do_DELETE(self) -> None:
                url = urlsplit(self.path)
                self.signed("DELETE", url.path, {k: v[0] for k, v in parse_qs(url.query).items()})

            def signed(self, method: str, path: str, query: dict[str, str]) -> None:
                answer = server.account_request(
                    method, path, query, self.headers.get("X-MBX-APIKEY")
                )
                if answer.lost == "drop":
                    self.close_connection = True  # placed; the reply never comes
                    return
                if answer.lost == "delay":
                    server.release.wait(server.hold_seconds)
                with contextlib.suppress(OSError):  # the client may have given up waiting
                    self.reply(answer.status, answer.body)

            def reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # The client may have given up first (its timeout): what a slow exchange sees.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
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

    # ------------------------------------------------------------------ the spot account

    def balance(self, asset: str) -> float:
        """Free plus locked balance of ``asset``."""
        with self._lock:
            free, locked = self.balances.get(asset, [0.0, 0.0])
            return free + locked

    def open_orders(self) -> list[dict[str, Any]]:
        """The orders still open (``NEW`` or ``PARTIALLY_FILLED``)."""
        with self._lock:
            return [dict(o) for o in self.orders.values() if o["status"] in _OPEN]

    def account_request(
        self, method: str, path: str, query: dict[str, str], api_key: str | None
    ) -> _Answer:
        """The answer to one signed request (run on the server's threads)."""
        with self._lock:
            if path not in _SIGNED:
                return _Answer(404, {"code": -1, "msg": "not found"})
            if not api_key:
                return _Answer(401, {"code": -2014, "msg": "API-key format invalid."})
            missing = [f for f in ("timestamp", "signature") if f not in query]
            if missing:
                return _Answer(
                    400, {"code": -1102, "msg": f"Mandatory parameter '{missing[0]}' was not sent."}
                )
            self.signed_requests.append((method, path))
            if self.fail_orders_next > 0:
                self.fail_orders_next -= 1
                return _Answer(
                    503, {"code": -1001, "msg": "Internal error; unable to process your request."}
                )
            if path == "/api/v3/account":
                return _Answer(200, self._account())
            if path == "/api/v3/openOrders":
                symbol = self.ids.get(query.get("symbol", ""))
                rows = [
                    _public(o) for o in self.orders.values()
                    if o["status"] in _OPEN and (symbol is None or o["symbol"] == query["symbol"])
                ]  # fmt: skip
                return _Answer(200, rows)
            if method == "POST":
                return self._place(query)
            order = self._find(query)
            if method == "GET" and self.hide_next_lookups > 0:
                self.hide_next_lookups -= 1
                order = None  # a lookup that does not see the order (yet)
            if order is None:
                return _Answer(400, {"code": -2013, "msg": "Order does not exist."})
            if method == "DELETE":
                if order["status"] not in _OPEN:
                    return _Answer(400, {"code": -2011, "msg": "Unknown order sent."})
                self._cancel(order)
            return _Answer(200, _public(order))

    def _account(self) -> dict[str, Any]:
        return {
            "makerCommission": 0, "takerCommission": 0, "buyerCommission": 0,
            "sellerCommission": 0, "canTrade": True, "canWithdraw": True, "canDeposit": True,
            "updateTime": 0, "accountType": "SPOT", "permissions": ["SPOT"],
            "balances": [
                {"asset": a, "free": _num(f), "locked": _num(lk)}
                for a, (f, lk) in sorted(self.balances.items())
            ],
        }  # fmt: skip

    def _find(self, query: dict[str, str]) -> dict[str, Any] | None:
        if "origClientOrderId" in query:
            order_id = self.client_ids.get(query["origClientOrderId"])
        else:
            order_id = int(query["orderId"]) if query.get("orderId", "").isdigit() else None
        order = self.orders.get(order_id) if order_id is not None else None
        if order is not None and order["symbol"] != query.get("symbol"):
            return None
        return order

    def _place(self, query: dict[str, str]) -> _Answer:
        self.order_posts += 1
        for field in ("symbol", "side", "type", "quantity", "newClientOrderId"):
            if field not in query:
                return _Answer(
                    400, {"code": -1102, "msg": f"Mandatory parameter '{field}' was not sent."}
                )
        symbol = self.ids.get(query["symbol"])
        if symbol is None:
            return _Answer(400, {"code": -1121, "msg": "Invalid symbol."})
        if query["type"] != "MARKET":
            return _Answer(400, {"code": -1116, "msg": "Invalid orderType."})
        client_id = query["newClientOrderId"]
        if client_id in self.client_ids:  # Binance refuses a client order id it knows
            return _Answer(400, {"code": -2010, "msg": "Duplicate order sent."})
        if self.reject_next:
            status, code, msg = self.reject_next.pop(0)
            return _Answer(status, {"code": code, "msg": msg})
        base, quote = symbol.split("/")
        quantity = float(query["quantity"])
        price = self.prices[symbol]
        if not quantity > 0:
            return _Answer(400, {"code": -1013, "msg": "Invalid quantity."})
        if quantity * price < self.min_notional:
            return _Answer(400, {"code": -1013, "msg": "Filter failure: NOTIONAL"})
        buy = query["side"] == "BUY"
        spend_asset, need = (quote, quantity * price) if buy else (base, quantity)
        if self.balances.get(spend_asset, [0.0, 0.0])[0] < need - 1e-12:
            return _Answer(
                400,
                {"code": -2010, "msg": "Account has insufficient balance for requested action."},
            )
        filled = quantity * self.fill_ratio
        fee = filled * price * self.fee_bps / 1e4
        b = self.balances.setdefault(base, [0.0, 0.0])
        q = self.balances.setdefault(quote, [0.0, 0.0])
        if buy:
            b[0] += filled
            q[0] -= filled * price + fee
        else:
            b[0] -= filled
            q[0] += filled * price - fee
        status = "FILLED" if filled == quantity else "EXPIRED"
        if filled < quantity and self.leave_open:
            status = "PARTIALLY_FILLED"
        if status == "PARTIALLY_FILLED":  # the rest stays on the book, locked
            rest = quantity - filled
            if buy:
                q[0] -= rest * price
                q[1] += rest * price
            else:
                b[0] -= rest
                b[1] += rest
        order_id = self._next_order_id
        self._next_order_id += 1
        order = {
            "symbol": query["symbol"], "orderId": order_id, "orderListId": -1,
            "clientOrderId": client_id, "price": "0.00000000", "origQty": _num(quantity),
            "executedQty": _num(filled), "cummulativeQuoteQty": _num(filled * price),
            "status": status, "timeInForce": "GTC", "type": "MARKET", "side": query["side"],
            "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": 1,
            "updateTime": 1, "isWorking": True, "workingTime": 1,
            "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE",
            "transactTime": 1,
            "fills": [
                {"price": _num(price), "qty": _num(filled), "commission": _num(fee),
                 "commissionAsset": quote, "tradeId": order_id}
            ] if filled > 0 else [],
            "_price": price,
        }  # fmt: skip
        self.orders[order_id] = order
        self.client_ids[client_id] = order_id
        self.placed.append(client_id)
        body = _public(order, with_fills=True)
        if self.lose_next > 0:
            self.lose_next -= 1
            return _Answer(200, body, lost=self.lose_mode)
        return _Answer(200, body)

    def _cancel(self, order: dict[str, Any]) -> None:
        symbol = self.ids[order["symbol"]]
        base, quote = symbol.split("/")
        rest = float(order["origQty"]) - float(order["executedQty"])
        if order["side"] == "BUY":
            q = self.balances[quote]
            q[1] -= rest * order["_price"]
            q[0] += rest * order["_price"]
        else:
            b = self.balances[base]
            b[1] -= rest
            b[0] += rest
        order["status"] = "CANCELED"

    def close(self) -> None:
        """Stop the server."""
        self.httpd.shutdown()
        self.httpd.server_close()


_OPEN = ("NEW", "PARTIALLY_FILLED")
_SIGNED = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/account")


@dataclass
class _Answer:
    status: int
    body: object
    lost: Literal["drop", "delay"] | None = None


def _num(x: float) -> str:
    return f"{x:.8f}"


def _public(order: dict[str, Any], *, with_fills: bool = False) -> dict[str, Any]:
    """Binance's JSON of an order (``fills`` only in the placement's answer)."""
    return {
        k: v for k, v in order.items()
        if not k.startswith("_") and (with_fills or k not in ("fills", "transactTime"))
    }  # fmt: skip

"""Generate the language-neutral wire contract (``proto/asyncapi.json``) from the Structs of
:mod:`colmena.live.wire`.

The contract is an AsyncAPI 3.0 document
(https://www.asyncapi.com/docs/reference/specification/v3.0.0): one channel per subject kind
(address ``colmena.v1.<kind>.{symbol}``), its message with the ``Nats-Msg-Id`` header, and JSON
Schemas (draft 2020-12, from :func:`msgspec.json.schema_components`) of every payload.
AsyncAPI rather than ``.proto`` files because the payloads are MessagePack maps keyed by field
name, which JSON Schema describes exactly and Protocol Buffers does not, and because AsyncAPI also
states the subjects, their parameters and the headers, which a message schema alone cannot.

Run ``python -m colmena.live.contract`` to rewrite ``proto/asyncapi.json``, or with ``--check`` to
exit 1 when the file differs from what the code generates (CI does this through the test suite).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from colmena.live.wire import (
    MESSAGE_TYPES,
    SUBJECT_ROOT,
    WIRE_VERSION,
    MessageKind,
)

__all__ = ["CONTENT_TYPE", "contract", "contract_json", "main"]

#: Content type of every payload.
CONTENT_TYPE = "application/msgpack"

_SCHEMA_REF = "#/components/schemas/{name}"

_CHANNEL_DESCRIPTIONS: dict[MessageKind, str] = {
    "candle": "Closed candles, one per symbol and bar (ingest service).",
    "signal": "The strategy's consensus signal and action at every candle's close.",
    "gate": "The risk state at every candle's open (risk service to execution).",
    "execution": "Fills of the pending order at a candle's open (execution service).",
    "account": "The account marked at every candle's close (execution service to risk).",
    "order": "Risk decisions with verdict, Kelly fraction and the order for the next open.",
    "audit": "Everything a decision was made from, for replaying an incident.",
    "event": "Risk and system events: trades, regime changes, drawdown thresholds, alerts.",
    "risk_state": (
        "The account's risk state after every candle's close: trading state, HALT, drawdowns, "
        "ladder level, pause end, daily PnL, volatility, Kelly fraction (risk service)."
    ),
    "control": (
        "Control actions accepted by the risk service (colmena ctl: pause, resume, flatten, "
        "halt, reset; a pause asked by the reconciliation): who, when, why, and the bar they "
        "apply from."
    ),
    "reconciliation": (
        "Each reconciliation of a symbol's records with a real venue: positions and open "
        "orders on both sides, and whether they differ (execution service)."
    ),
}


def _message_name(kind: MessageKind) -> str:
    return MESSAGE_TYPES[kind].__name__


def contract() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of wire version :data:`~colmena.live.wire.WIRE_VERSION`, as a
    JSON-compatible dict (deterministic: same code, same document)."""
    kinds = list(MESSAGE_TYPES)
    _, schemas = msgspec.json.schema_components(
        [MESSAGE_TYPES[k] for k in kinds], ref_template=_SCHEMA_REF
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for kind in kinds:
        name = _message_name(kind)
        channels[kind] = {
            "address": f"{SUBJECT_ROOT}.v{WIRE_VERSION}.{kind}.{{symbol}}",
            "description": _CHANNEL_DESCRIPTIONS[kind],
            "parameters": {"symbol": {"$ref": "#/components/parameters/symbol"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"receive_{kind}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{kind}"},
            "messages": [{"$ref": f"#/channels/{kind}/messages/{name}"}],
        }
        messages[name] = {
            "name": name,
            "contentType": CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/NatsHeaders"},
            "payload": {
                "schemaFormat": "application/schema+json;version=draft-2020-12",
                "schema": {"$ref": _SCHEMA_REF.format(name=name)},
            },
        }
    schemas["NatsHeaders"] = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": (
                    "Idempotency key: v1.<kind>.<symbol>.<ts>[.<order id> | .<event seq>]; "
                    "JetStream drops a re-publish with the same key inside the duplicate window."
                ),
            }
        },
        "required": ["Nats-Msg-Id"],
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "colmena live trading system",
            "version": f"{WIRE_VERSION}.0.0",
            "description": (
                "Subjects and messages of colmena's services (ingest, strategy, risk, execution, "
                "recorder). Payloads are MessagePack maps keyed by field name; a message's "
                "`kind` field names its type. Compatibility rule: within a version, fields are "
                "only added (with a default); consumers ignore unknown fields; a breaking change "
                "is a new version in the subject. Units: ts in ns since the epoch (UTC), the open "
                "time of the bar; prices in the quote currency; quantities in signed base units."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {
                "symbol": {
                    "description": (
                        "Market symbol in ccxt's unified form (BTC/USDT): 1-64 letters, digits, "
                        "'_', '-', '/' or ':'."
                    )
                }
            },
            "messages": messages,
            "schemas": dict(sorted(schemas.items())),
        },
    }


def contract_json() -> str:
    """:func:`contract` as the text written to ``proto/asyncapi.json`` (sorted keys, indented,
    newline-terminated)."""
    return json.dumps(contract(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the contract file; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m colmena.live.contract", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "path", nargs="?", type=Path, default=Path("proto/asyncapi.json"), help="contract file"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from the code"
    )
    args = parser.parse_args(argv)
    text = contract_json()
    path: Path = args.path
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(
                f"{path} is out of date with colmena.live.wire; run python -m "
                "colmena.live.contract to regenerate it",
                file=sys.stderr,
            )
            return 1
        return 0
    from colmena.atomic_write import write_atomically

    data = text.encode("utf-8")
    write_atomically(path, lambda fh: fh.write(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

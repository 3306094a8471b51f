"""NATS access per daemon (colmena.services.access) against a real nats-server started with the
generated configuration: every identity does its own work through the bus (publish its kinds,
consume its kinds through durable consumers, its key-value buckets), and is refused, with the
server's permissions violation observed and nothing added to the stream, on another daemon's
subjects, consumers, buckets and on the control subjects; only the operator publishes control
requests and only risk answers them. The generated files are private (0600) and kept when
generated again; bad credentials give a ConnectionError naming the problem. The risk and
execution services run end to end under their own identities and give the reference session's
orders and accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from colmena.execution import ExecutionSettings
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler
from colmena.risk import RiskConfig
from colmena.services import access, bus, leases, state
from colmena.services.bus import STREAM, Bus
from colmena.services.leases import Leases
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import ROLE_INPUTS, durable_name, serve
from colmena.services.state import StateStore
from helpers import run_cli
from test_wire import _session

SYMBOL = "BTC/USDT"
#: Seconds before a wait is declared hung (hang detection only).
HANG = 30.0
DAEMONS = ("ingest", "strategy", "risk", "execution", "recorder")


def _kind(message: wire.WireMessage) -> str:
    return str(message.__struct_config__.tag)


@pytest.fixture(scope="module")
def session() -> list[wire.WireMessage]:
    return _session(40)  # the first bars with a fill and a risk event: every kind


@contextlib.contextmanager
def _system(folder: Path) -> Iterator[tuple[str, access.AccessFiles]]:
    """A nats-server with the access files generated for SYMBOL, and the stream set up by
    ``admin``: (url, files)."""
    files = access.prepare(folder, [SYMBOL], durable_name)
    with EmbeddedNatsServer(folder / "nats", config=files.server_config) as server:

        async def set_up() -> None:
            admin = await Bus.connect(server.url, credentials=files.credentials[access.ADMIN])
            await admin.close()

        asyncio.run(set_up())
        yield server.url, files


class _Raw:
    """A plain nats-py client of one identity that records the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._changed = asyncio.Event()
        self.client: Client | None = None

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())
        self._changed.set()

    async def refused(self, subject: str, operation: str = "publish") -> None:
        """Wait until the server reports ``operation`` on ``subject`` refused."""
        needle = f'permissions violation for {operation} to "{subject.lower()}"'
        while not any(needle in e for e in self.errors):
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), HANG)


@contextlib.asynccontextmanager
async def _raw(url: str, credentials: Path) -> AsyncIterator[tuple[Client, _Raw]]:
    creds = access.load_credentials(credentials)
    raw = _Raw()
    client = await nats.connect(
        url,
        nkeys_seed_str=creds.seed,
        inbox_prefix=creds.inbox_prefix,
        error_cb=raw.on_error,
        allow_reconnect=False,
    )
    try:
        yield client, raw
    finally:
        await client.close()


# ---------------------------------------------------------------- the files


def test_names_agree_with_the_services() -> None:
    assert access._STREAM == bus.STREAM
    assert access._STATE_BUCKET == state.STATE_BUCKET
    assert access._LEASE_BUCKET == leases.LEASE_BUCKET
    for role, kinds in ROLE_INPUTS.items():  # every kind a service consumes is granted
        assert set(kinds) <= set(access.GRANTS[role].consumes), role
    # Every kind is published by exactly one daemon.
    publishers = [k for g in access.GRANTS.values() for k in g.publishes]
    assert len(publishers) == len(set(publishers))
    assert set(wire.MESSAGE_TYPES) <= set(publishers)


def test_files_are_private_and_kept_when_generated_again(tmp_path: Path) -> None:
    files = access.prepare(tmp_path, [SYMBOL], durable_name)
    folder = tmp_path / "nats" / access.ACCESS_DIR
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert set(files.credentials) == set(access.IDENTITIES)
    for path in [files.server_config, *files.credentials.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert access.operator_credentials(tmp_path) == files.credentials[access.OPERATOR]
    keys = {i: p.read_bytes() for i, p in files.credentials.items()}
    public = {access.load_credentials(p).public_key for p in files.credentials.values()}
    assert len(public) == len(access.IDENTITIES)  # a key per identity
    # The server's configuration holds the public keys, never a seed.
    text = files.server_config.read_text()
    assert all(k in text for k in public)
    assert not any(access.load_credentials(p).seed in text for p in files.credentials.values())
    # Again, for more symbols: the same credentials, permissions for the new symbol.
    again = access.prepare(tmp_path, [SYMBOL, "ETH/USDT"], durable_name)
    assert {i: p.read_bytes() for i, p in again.credentials.items()} == keys
    assert durable_name("risk", "signal", "ETH/USDT") in again.server_config.read_text()
    risk = access.load_credentials(files.credentials["risk"])
    assert risk.seed not in repr(risk)
    assert risk.seed not in str(risk)


def test_files_of_the_user_are_never_overwritten(tmp_path: Path) -> None:
    files = access.prepare(tmp_path, [SYMBOL], durable_name)
    risk = files.credentials["risk"]
    risk.chmod(0o644)
    with pytest.raises(
        access.AccessError, match=r"risk\.json: mode 0644 lets others read it.*chmod 600"
    ):
        access.prepare(tmp_path, [SYMBOL], durable_name)
    risk.chmod(0o600)
    os.replace(files.credentials["strategy"], files.credentials["execution"])
    with pytest.raises(access.AccessError, match=r"execution\.json holds the credentials of"):
        access.prepare(tmp_path, [SYMBOL], durable_name)
    files.server_config.write_text("authorization { users = [] }\n")
    with pytest.raises(access.AccessError, match=r"server\.conf was not written by colmena"):
        access.prepare(tmp_path, [SYMBOL], durable_name)
    assert files.server_config.read_text() == "authorization { users = [] }\n"


def test_bad_credentials_are_connection_errors_naming_the_problem(tmp_path: Path) -> None:
    with _system(tmp_path) as (url, files):
        good = files.credentials["risk"]
        creds = access.load_credentials(good)

        def write(name: str, data: bytes, mode: int = 0o600) -> Path:
            path = tmp_path / name
            path.write_bytes(data)
            path.chmod(mode)
            return path

        stranger = access._new_credentials("risk")  # a key the server does not know
        cases = {
            tmp_path / "missing.json": "no such file",
            write("open.json", good.read_bytes(), 0o640): r"mode 0640 lets others read it",
            write("garbage.json", b"{not json"): "not a colmena credentials file",
            write("who.json", msgspec.json.encode(msgspec.structs.replace(
                creds, identity="root"))): "unknown identity 'root'",
            write("seed.json", msgspec.json.encode(msgspec.structs.replace(
                creds, seed="SUXYZ"))): "seed is not a valid NKey seed",
            write("other.json", msgspec.json.encode(msgspec.structs.replace(
                creds, public_key=stranger.public_key))): "seed does not match public_key",
            write("stranger.json", msgspec.json.encode(stranger)):
                r"refused the credentials as 'risk' .*authorization violation",
        }  # fmt: skip

        async def run() -> None:
            for path, problem in cases.items():
                with pytest.raises(ConnectionError, match=problem) as caught:
                    await Bus.connect(url, credentials=path, connect_timeout=HANG)
                assert str(path) in str(caught.value)
            with pytest.raises(ConnectionError, match="needs credentials"):
                await Bus.connect(url, connect_timeout=HANG)

        asyncio.run(run())


def test_credentials_from_the_configuration_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from colmena.services.config import LiveConfig, NatsSettings

    monkeypatch.delenv(access.CREDENTIALS_ENV, raising=False)
    assert LiveConfig().nats.credentials_path() is None
    monkeypatch.setenv(access.CREDENTIALS_ENV, "/env/risk.json")
    assert LiveConfig().nats.credentials_path() == Path("/env/risk.json")
    assert NatsSettings(credentials="/file/risk.json").credentials_path() == Path("/file/risk.json")
    with pytest.raises(ValueError, match="credentials must name a credentials file"):
        NatsSettings(credentials="")
    # Bus.connect without a file takes the environment's.
    with _system(tmp_path) as (url, files):
        monkeypatch.setenv(access.CREDENTIALS_ENV, str(files.credentials["risk"]))

        async def run() -> None:
            b = await Bus.connect(url)
            try:  # the identity of risk: its reply inboxes
                assert b.client.new_inbox().startswith("_INBOX_risk.")
            finally:
                await b.close()

        asyncio.run(run())


def test_serve_with_bad_credentials_is_a_one_line_user_error(tmp_path: Path) -> None:
    config = tmp_path / "colmena.toml"
    config.write_text('[[symbols]]\nsymbol = "BTC/USDT"\ncheckpoint = "x"\n')
    shared = tmp_path / "shared.json"
    files = access.prepare(tmp_path, [SYMBOL], durable_name)
    shared.write_bytes(files.credentials["execution"].read_bytes())
    shared.chmod(0o644)
    for path, problem in [(tmp_path / "none.json", "no such file"), (shared, "mode 0644")]:
        done = run_cli(["serve", "execution", "--config", str(config), "--nats",
                        "nats://127.0.0.1:9", "--credentials", str(path)], timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert problem in done.stderr
        assert str(path) in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- own work


def _no_refusal(caplog: pytest.LogCaptureFixture) -> None:
    """No connection of the bus logged a permissions violation (a refused operation that the
    flow did not otherwise notice, such as a consumer's clean-up)."""
    refusals = [r.getMessage() for r in caplog.records if "permissions violation" in
                r.getMessage().lower()]  # fmt: skip
    assert refusals == []


def test_each_identity_does_its_own_work(
    tmp_path: Path, session: list[wire.WireMessage], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="colmena.services.bus")
    with _system(tmp_path) as (url, files):

        async def connect(identity: str) -> Bus:
            return await Bus.connect(url, credentials=files.credentials[identity], name=identity)

        async def run() -> None:
            published: dict[str, int] = {}
            for identity in ("ingest", "strategy", "risk", "execution"):
                own = access.GRANTS[identity].publishes
                b = await connect(identity)
                try:
                    for message in session:
                        if _kind(message) in own:
                            result = await b.publish(message)
                            assert not result.duplicate
                            published[_kind(message)] = published.get(_kind(message), 0) + 1
                finally:
                    await b.close()
            assert set(published) == set(wire.MESSAGE_TYPES)  # every kind, by its publisher
            for identity in ("strategy", "risk", "execution", "recorder"):
                b = await connect(identity)
                try:
                    for kind in sorted(published):
                        if identity == "recorder":
                            durable = f"recorder-{kind}"
                            consumer = await b.consumer(kind, durable, ordered=False)  # type: ignore[arg-type]
                        elif kind in access.GRANTS[identity].consumes:
                            durable = durable_name(identity, kind, SYMBOL)
                            consumer = await b.consumer(kind, durable, symbol=SYMBOL)  # type: ignore[arg-type]
                        else:
                            continue
                        got = 0
                        while got < published[kind]:
                            deliveries = await consumer.fetch(100, timeout=HANG)
                            assert deliveries, (identity, kind)
                            for d in deliveries:
                                assert _kind(d.message) == kind
                                await d.ack()
                            got += len(deliveries)
                        info = await b.jetstream.consumer_info(STREAM, durable)
                        assert (info.num_pending, info.num_ack_pending) == (0, 0)
                    if access.GRANTS[identity].buckets:
                        held = await Leases.open(b, identity, [SYMBOL], holder="t",
                                                 lease_seconds=5.0)  # fmt: skip
                        assert await held.acquire(asyncio.Event())
                        await held.release()
                    if state.STATE_BUCKET in access.GRANTS[identity].buckets:
                        await StateStore.open(b)
                        kv = await b.jetstream.key_value(state.STATE_BUCKET)
                        await kv.put(f"{identity}.probe", identity.encode())
                        assert (await kv.get(f"{identity}.probe")).value == identity.encode()
                finally:
                    await b.close()
            # The feed reads its newest candle; the operator reads the stream, the consumers'
            # positions and the state, and publishes control requests, which risk answers.
            ingest = await connect("ingest")
            last = await ingest.jetstream.get_last_msg(STREAM, wire.subject("candle", SYMBOL))
            assert wire.decode("candle", last.data or b"") == [
                m for m in session if _kind(m) == "candle"][-1]  # fmt: skip
            await ingest.close()
            operator = await connect(access.OPERATOR)
            try:
                assert await operator.stream_messages() == sum(published.values())
                durable = durable_name("risk", "signal", SYMBOL)
                assert (await operator.jetstream.consumer_info(STREAM, durable)).num_pending == 0
                kv = await operator.jetstream.key_value(state.STATE_BUCKET)
                assert (await kv.get("risk.probe")).value == b"risk"
                async with _raw(url, files.credentials["risk"]) as (risk, _):

                    async def answer(msg: nats.aio.msg.Msg) -> None:
                        await msg.respond(b"ok " + msg.subject.encode())

                    await risk.subscribe("colmena.control.>", cb=answer)
                    await risk.flush()
                    async with _raw(url, files.credentials[access.OPERATOR]) as (ctl, _):
                        reply = await ctl.request("colmena.control.status", b"{}", timeout=HANG)
                    assert reply.data == b"ok colmena.control.status"
            finally:
                await operator.close()

        asyncio.run(run())
    _no_refusal(caplog)


def test_a_permitted_consumer_cannot_filter_other_subjects(tmp_path: Path) -> None:
    """The permission names the consumer and its filter (the API subject nats-py uses); the
    server refuses a request whose configuration filters another subject than the subject's."""
    durable = durable_name("strategy", "candle", SYMBOL)
    with _system(tmp_path) as (url, files):

        async def run() -> None:
            async with _raw(url, files.credentials["strategy"]) as (client, _):
                request = {
                    "stream_name": STREAM,
                    "config": {"name": durable, "durable_name": durable, "ack_policy": "explicit",
                               "filter_subject": f"colmena.v1.order.{SYMBOL}"},
                }  # fmt: skip
                subject = f"$JS.API.CONSUMER.CREATE.{STREAM}.{durable}.colmena.v1.candle.*"
                reply = await client.request(subject, json.dumps(request).encode(), timeout=HANG)
                answer = json.loads(reply.data)
                assert "error" in answer, answer
                assert "filter" in answer["error"]["description"].lower()
            admin = await Bus.connect(url, credentials=files.credentials[access.ADMIN])
            try:
                assert await admin.jetstream.consumers_info(STREAM) == []
            finally:
                await admin.close()

        asyncio.run(run())


# ---------------------------------------------------------------- refusals


def _others_durables(identity: str) -> list[tuple[str, str]]:
    """(durable, kind) of the other daemons' consumers."""
    return [
        (name, kind)
        for other in DAEMONS
        if other != identity
        for name, kind in access.durables(other, [SYMBOL], durable_name).items()
        if name not in access.durables(identity, [SYMBOL], durable_name)
    ]


@pytest.mark.parametrize("identity", [*DAEMONS, access.OPERATOR])
def test_identity_is_refused_other_subjects_and_control(tmp_path: Path, identity: str) -> None:
    grant = access.GRANTS[identity]
    api = f"$JS.API.CONSUMER.CREATE.{STREAM}"
    with _system(tmp_path) as (url, files):

        async def run() -> None:
            async with _raw(url, files.credentials[identity]) as (client, raw):
                refused: list[tuple[str, str]] = []
                # Publishing another daemon's kinds, and control requests (not the operator).
                for kind in access._all_kinds():
                    if kind not in grant.publishes:
                        refused.append((f"colmena.v1.{kind}.{SYMBOL}", "publish"))
                if not grant.requests_control:
                    refused.append(("colmena.control.status", "publish"))
                # Reading: core subscriptions to the stream's subjects, another identity's
                # inbox, the control subjects (all but risk).
                refused.append(("colmena.v1.>", "subscription"))
                refused.append(("_INBOX_admin.>", "subscription"))
                if not grant.serves_control:
                    refused.append(("colmena.control.>", "subscription"))
                # JetStream: another daemon's durable consumers (create, fetch, ack), an
                # ephemeral consumer of a kind it does not consume, the stream's settings,
                # deleting a consumer, and key-value buckets that are not its own.
                for name, kind in _others_durables(identity)[:3]:
                    refused += [
                        (f"{api}.{name}.colmena.v1.{kind}.*", "publish"),
                        (f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{name}", "publish"),
                        (f"$JS.ACK.{STREAM}.{name}.1.1.1.1.0", "publish"),
                    ]
                strange = [k for k in access._all_kinds() if k not in access._consumed(identity)]
                if strange:
                    refused.append((f"{api}.probe.colmena.v1.{strange[0]}.*", "publish"))
                refused += [
                    (f"$JS.API.STREAM.{op}.{STREAM}", "publish")
                    for op in ("UPDATE", "DELETE", "PURGE")
                ]
                refused.append((f"$JS.API.CONSUMER.DELETE.{STREAM}.x", "publish"))
                other = "execution" if identity == "risk" else "risk"
                for bucket in (state.STATE_BUCKET, leases.LEASE_BUCKET):
                    refused.append((f"$KV.{bucket}.{other}.probe", "publish"))  # not its key
                    if bucket not in grant.buckets:
                        refused.append((f"$KV.{bucket}.{identity}.probe", "publish"))
                for subject, operation in refused:
                    if operation == "publish":
                        await client.publish(subject, b"x")
                    else:
                        await client.subscribe(subject)
                    await raw.refused(subject, "subscription" if operation != "publish"
                                      else operation)  # fmt: skip
            # Nothing of it reached the stream, no consumer was made, the stream is as it was.
            admin = await Bus.connect(url, credentials=files.credentials[access.ADMIN])
            try:
                assert await admin.stream_messages() == 0
                assert await admin.jetstream.consumers_info(STREAM) == []
                info = await admin.jetstream.stream_info(STREAM)
                assert info.config.subjects == [wire.subject_filter()]
            finally:
                await admin.close()

        asyncio.run(run())


# ---------------------------------------------------------------- services under their identities


def test_risk_and_execution_run_under_their_identities(
    tmp_path: Path, session: list[wire.WireMessage], caplog: pytest.LogCaptureFixture
) -> None:
    """The risk and execution services (runner.serve, leases, saved state) run with their own
    credentials on the candles (published by ``ingest``) and signals (by ``strategy``) of the
    reference session, and publish its orders and accounts; execution is restarted halfway (its
    saved state and the replay of the stream, both under its identity)."""
    settings = ExecutionSettings(market="margin", max_participation=0.5)
    # The trading session (the operator's control and the venue's reconciliation aside).
    session = [m for m in session if _kind(m) not in ("control", "reconciliation")]
    candles = [m for m in session if isinstance(m, wire.CandleMessage)]
    signals = [m for m in session if isinstance(m, wire.SignalMessage)]
    orders = [m for m in session if isinstance(m, wire.OrderMessage)]
    accounts = [m for m in session if isinstance(m, wire.AccountMessage)]
    caplog.set_level(logging.WARNING, logger="colmena.services.bus")
    with _system(tmp_path) as (url, files):

        async def role(
            identity: str, handler: RiskHandler | ExecutionHandler, done: asyncio.Event, kind: type
        ) -> int:
            b = await Bus.connect(url, credentials=files.credentials[identity], name=identity)
            made = 0

            def count(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
                nonlocal made
                made += sum(isinstance(m, kind) for m in outputs)
                if made >= target[identity]:
                    done.set()  # a point the service reports

            try:
                return await serve(b, identity, {SYMBOL: handler}, done, on_handled=count,
                                   ack_wait_seconds=1.0, lease_seconds=5.0,
                                   state=await StateStore.open(b))  # fmt: skip
            finally:
                await b.close()

        target = {"risk": len(orders), "execution": len(accounts) // 2}

        async def run() -> None:
            for identity, messages in (("ingest", candles), ("strategy", signals)):
                b = await Bus.connect(url, credentials=files.credentials[identity])
                for message in messages:
                    await b.publish(message)
                await b.close()
            risk_done, half = asyncio.Event(), asyncio.Event()
            risk = asyncio.create_task(
                role(
                    "risk",
                    RiskHandler(SYMBOL, RiskConfig(), settings),
                    risk_done,
                    wire.OrderMessage,
                )
            )
            await role("execution", ExecutionHandler(SYMBOL, settings), half, wire.AccountMessage)
            target["execution"] = len(accounts) - len(accounts) // 2
            done = asyncio.Event()
            await role("execution", ExecutionHandler(SYMBOL, settings), done, wire.AccountMessage)
            await asyncio.wait_for(risk, HANG)
            admin = await Bus.connect(url, credentials=files.credentials[access.ADMIN])
            try:
                for kind, expected in (("order", orders), ("account", accounts)):
                    sub = await admin.jetstream.pull_subscribe(
                        wire.subject(kind, SYMBOL),  # type: ignore[arg-type]
                        stream=STREAM,
                    )
                    out: list[wire.WireMessage] = []
                    while len(out) < len(expected):
                        for raw in await sub.fetch(100, timeout=HANG):
                            out.append(wire.decode(kind, raw.data))  # type: ignore[arg-type]
                            await raw.ack()
                    assert out == expected, kind
                # The whole session, each message once: the restarted execution service
                # published nothing twice.
                assert await admin.stream_messages() == len(session)
            finally:
                await admin.close()

        asyncio.run(run())
    _no_refusal(caplog)


def test_colmena_ctl_reaches_the_risk_service_as_the_operator(tmp_path: Path) -> None:
    """``colmena ctl --data-dir`` takes the operator's identity that ``colmena up`` made; the
    risk service, under its own, answers and records the accepted action in the stream."""
    with _system(tmp_path) as (url, files):
        (tmp_path / "endpoints.json").write_text(json.dumps({"nats": url}))

        async def run() -> None:
            b = await Bus.connect(url, credentials=files.credentials["risk"], name="risk")
            stop = asyncio.Event()
            handler = RiskHandler(SYMBOL, RiskConfig(), ExecutionSettings(market="margin"))
            risk = asyncio.create_task(serve(b, "risk", {SYMBOL: handler}, stop))
            try:
                ctl = ["--data-dir", str(tmp_path), "--json", "--timeout", str(HANG)]
                status, pause = [
                    await asyncio.to_thread(run_cli, ["ctl", action, *ctl], timeout=2 * HANG)
                    for action in ("status", "pause")
                ]
            finally:
                stop.set()
                await asyncio.wait_for(risk, HANG)
                await b.close()
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["ok"]
            assert pause.returncode == 0, pause.stderr
            assert json.loads(pause.stdout)["accepted"]
            operator = await Bus.connect(url, credentials=files.credentials[access.OPERATOR])
            try:
                raw = await operator.jetstream.get_last_msg(STREAM, wire.subject("control", SYMBOL))
                assert wire.decode("control", raw.data or b"").action == "pause"  # type: ignore[attr-defined]
            finally:
                await operator.close()

        asyncio.run(run())

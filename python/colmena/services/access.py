"""NATS access per daemon: one identity per service, each allowed only its own subjects.

Mechanism: NKeys, nats-server's own public-key authentication (Ed25519; the ``nkeys`` package of
the NATS authors, which nats-py uses for it), in the server configuration's ``authorization``
block (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_intro/nkey_auth
and .../authorization). Chosen over the alternatives because:

- the server's configuration holds only public keys: nothing in it is a secret, and nothing
  secret crosses the connection (the client signs the server's nonce; a password would be sent
  in the clear on a connection without TLS);
- it needs no operator/account JWT tooling (``nsc``) nor a resolver, yet gives per-user
  publish/subscribe allow and deny lists, which is all one machine's services need; bcrypt'd
  passwords would give the same permissions with a secret on the wire and a slow hash per
  connect.

Identities (:data:`GRANTS`): ``ingest`` (the candle feed), ``strategy``, ``risk``, ``execution``,
``recorder`` (the daemons ``colmena serve ROLE`` runs), ``operator`` (``colmena ctl`` and the
status commands) and ``admin`` (``colmena up`` itself). Each may publish only the message kinds
it produces (``colmena.v1.<kind>.*``) and read only the kinds it consumes, through JetStream:

- the JetStream API subjects are narrowed per identity: stream information; its own durable
  consumers, by name and filter (``$JS.API.CONSUMER.CREATE.<stream>.<durable>.<filter>``, the
  subject nats-py uses for a named consumer, so the server checks the filter too), their next
  messages and acks (``$JS.ACK.<stream>.<durable>.>``); ephemeral consumers (the services'
  replay at start) only with a filter of its own kinds, and never under another identity's
  durable name (deny lists); ``$JS.API.CONSUMER.INFO`` of any consumer (read-only, for the
  health endpoint's lag);
- key-value buckets only for the identities that keep state (``risk``, ``execution``:
  ``colmena_state``; the trading roles: ``colmena_leases``): the bucket stream's create, info
  and get API, and writes only of its own keys (``$KV.<bucket>.<identity>.>``: every key starts
  with the role); the operator reads them;
- core subscriptions only on the identity's own reply inbox (``_INBOX_<identity>.>``, given to
  nats-py as ``inbox_prefix``), so no identity reads another's replies;
- control: only ``operator`` may publish on ``colmena.control.>``; only ``risk`` subscribes there
  and answers (``allow_responses``: it may publish to the reply subject of a request it got).

Stream management: the stream's settings are changed (``$JS.API.STREAM.UPDATE``) only by
``admin``, the identity ``colmena up`` connects with once the server is up, with the
configuration's ``[stream]`` limits. The daemons may create the stream when it is absent
(``$JS.API.STREAM.CREATE`` is idempotent: it never changes an existing stream) and otherwise
only read its information; the operator only reads (:func:`stream_rights`,
:meth:`colmena.services.bus.Bus.connect`). Consumers are never deleted by any identity but
``admin``.

Residual rights, read-only and documented: ``ingest`` and ``operator`` may fetch any single
message of the stream (``$JS.API.STREAM.MSG.GET``: the subject is in the request body, not the
API subject), used for the feed's resume point and the status console.

Files (:func:`prepare`): one credentials file per identity, ``<identity>.json`` (the identity,
its public key, its seed and its inbox prefix; mode 0600 in a 0700 folder), and the server's
``server.conf`` (the ``authorization`` block, JSON, which nats-server's configuration format
reads), each written atomically (:func:`colmena.atomic_write.write_atomically`). Running it
again keeps every existing credentials file (a key is never replaced behind a running
service's back) and rewrites ``server.conf`` only if colmena wrote it (its first line), so the
permissions follow the configuration's symbols; a file that is not colmena's is never
overwritten.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec
import nkeys

from colmena.atomic_write import write_atomically
from colmena.live import wire

__all__ = [
    "ACCESS_DIR",
    "ADMIN",
    "CREDENTIALS_ENV",
    "GRANTS",
    "IDENTITIES",
    "OPERATOR",
    "SERVER_CONFIG",
    "AccessError",
    "AccessFiles",
    "Credentials",
    "CredentialsError",
    "Grant",
    "client_options",
    "credentials_path",
    "durables",
    "inbox_prefix",
    "load_credentials",
    "operator_credentials",
    "permissions",
    "prepare",
    "server_authorization",
    "stream_rights",
]

#: Environment variable naming a credentials file (read when none is given otherwise).
CREDENTIALS_ENV: Final = "COLMENA_NATS_CREDENTIALS"
#: Folder, under the embedded server's folder (``DATA_DIR/nats``), of the generated files.
ACCESS_DIR: Final = "access"
#: The server configuration's file name in :data:`ACCESS_DIR`.
SERVER_CONFIG: Final = "server.conf"
#: ``colmena up``'s own identity: manages the stream.
ADMIN: Final = "admin"
#: The operator's identity: control requests, read-only status.
OPERATOR: Final = "operator"

# The names below are those of colmena.services.bus, .state and .leases (which import this
# module, so it cannot import them; tests/test_nats_access.py checks they agree).
_STREAM: Final = f"COLMENA_V{wire.WIRE_VERSION}"
_STATE_BUCKET: Final = "colmena_state"
_LEASE_BUCKET: Final = "colmena_leases"
_ROOT: Final = f"{wire.SUBJECT_ROOT}.v{wire.WIRE_VERSION}"
_CONTROL: Final = f"{wire.SUBJECT_ROOT}.control.>"
_HEADER: Final = "# colmena: NATS authorization generated by colmena up"
_MAX_CREDENTIALS_BYTES: Final = 4_096


class AccessError(ValueError):
    """The access files cannot be generated (an existing file that is not colmena's, or
    credentials that are no longer valid); the message names the file."""


class CredentialsError(ConnectionError):
    """A credentials file a client cannot use (missing, readable by others, not colmena's
    format, a bad key); the message names the file and the problem."""


@dataclass(frozen=True)
class Grant:
    """What one identity may do on the bus.

    Attributes
    ----------
    publishes : tuple of str
        Message kinds it publishes to the stream (``colmena.v1.<kind>.*``).
    consumes : tuple of str
        Message kinds it reads through durable consumers (one per kind and symbol, named by
        :func:`colmena.services.runner.durable_name`; the recorder: ``recorder-<kind>``).
    buckets : tuple of str
        Key-value buckets it reads, may create, and writes its own keys of
        (``<identity>.<...>``).
    read_buckets : tuple of str
        Key-value buckets it only reads.
    reads_messages : bool
        May fetch single messages of the stream (``$JS.API.STREAM.MSG.GET``).
    serves_control : bool
        Subscribes to ``colmena.control.>`` and answers the requests.
    requests_control : bool
        Publishes requests on ``colmena.control.>``.
    """

    publishes: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    read_buckets: tuple[str, ...] = ()
    reads_messages: bool = False
    serves_control: bool = False
    requests_control: bool = False


#: Every identity's rights (the issue's table of who publishes and consumes what).
GRANTS: Final[Mapping[str, Grant]] = {
    "ingest": Grant(publishes=("candle",), reads_messages=True),
    "strategy": Grant(publishes=("signal",), consumes=("candle",), buckets=(_LEASE_BUCKET,)),
    "risk": Grant(
        publishes=("gate", "order", "audit", "risk_state", "event", "control"),
        consumes=("control", "candle", "signal", "account", "execution", "reconciliation"),
        buckets=(_STATE_BUCKET, _LEASE_BUCKET),
        serves_control=True,
    ),
    "execution": Grant(
        publishes=("execution", "account", "reconciliation"),
        consumes=("candle", "gate", "order"),
        buckets=(_STATE_BUCKET, _LEASE_BUCKET),
    ),
    "recorder": Grant(),  # consumes every kind: see _consumed
    OPERATOR: Grant(
        read_buckets=(_STATE_BUCKET, _LEASE_BUCKET), reads_messages=True, requests_control=True
    ),
    ADMIN: Grant(),  # the whole JetStream API: see permissions
}
#: Every identity, in the order of :data:`GRANTS`.
IDENTITIES: Final = tuple(GRANTS)


def _all_kinds() -> tuple[str, ...]:
    kinds: dict[str, None] = dict.fromkeys(wire.MESSAGE_TYPES)
    for grant in GRANTS.values():
        kinds.update(dict.fromkeys(grant.publishes + grant.consumes))
    return tuple(kinds)


def _consumed(identity: str) -> tuple[str, ...]:
    return _all_kinds() if identity == "recorder" else GRANTS[identity].consumes


def stream_rights(identity: str) -> Literal["manage", "create", "read"]:
    """What ``identity`` may do to the stream: ``manage`` (create and update: ``admin``),
    ``create`` (create when absent, never change: the daemons) or ``read`` (the operator).

    Raises
    ------
    KeyError
        An unknown identity.
    """
    GRANTS[identity]
    if identity == ADMIN:
        return "manage"
    return "read" if identity == OPERATOR else "create"


def inbox_prefix(identity: str) -> str:
    """The identity's reply-inbox prefix (``_INBOX_<identity>``): replies to it go under
    ``<prefix>.>``, which only it may subscribe to."""
    return f"_INBOX_{identity}"


def durables(
    identity: str, symbols: Iterable[str], durable_name: Callable[[str, str, str], str]
) -> dict[str, str]:
    """The durable consumers ``identity`` owns: name -> message kind.

    ``durable_name(role, kind, symbol)``: the services' naming
    (:func:`colmena.services.runner.durable_name`), passed in because the runner imports the
    bus, which imports this module. The recorder's consumers are ``recorder-<kind>``
    (:mod:`colmena.services.recorder`).
    """
    if identity == "recorder":
        return {f"recorder-{kind}": kind for kind in _all_kinds()}
    return {durable_name(identity, k, s): k for k in _consumed(identity) for s in symbols}


def permissions(
    identity: str, symbols: Iterable[str], durable_name: Callable[[str, str, str], str]
) -> dict[str, object]:
    """The nats-server ``permissions`` block of ``identity`` for a system trading ``symbols``.

    Returns
    -------
    dict
        ``{"publish": {"allow": [...], "deny": [...]}, "subscribe": {"allow": [...]},
        "allow_responses": bool}`` (nats-server's authorization format).

    Raises
    ------
    KeyError
        An unknown identity.
    """
    grant = GRANTS[identity]
    symbols = list(symbols)
    api, stream = "$JS.API", _STREAM
    allow = [f"{api}.INFO", f"{api}.STREAM.INFO.{stream}"]
    deny: list[str] = []
    subscribe = [f"{inbox_prefix(identity)}.>"]
    if identity == ADMIN:
        return {
            "publish": {"allow": [f"{api}.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>"]},
            "subscribe": {"allow": subscribe},
            "allow_responses": False,
        }
    rights = stream_rights(identity)
    if rights == "create":
        allow.append(f"{api}.STREAM.CREATE.{stream}")
    allow.append(f"{api}.CONSUMER.INFO.{stream}.*")
    allow += [f"{_ROOT}.{kind}.*" for kind in grant.publishes]
    own = durables(identity, symbols, durable_name)
    for name, kind in own.items():
        allow += [
            f"{api}.CONSUMER.CREATE.{stream}.{name}.{_ROOT}.{kind}.*",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{name}",
            f"$JS.ACK.{stream}.{name}.>",
        ]
    consumed = _consumed(identity)
    if consumed:
        # Ephemeral consumers (the replay at start): named by the client, filtered on its own
        # kinds, fetched by their name; never under another identity's durable name.
        allow += [f"{api}.CONSUMER.CREATE.{stream}.*.{_ROOT}.{kind}.*" for kind in consumed]
        allow.append(f"{api}.CONSUMER.MSG.NEXT.{stream}.*")
        for other in IDENTITIES:
            if other in (identity, ADMIN, OPERATOR):
                continue
            for name in durables(other, symbols, durable_name):
                if name not in own:
                    deny += [
                        f"{api}.CONSUMER.CREATE.{stream}.{name}.>",
                        f"{api}.CONSUMER.MSG.NEXT.{stream}.{name}",
                    ]
    if grant.reads_messages:
        allow.append(f"{api}.STREAM.MSG.GET.{stream}")
    for bucket in grant.buckets + grant.read_buckets:
        kv = f"KV_{bucket}"
        allow += [
            f"{api}.STREAM.INFO.{kv}",
            f"{api}.STREAM.MSG.GET.{kv}",
            f"{api}.DIRECT.GET.{kv}",
            f"{api}.DIRECT.GET.{kv}.>",
        ]
        if bucket in grant.buckets:
            # Every key is <role>.<...> (colmena.services.leases.symbol_key, state.ACCOUNT_KEY):
            # an identity writes only its own.
            allow += [f"{api}.STREAM.CREATE.{kv}", f"$KV.{bucket}.{identity}.>"]
    if identity == OPERATOR:
        allow += [
            f"{api}.STREAM.NAMES",
            f"{api}.STREAM.LIST",
            f"{api}.CONSUMER.NAMES.{stream}",
            f"{api}.CONSUMER.LIST.{stream}",
        ]
    if grant.requests_control:
        allow.append(_CONTROL)
    else:
        deny.append(_CONTROL)
    if grant.serves_control:
        subscribe.append(_CONTROL)
    return {
        "publish": {"allow": allow, "deny": deny},
        "subscribe": {"allow": subscribe},
        "allow_responses": grant.serves_control,
    }


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One identity's credentials file (JSON, mode 0600).

    Attributes
    ----------
    identity : str
        One of :data:`IDENTITIES`.
    public_key : str
        The NKey user public key (``U...``), the name the server knows it by.
    seed : str
        The NKey seed (``SU...``): the secret.
    inbox_prefix : str
        The prefix of the identity's reply inboxes (``_INBOX_<identity>``).
    """

    identity: str
    public_key: str
    seed: str
    inbox_prefix: str

    def __repr__(self) -> str:  # never print the seed
        return f"Credentials(identity={self.identity!r}, public_key={self.public_key!r})"

    __str__ = __repr__


def _new_credentials(identity: str) -> Credentials:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    key_pair = nkeys.from_seed(bytearray(seed))
    public = key_pair.public_key.decode()
    key_pair.wipe()
    return Credentials(identity, public, seed.decode(), inbox_prefix(identity))


def load_credentials(path: str | os.PathLike[str]) -> Credentials:
    """Read and check the credentials file at ``path``.

    Raises
    ------
    CredentialsError
        (a :class:`ConnectionError`) The file is missing or not a regular file, readable or
        writable by others than its owner (``chmod 600`` it), not colmena's format, of an
        unknown identity, or its seed is not a valid NKey user seed or does not match its
        public key. The message names the file.
    """
    file = Path(path)
    try:
        info = file.stat()
    except FileNotFoundError:
        raise CredentialsError(f"NATS credentials {file}: no such file") from None
    except OSError as exc:
        raise CredentialsError(f"NATS credentials {file}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"NATS credentials {file}: not a regular file")
    if info.st_mode & 0o077:
        raise CredentialsError(
            f"NATS credentials {file}: mode {stat.S_IMODE(info.st_mode):04o} lets others "
            f"read it; it must be 0600 (chmod 600 {file})"
        )
    try:
        data = file.read_bytes()[: _MAX_CREDENTIALS_BYTES + 1]
    except OSError as exc:
        raise CredentialsError(
            f"NATS credentials {file}: cannot be read: {exc.strerror or exc}"
        ) from None
    if len(data) > _MAX_CREDENTIALS_BYTES:
        raise CredentialsError(f"NATS credentials {file}: larger than {_MAX_CREDENTIALS_BYTES} B")
    try:
        creds = msgspec.json.decode(data, type=Credentials)
    except msgspec.DecodeError as exc:
        raise CredentialsError(
            f"NATS credentials {file}: not a colmena credentials file: {exc}"
        ) from None
    if creds.identity not in GRANTS:
        raise CredentialsError(
            f"NATS credentials {file}: unknown identity {creds.identity!r}; expected one of "
            f"{', '.join(IDENTITIES)}"
        )
    try:
        key_pair = nkeys.from_seed(bytearray(creds.seed.encode()))
        public = key_pair.public_key.decode()
        key_pair.wipe()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise CredentialsError(
            f"NATS credentials {file}: seed is not a valid NKey seed ({type(exc).__name__})"
        ) from None
    if not creds.seed.startswith("SU"):
        raise CredentialsError(f"NATS credentials {file}: seed is not an NKey user seed (SU...)")
    if public != creds.public_key:
        raise CredentialsError(f"NATS credentials {file}: seed does not match public_key")
    return creds


def client_options(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``nats.connect`` keyword arguments of the credentials file at ``path``
    (``nkeys_seed_str``, ``inbox_prefix``), for a client that connects without
    :class:`colmena.services.bus.Bus` (``colmena ctl``).

    Raises
    ------
    CredentialsError
        As :func:`load_credentials`.
    """
    creds = load_credentials(path)
    return {"nkeys_seed_str": creds.seed, "inbox_prefix": creds.inbox_prefix}


def credentials_path(data_dir: Path, identity: str) -> Path:
    """Where :func:`prepare` keeps ``identity``'s credentials for a ``colmena up`` data folder:
    ``DATA_DIR/nats/access/<identity>.json``."""
    if identity not in GRANTS:
        raise KeyError(f"unknown identity {identity!r}; expected one of {', '.join(IDENTITIES)}")
    return data_dir / "nats" / ACCESS_DIR / f"{identity}.json"


def operator_credentials(data_dir: Path) -> Path:
    """The operator's credentials file of the system ``colmena up --data-dir DATA_DIR`` runs
    (for ``colmena ctl`` and the status commands)."""
    return credentials_path(data_dir, OPERATOR)


@dataclass(frozen=True)
class AccessFiles:
    """What :func:`prepare` wrote: ``server_config`` (give it to nats-server with
    ``--config``) and each identity's credentials file."""

    server_config: Path
    credentials: dict[str, Path] = field(default_factory=dict)


def server_authorization(
    credentials: Mapping[str, Credentials],
    symbols: Iterable[str],
    durable_name: Callable[[str, str, str], str],
) -> str:
    """The text of ``server.conf``: colmena's header line, then the ``authorization`` block
    (JSON) with one NKey user per identity and its :func:`permissions`."""
    symbols = list(symbols)
    users = [
        {"nkey": creds.public_key, "permissions": permissions(identity, symbols, durable_name)}
        for identity, creds in credentials.items()
    ]
    body = json.dumps({"authorization": {"users": users}}, indent=2)
    return (
        f"{_HEADER} (rewritten at each start; edits are lost).\n"
        "# One NKey user per colmena identity: colmena.services.access.\n" + body + "\n"
    )


def _write_private(path: Path, data: bytes) -> None:
    def fill(fh: object) -> None:
        os.fchmod(fh.fileno(), 0o600)  # type: ignore[attr-defined]
        fh.write(data)  # type: ignore[attr-defined]

    write_atomically(path, fill)


def prepare(
    data_dir: Path, symbols: Iterable[str], durable_name: Callable[[str, str, str], str]
) -> AccessFiles:
    """Generate (or keep) every identity's credentials and write the server's configuration
    for a system trading ``symbols``, under ``DATA_DIR/nats/access`` (mode 0700).

    Existing credentials files are kept as they are (checked with :func:`load_credentials`);
    missing ones are created (mode 0600, atomically). ``server.conf`` is rewritten (0600,
    atomically) when absent or written by colmena before.

    Raises
    ------
    AccessError
        An existing credentials file that cannot be used, of another identity, or a
        ``server.conf`` colmena did not write (nothing is overwritten; the message says which
        file to move away).
    OSError
        The folder cannot be written.
    """
    folder = data_dir / "nats" / ACCESS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    conf = folder / SERVER_CONFIG
    if conf.exists():
        try:
            with conf.open("rb") as fh:
                first = fh.readline()
        except OSError as exc:
            raise AccessError(f"{conf}: cannot be read: {exc.strerror or exc}") from None
        if not first.startswith(_HEADER.encode()):
            raise AccessError(
                f"{conf} was not written by colmena and is kept: move it away to start"
            )
    loaded: dict[str, Credentials] = {}
    paths: dict[str, Path] = {}
    for identity in IDENTITIES:
        path = credentials_path(data_dir, identity)
        if path.exists():
            try:
                creds = load_credentials(path)
            except CredentialsError as exc:
                raise AccessError(f"{exc}; it is kept: fix it or move it away") from None
            if creds.identity != identity:
                raise AccessError(
                    f"{path} holds the credentials of {creds.identity!r}, not {identity!r}; "
                    "it is kept: move it away"
                )
        else:
            creds = _new_credentials(identity)
            _write_private(path, msgspec.json.format(msgspec.json.encode(creds)) + b"\n")
        loaded[identity], paths[identity] = creds, path
    text = server_authorization(loaded, symbols, durable_name)
    _write_private(conf, text.encode())
    return AccessFiles(conf, paths)

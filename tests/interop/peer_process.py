"""Trio-side client for ``libchirp_peer.py``: one real libchirp node in a child process.

Usage (inside a Trio test)::

    async with open_peer(reference_python, name="a", SYNCHRONOUS=False) as a:
        send_id = await a.send("127.0.0.1", port, data=b"hello")
        assert (await a.wait_sent(send_id))["ok"]
        msg = await a.next_event("received")

The JSON-lines protocol is documented in ``libchirp_peer.py``. Design notes:

* No background task: ``next_event`` reads stdout itself and buffers events it is not
  looking for, so a ``PeerProcess`` needs no nursery and works in any Trio test. Events
  are consumed in order of arrival; ``history`` keeps all of them for debugging.
* The child's stderr is inherited, so its logs land in pytest's captured output.
* A ``fatal`` event (a bug in the driver, never a libchirp outcome) raises ``PeerFatal``
  in whoever is waiting, instead of letting a test time out mysteriously.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from reference import PEER_SCRIPT

Event = dict[str, Any]


class PeerError(Exception):
    """Base class; ``event`` holds the offending event (if any)."""

    def __init__(self, message: str, event: Event | None = None) -> None:
        super().__init__(message)
        self.event = event


class PeerCommandError(PeerError):
    """A command was answered with an ``error`` event (e.g. libchirp refused the config)."""


class PeerDied(PeerError):
    """The peer's stdout closed while we were waiting for an event."""


class PeerFatal(PeerError):
    """The driver reported an internal failure (``fatal`` event)."""


def free_port() -> int:
    """A port that is free on both 0.0.0.0 and :: (libchirp binds both), > 1024."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("0.0.0.0", 0))
            port = s4.getsockname()[1]
            if port <= 1024:
                continue
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s6.bind(("::", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port found")


def _matches(event: Event, kind: str | None, where: Callable[[Event], bool] | None) -> bool:
    return (kind is None or event.get("event") == kind) and (where is None or where(event))


class PeerProcess:
    """One ``libchirp_peer.py`` child process, driven with JSON lines."""

    def __init__(self, python: Path | str, *, name: str = "peer", script: Path = PEER_SCRIPT) -> None:
        self.python = str(python)
        self.name = name
        self.script = script
        self.proc: trio.Process | None = None
        self.history: list[Event] = []
        self.port: int | None = None
        self.identity: bytes | None = None
        self.started: Event | None = None
        self._timeout_s = 5.0
        self._unread: list[Event] = []
        self._buf = b""
        self._seq = 0
        self._reading = False
        self._new_event = trio.Event()
        self._write_lock = trio.Lock()

    def __repr__(self) -> str:
        return f"<PeerProcess {self.name} port={self.port} pid={self.proc and self.proc.pid}>"

    async def spawn(self) -> None:
        """Launch the child (``start`` does this implicitly) and wait for ``ready``."""
        if self.proc is not None:
            return
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = await trio.lowlevel.open_process(
            [self.python, "-u", str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        await self.next_event("ready", timeout=30)

    async def start(self, **config: Any) -> Event:
        """Start the libchirp node; returns the ``started`` event.

        ``config`` keys are libchirp ``Config`` names (plus driver options HOLD, ECHO,
        ECHO_RELEASE, ECHO_DELAY, REPORT, DATA_HEX_LIMIT). ``IDENTITY`` may be bytes. Defaults that
        differ from libchirp's, because almost every interop test wants them: ``PORT`` is
        a free port and ``DISABLE_ENCRYPTION`` is True (libchirp would otherwise demand
        certificate files even for 127.0.0.1). Raises ``PeerCommandError`` if libchirp
        rejects the start (the event has ``error_type``/``error``/``ecode``).
        """
        config.setdefault("PORT", free_port())
        config.setdefault("DISABLE_ENCRYPTION", True)
        if isinstance(config.get("IDENTITY"), bytes):
            config["IDENTITY"] = config["IDENTITY"].hex()
        self._timeout_s = float(config.get("TIMEOUT", 5.0))
        await self.spawn()
        event = await self.command("start", config=config, timeout=30)
        self.started = event
        self.port = int(event["port"])
        self.identity = bytes.fromhex(event["identity"])
        return event

    async def command(
        self,
        cmd: str,
        *,
        timeout: float = 30,  # noqa: ASYNC109 - a default deadline keeps a dead peer from hanging a test
        check: bool = True,
        **fields: Any,
    ) -> Event:
        """Send one command and return its response event (matched by ``seq``).

        With ``check`` (default) an ``error`` response raises ``PeerCommandError``.
        """
        self._seq += 1
        seq = self._seq
        await self._write({"cmd": cmd, "seq": seq, **fields})
        event = await self.next_event(where=lambda e: e.get("seq") == seq, timeout=timeout)
        if check and event["event"] == "error":
            raise PeerCommandError(
                f"{self.name}: {cmd} failed: {event.get('error_type')}: {event.get('error')}", event
            )
        return event

    async def next_event(
        self,
        kind: str | None = None,
        timeout: float = 10,  # noqa: ASYNC109 - see command()
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Remove and return the first (buffered or new) event of ``kind`` matching ``where``.

        Raises ``trio.TooSlowError`` after ``timeout`` seconds (``math.inf`` = forever).
        Several tasks may wait at once: one of them reads stdout, the others are woken
        after each line and look at the buffer.
        """
        with trio.fail_after(timeout if timeout != math.inf else 1e9):
            while True:
                for i, event in enumerate(self._unread):
                    if _matches(event, kind, where):
                        return self._unread.pop(i)
                    if event.get("event") == "fatal" and kind != "fatal":
                        raise PeerFatal(f"{self.name}: driver failure:\n{event.get('traceback')}", event)
                if self._reading:
                    await self._new_event.wait()
                    continue
                self._reading = True
                try:
                    self._unread.append(await self._read_event())
                finally:
                    self._reading = False
                    self._new_event.set()
                    self._new_event = trio.Event()

    def drain(self, kind: str | None = None) -> list[Event]:
        """Remove and return the already-buffered events (of ``kind``), without waiting."""
        taken = [e for e in self._unread if _matches(e, kind, None)]
        self._unread = [e for e in self._unread if not _matches(e, kind, None)]
        return taken

    # -- conveniences ---------------------------------------------------------------
    async def send(
        self,
        address: str,
        port: int,
        *,
        data: bytes | None = None,
        header: bytes | None = None,
        size: int | None = None,
        seed: int = 0,
        identity: bytes | None = None,
        send_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Issue a ``send``; returns its id (``wait_sent(id)`` gives the outcome)."""
        fields = _message_fields(address, port, data, header, size, seed, identity, send_id, extra)
        return str((await self.command("send", **fields))["id"])

    async def request(
        self,
        address: str,
        port: int,
        *,
        data: bytes | None = None,
        header: bytes | None = None,
        size: int | None = None,
        seed: int = 0,
        identity: bytes | None = None,
        send_id: str | None = None,
        auto_release: bool = True,
        **extra: Any,
    ) -> Event:
        """Issue a ``request`` (libchirp's ``Chirp.request()``); returns its ``ok`` event.

        The event has ``id`` and the request's ``identity``; ``wait_sent(id)`` gives the
        send future's outcome (sync: the ACK arrived), ``wait_response(id)`` the answer.
        """
        fields = _message_fields(address, port, data, header, size, seed, identity, send_id, extra)
        return await self.command("request", auto_release=auto_release, **fields)

    async def wait_response(self, request_id: str, timeout: float = 30) -> Event:  # noqa: ASYNC109
        """The ``response`` outcome of request ``request_id`` (``ok`` + message fields, or the error)."""
        return await self.next_event("response", timeout, where=lambda e: e.get("id") == request_id)

    async def wait_sent(self, send_id: str, timeout: float = 30) -> Event:  # noqa: ASYNC109
        """The ``sent`` outcome of ``send_id`` (``ok``, or error_type/error/ecode)."""
        return await self.next_event("sent", timeout, where=lambda e: e.get("id") == send_id)

    # -- lifecycle --------------------------------------------------------------------
    async def kill(self) -> None:
        """SIGKILL the peer (no goodbye on the wire: TCP connections just reset/close)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        if self.proc is not None:
            await self.proc.wait()
            await self._close_pipes()

    async def aclose(self) -> Event | None:
        """Stop libchirp cleanly if still running, reap the process; returns ``stopped``.

        ``Chirp.stop()`` may wait up to 2 x TIMEOUT for unreleased messages, so the
        wait is sized from the configured TIMEOUT; on any trouble the process is killed.
        """
        if self.proc is None:
            return None
        stopped = None
        try:
            if self.proc.returncode is None:
                with trio.move_on_after(2 * self._timeout_s + 15):
                    stopped = await self.command("stop", check=False, timeout=math.inf)
                    with trio.move_on_after(10):
                        await self.proc.wait()
        except (PeerError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await self.kill()
        return stopped

    async def __aenter__(self) -> PeerProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------------------
    async def _close_pipes(self) -> None:
        assert self.proc is not None
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                await stream.aclose()

    async def _write(self, obj: Event) -> None:
        assert self.proc is not None, "peer not spawned"
        assert self.proc.stdin is not None
        async with self._write_lock:
            await self.proc.stdin.send_all((json.dumps(obj) + "\n").encode())

    async def _read_event(self) -> Event:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            chunk = await self.proc.stdout.receive_some(1 << 16)
            if not chunk:
                await self.proc.wait()
                raise PeerDied(f"{self.name}: peer exited (returncode {self.proc.returncode})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event: Event = json.loads(line)
        self.history.append(event)
        return event


def _message_fields(
    address: str,
    port: int,
    data: bytes | None,
    header: bytes | None,
    size: int | None,
    seed: int,
    identity: bytes | None,
    send_id: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The JSON fields of a ``send``/``request`` command (see ``libchirp_peer.py``)."""
    fields: dict[str, Any] = {"address": address, "port": port, **extra}
    if data is not None:
        fields["data_hex"] = data.hex()
    if size is not None:
        fields["size"], fields["seed"] = size, seed
    if header is not None:
        fields["header_hex"] = header.hex()
    if identity is not None:
        fields["identity_hex"] = identity.hex()
    if send_id is not None:
        fields["id"] = send_id
    return fields


@asynccontextmanager
async def open_peer(python: Path | str, *, name: str = "peer", **config: Any) -> AsyncIterator[PeerProcess]:
    """Spawn and start a peer with ``config``; stop and reap it on exit."""
    peer = PeerProcess(python, name=name)
    try:
        await peer.start(**config)
        yield peer
    finally:
        with trio.CancelScope(shield=True):
            await peer.aclose()

"""A real libchirp node, remote-controlled over stdin/stdout with JSON lines.

Run this with the *reference* interpreter (``reference.ensure_reference()``), never the
project's: it imports the C-backed ``libchirp`` binding (PyPI ``libchirp==1.2.1b3``), which
is the behaviour our Trio implementation must interoperate with. The test side is
``peer_process.PeerProcess``.

Why a separate process: libchirp runs its own libuv loop thread and uses global OpenSSL
state; it must not share an interpreter with Trio, and tests must be able to SIGKILL it.

Protocol (one JSON object per line, UTF-8)
==========================================

Commands (stdin) all have ``"cmd"`` and an optional ``"seq"``. Every command line gets
exactly one immediate *response* event carrying the same ``seq``: ``started`` (for
``start``), ``stopped`` (for ``stop``), ``ok`` (others) or ``error`` (any command that
failed, with ``cmd``, ``error_type``, ``error``, ``ecode``). Asynchronous outcomes arrive
later as separate events without ``seq``. Every event has ``"event"`` and ``"ts"``
(``time.time()``, comparable between processes on one machine).

``start``  ``{"cmd":"start","config":{...}}``
    Config keys are ``libchirp.Config`` attributes, UPPER_CASE, passed through unchanged
    (PORT, SYNCHRONOUS, TIMEOUT, REUSE_TIME, MAX_SLOTS, MAX_MSG_SIZE, BUFFER_SIZE, BACKLOG,
    BIND_V4, BIND_V6, DISABLE_ENCRYPTION, DISABLE_SIGNALS, CERT_CHAIN_PEM, DH_PARAMS_PEM,
    AUTO_RELEASE) plus ``IDENTITY`` as 32 hex digits. Driver options (not libchirp's),
    given here so that no message can arrive before the mode is set:
    ``HOLD`` (bool, keep received messages unreleased; needs AUTO_RELEASE false),
    ``ECHO`` (bool), ``ECHO_RELEASE`` ("before"|"after"|"released", see ``echo``),
    ``ECHO_DELAY`` (seconds, default 0: how long the receiver thread sleeps before
    sending an echo; after the release with "before"/"released"),
    ``REPORT`` ("each"|"none": whether to emit one ``received`` event per message),
    ``DATA_HEX_LIMIT`` (int, default 1024: include ``data_hex`` up to this size).
    -> ``{"event":"started","port":..,"identity":hex,"config":{effective values}}``;
    a libchirp failure gives ``error`` with ``cmd":"start"`` and the ecode.

``send``  ``{"cmd":"send","address":"127.0.0.1","port":p, ...}``
    Payload: ``data_hex`` or ``size`` + ``seed`` (bytes from ``payload(size, seed)``, so
    50 MiB need not cross JSON), ``header_hex``; ``identity_hex`` overrides the new
    message's identity (the binding has no setter; we set ``_identity`` like a reply
    would keep it); ``reply_to: {"identity":hex,"serial":n}`` sends the *received*
    message object itself (the binding's reply pattern; address/port/identity kept
    unless given). ``id`` names the send (default ``s<N>``).
    -> ``ok`` with ``id``, ``identity``, ``data_len``, ``data_sha256``; later
    ``{"event":"sent","id":..,"ok":true,"elapsed":..}`` or
    ``{"event":"sent","id":..,"ok":false,"error_type":..,"error":..,"ecode":..}``.

``request``  same fields as ``send`` plus ``auto_release`` (default true) and ``raw``
    (default false); uses libchirp's request(). Later ``sent`` (the send future) and
    ``response`` (``ok`` + message fields, or the error, e.g. TimeoutError "Chirp request
    timed out"). The binding's ``Chirp.request()`` (1.2.1b3) has a race: it sends
    first and only then schedules the creation of its timeout timer on the loop thread
    (``call_soon(make_timer)``); an answer read before that timer exists makes
    ``_check_request`` raise AttributeError ``_timer_t`` inside the receive callback, so
    the answer is lost, its slot never released, and the request times out (seen under
    CPU load with a fast answering peer: 4 in 300). So by default the driver does what
    ``Chirp.request()`` does in the other order, starting the timer (and waiting until it
    runs) before the send; ``"raw": true`` calls ``Chirp.request()`` as is.

``send_many``  ``{"cmd":"send_many","address","port","count","size","seed",
    "index_header":true,"max_outstanding":null,"id":..}``
    Sends ``count`` messages back to back (header = 4-byte big-endian index unless
    ``index_header`` is false) from a worker thread, optionally never more than
    ``max_outstanding`` unresolved. One summary event
    ``{"event":"send_many_done","id","count","ok_count","failed_count","error_counts",
    "errors":[first 20],"elapsed"}``.

``hold`` ``{"cmd":"hold","on":bool}``; ``echo`` ``{"cmd":"echo","on":bool,
    "release":"before"|"after"|"released","delay":s,"data_hex":optional replacement}``; ``report``
    ``{"cmd":"report","mode":"each"|"none"}``: switch receive handling (see ``start``).
    Echo sends the received message object back (same identity, address, port), which
    is libchirp's documented reply pattern; outcomes are ``sent`` events with id
    ``echo-<n>``, ``echo_of`` = [identity, serial] and ``header_hex`` (the header the
    echo carried: the received one, unchanged). With AUTO_RELEASE false, release
    "before" releases the slot before sending (queue style); "after" sends from the
    slot-holding message and releases once the send completed (asyncio-handler style);
    "released" releases, waits (in the receiver thread) until libchirp reports the
    release done, then sends: the queue style with its race decided, so the ACK of a
    REQ_ACK message is always queued before the echo is submitted (with "before",
    libchirp's loop thread may pick up the echo's send or the release first).

``release`` ``{"cmd":"release","count":n}`` | ``{"all":true}`` |
    ``{"identity":hex,"serial":n}``: release held messages (FIFO for count).
    -> ``ok`` with ``released`` (number issued) and ``held`` (remaining); later one
    ``{"event":"released","identity","serial","ok":true,"result":[hex,serial]|null}``
    per message (or ``ok:false`` with the error).

``stats`` -> ``ok`` with received/held/pending_sends/sent_ok/sent_failed counters.

``stop`` -> ``Chirp.stop()`` then ``Loop.stop()``; response
    ``{"event":"stopped","ok":bool,(error..),"unresolved_sends":[ids]}``; then the process
    exits. EOF on stdin does the same.

Unsolicited events: ``received`` (identity, serial, remote_identity, address, port,
header_hex, data_len, data_sha256, data_hex if small, has_slot, n), ``log`` (every line
the ``libchirp`` logger gets: ``source`` "libchirp" for the C core's log callback, with
``error`` true for its error lines, which also become exception messages, see PROTOCOL.md
section 9; "binding" for the Python binding's own lines), ``fatal`` (driver bug; traceback).
Logs for humans go to stderr.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import queue
import random
import sys
import threading
import time
import traceback
from typing import Any

DATA_HEX_LIMIT_DEFAULT = 1024


def payload(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random payload; both test and peer can regenerate it.

    ``random.Random(seed).randbytes`` is fast (50 MiB in well under a second) and stable
    for a given CPython version; the reference venv uses the same interpreter as the
    tests, and events carry sha256 digests anyway.
    """
    if size == 0:
        return b""
    return random.Random(seed).randbytes(size)


def _exc_fields(exc: BaseException) -> dict[str, Any]:
    """How libchirp errors are surfaced: class name, message and ``ecode`` if set."""
    return {
        "error_type": type(exc).__name__,
        "error": str(exc),
        "ecode": getattr(exc, "ecode", None),
    }


class _Writer:
    """Serialises events to stdout from a dedicated thread.

    Events are produced on libuv's loop thread (send/release callbacks); they must never
    block on a full pipe there, so they go through an unbounded queue.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def emit(self, event: str, **fields: Any) -> None:
        obj = {"event": event, "ts": time.time(), **fields}
        self._q.put(json.dumps(obj, separators=(",", ":")))

    def _run(self) -> None:
        out = sys.stdout
        while True:
            line = self._q.get()
            if line is None:
                return
            try:
                out.write(line + "\n")
                out.flush()
            except (BrokenPipeError, ValueError):
                return  # controller went away; nothing left to tell

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)


class _LogForwarder(logging.Handler):
    """Forward the binding's ``libchirp`` logger (libchirp's log callback) as events.

    The binding logs error lines at DEBUG and keeps the last one as the text of the next
    exception; making them visible lets tests see what libchirp complained about.
    """

    def __init__(self, writer: _Writer) -> None:
        super().__init__(logging.DEBUG)
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        # Lines from the C core come through the binding's ``_chirp_log_cb`` (errors at
        # DEBUG, others at INFO); anything else is the binding's own chatter.
        from_core = record.funcName == "_chirp_log_cb"
        self._writer.emit(
            "log",
            source="libchirp" if from_core else "binding",
            error=from_core and record.levelno == logging.DEBUG,
            level=record.levelname,
            msg=record.getMessage(),
        )


class Driver:
    """Owns the libchirp objects and the command loop (main thread)."""

    def __init__(self, writer: _Writer) -> None:
        self.w = writer
        self.lc: Any = None  # libchirp.queue module, imported on start
        self.loop: Any = None
        self.chirp: Any = None
        self.lock = threading.Lock()
        self.held: collections.deque[Any] = collections.deque()
        # Recently received messages, for reply_to (bounded; they may be large).
        self.recent: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()
        self.pending: dict[str, float] = {}  # send id -> start time
        self.counters = collections.Counter()
        self.hold = False
        self.echo = False
        self.echo_release = "before"
        self.echo_data: bytes | None = None
        self.echo_delay = 0.0
        self.report = "each"
        self.data_hex_limit = DATA_HEX_LIMIT_DEFAULT
        self.auto_release = True
        self.send_seq = 0
        self.recv_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ commands
    def cmd_start(self, c: dict[str, Any]) -> dict[str, Any]:
        if self.chirp is not None:
            raise RuntimeError("already started")
        import libchirp
        import libchirp.queue

        self.lc = libchirp.queue
        logging.getLogger("libchirp").addHandler(_LogForwarder(self.w))
        logging.getLogger("libchirp").setLevel(logging.DEBUG)
        conf = dict(c.get("config") or {})
        self.hold = bool(conf.pop("HOLD", False))
        self.echo = bool(conf.pop("ECHO", False))
        self.echo_release = conf.pop("ECHO_RELEASE", "before")
        self.echo_delay = float(conf.pop("ECHO_DELAY", 0.0))
        self.report = conf.pop("REPORT", "each")
        self.data_hex_limit = int(conf.pop("DATA_HEX_LIMIT", DATA_HEX_LIMIT_DEFAULT))
        config = libchirp.Config()
        for key, value in conf.items():
            if key == "IDENTITY" and isinstance(value, str):
                value = bytes.fromhex(value)
            setattr(config, key, value)
        self.auto_release = config.AUTO_RELEASE
        if self.hold and self.auto_release:
            raise ValueError("HOLD needs AUTO_RELEASE=False (queue get() releases)")
        self.loop = libchirp.Loop()
        try:
            self.chirp = libchirp.queue.Chirp(self.loop, config)
        except BaseException:
            self.loop.stop()
            self.loop = None
            raise
        self.recv_thread = threading.Thread(target=self._receiver, name="receiver", daemon=True)
        self.recv_thread.start()
        effective = {}
        for key in (
            "PORT",
            "SYNCHRONOUS",
            "TIMEOUT",
            "REUSE_TIME",
            "MAX_SLOTS",
            "MAX_MSG_SIZE",
            "BUFFER_SIZE",
            "BACKLOG",
            "BIND_V4",
            "BIND_V6",
            "DISABLE_ENCRYPTION",
            "AUTO_RELEASE",
        ):
            effective[key] = getattr(config, key)
        return {
            "_event": "started",
            "port": config.PORT,
            "identity": self.chirp.identity().hex(),
            "config": effective,
        }

    def _make_message(self, c: dict[str, Any]) -> Any:
        reply_to = c.get("reply_to")
        if reply_to:
            key = (reply_to["identity"], int(reply_to["serial"]))
            with self.lock:
                msg = self.recent.get(key)
                if msg is None:
                    msg = next(
                        (m for m in self.held if (m.identity.hex(), m.serial) == key),
                        None,
                    )
            if msg is None:
                raise KeyError(f"no received message {key} (only recent/held kept)")
        else:
            msg = self.lc.Message()
        if "address" in c:
            msg.address = c["address"]
        if "port" in c:
            msg.port = int(c["port"])
        if "data_hex" in c:
            msg.data = bytes.fromhex(c["data_hex"])
        elif "size" in c:
            msg.data = payload(int(c["size"]), int(c.get("seed", 0)))
        if "header_hex" in c:
            msg.header = bytes.fromhex(c["header_hex"])
        if "identity_hex" in c:
            ident = bytes.fromhex(c["identity_hex"])
            if len(ident) != 16:
                raise ValueError("identity must be 16 bytes")
            msg._identity = ident  # no public setter in the binding
        return msg

    def _next_id(self, prefix: str = "s") -> str:
        with self.lock:
            self.send_seq += 1
            return f"{prefix}{self.send_seq}"

    def _track_send(self, fut: Any, send_id: str, extra: dict[str, Any], after: Any = None) -> None:
        """Report a send future's outcome as a ``sent`` event, whatever it is."""
        start = time.monotonic()
        with self.lock:
            self.pending[send_id] = start

        def done(f: Any) -> None:
            try:
                exc = f.exception()
                with self.lock:
                    self.pending.pop(send_id, None)
                    self.counters["sent_failed" if exc else "sent_ok"] += 1
                fields = {"id": send_id, "elapsed": time.monotonic() - start, **extra}
                if exc is None:
                    self.w.emit("sent", ok=True, **fields)
                else:
                    self.w.emit("sent", ok=False, **_exc_fields(exc), **fields)
                if after is not None:
                    after()
            except BaseException:
                self.w.emit("fatal", where="send callback", traceback=traceback.format_exc())

        fut.add_done_callback(done)

    def cmd_send(self, c: dict[str, Any]) -> dict[str, Any]:
        msg = self._make_message(c)
        send_id = str(c.get("id") or self._next_id())
        fut = self.chirp.send(msg)
        self._track_send(fut, send_id, {})
        return {"id": send_id, **self._describe_out(msg)}

    def cmd_request(self, c: dict[str, Any]) -> dict[str, Any]:
        msg = self._make_message(c)
        send_id = str(c.get("id") or self._next_id("r"))
        auto_release = bool(c.get("auto_release", True))
        if c.get("raw"):
            fut = self.chirp.request(msg, auto_release=auto_release)
        else:
            fut = self._request(msg, auto_release)
        self._track_send(fut._send_fut, send_id, {})
        start = time.monotonic()

        def done(f: Any) -> None:
            try:
                try:
                    res = f.result()  # releases the response if auto_release
                except BaseException as exc:
                    self.w.emit(
                        "response", id=send_id, ok=False, elapsed=time.monotonic() - start, **_exc_fields(exc)
                    )
                    return
                self.w.emit(
                    "response",
                    id=send_id,
                    ok=True,
                    elapsed=time.monotonic() - start,
                    **self._describe_in(res),
                )
            except BaseException:
                self.w.emit("fatal", where="request callback", traceback=traceback.format_exc())

        fut.add_done_callback(done)
        return {"id": send_id, **self._describe_out(msg)}

    def _request(self, msg: Any, auto_release: bool) -> Any:
        """``ChirpBase.request()`` with its timer started before the send (see ``request``)."""
        import concurrent.futures

        import libchirp

        chirp = self.chirp
        fut = libchirp.ChirpFuture(auto_release)
        fut._chirp = chirp
        fut._id = msg.identity
        with chirp._lock:
            chirp._requests[fut._id] = fut
        timer_started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start_timer() -> None:  # on the loop thread, like the binding's call_soon
            try:
                libchirp.make_timer(fut)
            except BaseException as exc:
                timer_started.set_exception(exc)
            else:
                timer_started.set_result(None)

        chirp.loop.call_soon(start_timer)
        timer_started.result(timeout=10)
        fut._send_fut = chirp.send(msg)
        return fut

    def cmd_send_many(self, c: dict[str, Any]) -> dict[str, Any]:
        count = int(c["count"])
        data = payload(int(c.get("size", 0)), int(c.get("seed", 0)))
        batch_id = str(c.get("id") or self._next_id("m"))
        index_header = bool(c.get("index_header", True))
        limit = c.get("max_outstanding")
        sem = threading.Semaphore(int(limit)) if limit else None
        address, port = c["address"], int(c["port"])

        def run() -> None:
            start = time.monotonic()
            results: list[BaseException | None] = []
            remaining = [count]
            all_done = threading.Event()
            errors: list[dict[str, Any]] = []

            def done(i: int, f: Any) -> None:
                exc = f.exception()
                with self.lock:
                    self.counters["sent_failed" if exc else "sent_ok"] += 1
                    results.append(exc)
                    if exc is not None and len(errors) < 20:
                        errors.append({"index": i, **_exc_fields(exc)})
                    remaining[0] -= 1
                    finished = remaining[0] == 0
                if sem is not None:
                    sem.release()
                if finished:
                    all_done.set()

            try:
                for i in range(count):
                    if sem is not None:
                        sem.acquire()
                    msg = self.lc.Message()
                    msg.address = address
                    msg.port = port
                    msg.data = data
                    if index_header:
                        msg.header = i.to_bytes(4, "big")
                    self.chirp.send(msg).add_done_callback(lambda f, i=i: done(i, f))
                if count == 0:
                    all_done.set()
                all_done.wait()
                counts = collections.Counter(type(e).__name__ for e in results if e is not None)
                self.w.emit(
                    "send_many_done",
                    id=batch_id,
                    count=count,
                    ok_count=sum(1 for e in results if e is None),
                    failed_count=sum(1 for e in results if e is not None),
                    error_counts=dict(counts),
                    errors=errors,
                    elapsed=time.monotonic() - start,
                )
            except BaseException:
                self.w.emit("fatal", where="send_many", id=batch_id, traceback=traceback.format_exc())

        threading.Thread(target=run, name=f"send_many-{batch_id}", daemon=True).start()
        return {"id": batch_id, "data_sha256": hashlib.sha256(data).hexdigest()}

    def cmd_hold(self, c: dict[str, Any]) -> dict[str, Any]:
        on = bool(c.get("on", True))
        if on and self.auto_release:
            raise ValueError("hold needs AUTO_RELEASE=False (queue get() releases)")
        self.hold = on
        return {"hold": on}

    def cmd_echo(self, c: dict[str, Any]) -> dict[str, Any]:
        self.echo = bool(c.get("on", True))
        self.echo_release = c.get("release", self.echo_release)
        self.echo_delay = float(c.get("delay", self.echo_delay))
        self.echo_data = bytes.fromhex(c["data_hex"]) if "data_hex" in c else None
        return {"echo": self.echo, "release": self.echo_release}

    def cmd_report(self, c: dict[str, Any]) -> dict[str, Any]:
        self.report = c.get("mode", "each")
        return {"mode": self.report}

    def cmd_release(self, c: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if c.get("all"):
                picked = list(self.held)
                self.held.clear()
            elif "identity" in c:
                key = (c["identity"], int(c["serial"]))
                picked = [m for m in self.held if (m.identity.hex(), m.serial) == key]
                if not picked:
                    raise KeyError(f"no held message {key}")
                self.held.remove(picked[0])
                picked = picked[:1]
            else:
                n = int(c.get("count", 1))
                picked = [self.held.popleft() for _ in range(min(n, len(self.held)))]
            left = len(self.held)
        for msg in picked:
            self._release(msg)
        return {"released": len(picked), "held": left}

    def _release(self, msg: Any, extra: dict[str, Any] | None = None) -> None:
        """Release a slot and report the outcome of the release future."""
        ident, serial = msg.identity.hex(), msg.serial
        fields = {"identity": ident, "serial": serial, **(extra or {})}
        try:
            fut = msg.release()
        except BaseException as exc:  # e.g. "Message still sending"
            self.w.emit("released", ok=False, **_exc_fields(exc), **fields)
            return

        def done(f: Any) -> None:
            exc = f.exception()
            if exc is not None:
                self.w.emit("released", ok=False, **_exc_fields(exc), **fields)
            else:
                res = f.result()
                self.w.emit(
                    "released", ok=True, result=None if res is None else [res[0].hex(), res[1]], **fields
                )

        fut.add_done_callback(done)

    def cmd_stats(self, c: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {
                "received": self.counters["received"],
                "held": len(self.held),
                "pending_sends": len(self.pending),
                "sent_ok": self.counters["sent_ok"],
                "sent_failed": self.counters["sent_failed"],
            }

    def cmd_stop(self, c: dict[str, Any]) -> dict[str, Any]:
        """Stop libchirp the way the binding wants it: chirp.stop(), then loop.stop().

        ``Chirp.stop()`` waits up to TIMEOUT for unreleased messages, then force-releases
        them and raises RuntimeError; that is reported, not hidden. Sends still queued
        in libchirp's thread-safe queue at close never get a callback (libchirp drops
        them in ``ch_wr_send_ts_cb`` while closing), so they are listed as unresolved.
        """
        result: dict[str, Any] = {"_event": "stopped", "ok": True}
        if self.chirp is not None:
            self.chirp.put(None)  # wake the receiver thread
            try:
                self.chirp.stop()
            except BaseException as exc:
                result.update(ok=False, **_exc_fields(exc))
            try:
                self.loop.stop()
            except BaseException as exc:
                result.update(ok=False, loop_error=repr(exc))
            if self.recv_thread is not None:
                self.recv_thread.join(timeout=5)
        with self.lock:
            result["unresolved_sends"] = sorted(self.pending)
        return result

    # ------------------------------------------------------------------ receiving
    def _describe_out(self, msg: Any) -> dict[str, Any]:
        return {
            "identity": msg.identity.hex(),
            "data_len": len(msg.data),
            "data_sha256": hashlib.sha256(msg.data).hexdigest(),
        }

    def _describe_in(self, msg: Any) -> dict[str, Any]:
        data = msg.data
        d = {
            "identity": msg.identity.hex(),
            "serial": msg.serial,
            "remote_identity": msg.remote_identity.hex(),
            "address": msg.address,
            "port": msg.port,
            "header_hex": msg.header.hex(),
            "data_len": len(data),
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "has_slot": msg.has_slot,
        }
        if len(data) <= self.data_hex_limit:
            d["data_hex"] = data.hex()
        return d

    def _receiver(self) -> None:
        """Consume ``Chirp.get()``; with AUTO_RELEASE the binding releases in get()."""
        chirp = self.chirp
        while True:
            try:
                msg = chirp.get()
                if msg is None:
                    return
                with self.lock:
                    self.counters["received"] += 1
                    n = self.counters["received"]
                    key = (msg.identity.hex(), msg.serial)
                    self.recent[key] = msg
                    while len(self.recent) > 16:
                        self.recent.popitem(last=False)
                if self.report == "each":
                    self.w.emit("received", n=n, **self._describe_in(msg))
                if self.echo:
                    self._echo(msg, n)
                elif not self.auto_release:
                    if self.hold:
                        with self.lock:
                            self.held.append(msg)
                    else:
                        self._release(msg)
            except BaseException:
                self.w.emit("fatal", where="receiver", traceback=traceback.format_exc())

    def _echo(self, msg: Any, n: int) -> None:
        """Send the received message back (same identity/address/port)."""
        echo_of = [msg.identity.hex(), msg.serial]
        if self.echo_data is not None:
            msg.data = self.echo_data
        after = None
        if not self.auto_release:
            if self.echo_release == "before":
                self._release(msg)
            elif self.echo_release == "released":
                if not self._release_and_wait(msg):
                    return
            else:

                def after() -> None:
                    self._release(msg)

        if self.echo_delay > 0:
            time.sleep(self.echo_delay)
        send_id = f"echo-{n}"
        extra = {"echo_of": echo_of, "header_hex": msg.header.hex()}
        try:
            fut = self.chirp.send(msg)
        except BaseException as exc:
            self.w.emit("sent", id=send_id, ok=False, **extra, **_exc_fields(exc))
            return
        self._track_send(fut, send_id, extra, after=after)

    def _release_and_wait(self, msg: Any) -> bool:
        """Release ``msg`` and block until libchirp has done it (echo release "released")."""
        fields = {"identity": msg.identity.hex(), "serial": msg.serial}
        try:
            res = msg.release().result(timeout=30)
        except BaseException as exc:
            self.w.emit("released", ok=False, **_exc_fields(exc), **fields)
            return False
        self.w.emit("released", ok=True, result=None if res is None else [res[0].hex(), res[1]], **fields)
        return True


COMMANDS = {
    "start",
    "send",
    "request",
    "send_many",
    "hold",
    "echo",
    "report",
    "release",
    "stats",
    "stop",
}


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="[libchirp_peer %(process)d] %(levelname)s %(name)s: %(message)s",
    )
    writer = _Writer()
    driver = Driver(writer)
    writer.emit("ready", python=sys.version.split()[0])
    stopped = False
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        seq = None
        cmd = None
        try:
            c = json.loads(line)
            seq = c.get("seq")
            cmd = c.get("cmd")
            if cmd not in COMMANDS:
                raise ValueError(f"unknown command {cmd!r}")
            if cmd != "start" and cmd != "stop" and driver.chirp is None:
                raise RuntimeError("not started")
            res = getattr(driver, f"cmd_{cmd}")(c)
            event = res.pop("_event", "ok")
            writer.emit(event, seq=seq, cmd=cmd, **res)
        except BaseException as exc:  # report, keep serving
            logging.getLogger("libchirp_peer").debug("command failed", exc_info=True)
            writer.emit("error", seq=seq, cmd=cmd, **_exc_fields(exc))
            if cmd == "stop":
                stopped = True
                break
        if cmd == "stop":
            stopped = True
            break
    if not stopped:  # EOF: the controller went away; still shut libchirp down cleanly
        try:
            res = driver.cmd_stop({})
            writer.emit(res.pop("_event"), seq=None, cmd="eof", **res)
        except BaseException:
            traceback.print_exc()
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

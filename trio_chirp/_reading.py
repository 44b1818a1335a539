"""Reading one connection: the frame loop, and which task runs it.

Only one task at a time may read a stream (a second ``receive_some`` raises
``trio.BusyResourceError``), and the parser's state must pass whole from one to the next.
``FrameReader`` holds both: the parser with everything the loop keeps between frames, and
the **owner**, the one task that reads now.

* The connection's **reader task** owns the reading whenever nobody else does.
* A task that waits for something only this connection can deliver (a synchronous
  ``send()`` waiting for its ACK, and so a ``request()`` too) reads it itself when the
  reading is free (``await_settled``): the ACK then wakes the waiting task directly,
  without the reader task taking a scheduler round in between (issue 14, section 1).

How the reading passes on:

* The reader task gives it up only where it would otherwise block in ``receive_some``
  with everything parsed handled, and only when a waiting task is registered: it wakes
  that one task and stands aside. No cancellation is ever needed to take the reading from a task
  blocked in ``receive_some``: a waiting task that finds the reader reading just waits, as
  before, and takes over at the reader's next turn.
* A waiting task reads until everything read is handled and its own outcome is known,
  then passes the reading on: to the next waiting task, or else to the reader, which
  resumes after one scheduler round of grace unless a waiting task took the reading
  first (a task sending in a loop takes it again before the reader even runs). The
  reader's resumption is still one task step per message, off the critical path.
* A data frame takes a slot exactly as the reader would; with none free the waiting task
  stops, leaves the slot to take to the reader (which waits for it as before), and waits
  for its outcome.
* ``receive()`` on a node with one connection reads it too (``read_for_receiver``): until
  a message is in the inbox, under a cancel scope that a message put by anyone else ends.
  So does an asynchronous ``request()`` waiting for its response (``read_for_response``),
  under a scope that the response arriving on another connection ends.
* Such a task that finds the reading taken sits in the connection's ``seat`` (one task at a
  time, ``_inbox.Seat``). When what the reader task delivered woke the seated task, the
  reader stands aside at once instead of reading on: the woken task gives the reading back
  when it leaves its seat, unless it takes it again first. A receiving loop, or a loop of
  requests, then reads what it waits for itself, one task step per message.
* A waiting task that is cancelled, anywhere, hands the reading back: its only await
  while it reads is ``receive_some``, which loses no bytes when cancelled on our streams
  (trio's ``SocketStream``, ``_tlsstream.TLSStream``, the in-memory stream), and the parser
  is only ever fed inside the loop, so the next owner continues where it stopped.
* A contained failure seen by a waiting task (bad input, a reset, the peer's EOF) closes
  the connection with the same error the reader would have closed it with; the waiting
  task then fails with the connection's error, as before.
* A connection that ends settles the waiting task's message first, then closes its
  stream, which ends a ``receive_some`` in progress with ``trio.ClosedResourceError``
  (trio's stream contract): the waiting task stops reading and finds its outcome.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from typing import Any, Final, Protocol

import trio

from ._config import Config
from ._errors import ChirpError, ConnectionLostError, MessageTooLargeError
from ._header import ChirpMeta
from ._header import split as split_header
from ._inbox import Inbox, Seat
from ._message import Message, received_message
from ._protocol import (
    NEED_DATA,
    ZERO_IDENTITY,
    Announcement,
    DataFrame,
    FrameHead,
    FrameParser,
    Handshake,
    OversizedFrame,
    decode_announcement,
)
from ._remote import Outgoing, OutgoingState, Remote
from ._slots import SlotPool
from ._stats import Traffic

__all__ = ["CONTAINED_ERRORS", "FrameReader", "ReadHost"]

CONTAINED_ERRORS: Final = (ChirpError, OSError, ssl.SSLError, trio.BrokenResourceError)
"""Failures that cost one connection and nothing else (``_connection`` closes with them)."""

_ENDS_A_WAITING_READ: Final = (*CONTAINED_ERRORS, trio.ClosedResourceError)
"""What stops a waiting task's read: a contained failure, which closes the connection as
the reader task would, or a closed stream (the connection is ending already)."""

_READER: Final = object()
"""The owner token of the connection's own reader task."""


class ReadHost(Protocol):
    """What the frame loop needs of its connection (``_connection.Connection`` is one)."""

    config: Config
    slots: SlotPool
    inbox: Inbox
    traffic: Traffic
    last_activity: float
    waiting_for_slot: bool
    peer_closed: bool

    @property
    def stream(self) -> trio.abc.Stream: ...

    @property
    def closed(self) -> bool: ...

    @property
    def remote(self) -> Remote[Any] | None: ...

    @property
    def peer_identity(self) -> bytes | None: ...

    @property
    def slot_probe(self) -> Callable[[], bool] | None:
        """The stream's reset probe, asked while waiting for a slot (``SlotPool.acquire``)."""

    def watch_stall(self, deadline: float) -> None:
        """Close the connection unless more of the current frame arrives by ``deadline`` (inf: clear)."""

    def on_peer_handshake(self, handshake: Handshake) -> None:
        """The peer's handshake frame (refused by raising a ``ChirpError``)."""

    def learn(self, announcement: Announcement, parser: FrameParser) -> None:
        """The peer announced itself."""

    def deliver(self, message: Message) -> None:
        """A received message holding one of this connection's slots; never blocks."""

    def release_message(self, message: Message, ack: bool) -> None:
        """A delivered message's release hook: frees its slot, ACKs if asked."""

    def on_bad_header(self) -> None:
        """A malformed header map (the message is delivered untouched)."""

    def on_oversized(self, head: FrameHead) -> bool:
        """An announced peer's frame above our limit, skipped unread; False: close."""

    def fail(self, exc: BaseException) -> None:
        """A contained failure met while reading outside the reader task: close with it."""


def _settled(out: Outgoing) -> bool:
    state = out.state
    return state is OutgoingState.DONE or state is OutgoingState.WITHDRAWN


def _wake(out: Outgoing) -> None:
    """Wake the task waiting in ``out.wait()`` without settling ``out`` (it checks and goes on)."""
    waiter, out.waiter = out.waiter, None
    if waiter is not None:
        waiter.set()


class FrameReader:
    """One connection's parser and frame loop, run by one task at a time (see the module)."""

    def __init__(self, host: ReadHost) -> None:
        self._host = host
        config = host.config
        self.parser = FrameParser(config.max_msg_size)
        self._bufsize = config.effective_buffer_size
        self._timeout = config.timeout
        self._announcement_due = False  # the first frame after the peer's handshake may be one
        self._head_time = 0.0  # when the current data frame's fixed part was read
        self._clock: Callable[[], float] = trio.current_time  # the run's clock, set by _read
        self._slot_cost: int | None = None
        """A data frame whose fixed part was read and which still needs a slot (the reader takes it)."""
        self.owner: object | None = None
        self._started = False
        self._aside: trio.lowlevel.Task | None = None  # the reader task, while someone else reads
        self._waiting: list[Outgoing] = []  # waiting tasks that would read if they could
        self.handed_over = 0
        """How often a waiting task took the reading (for tests and benchmarks)."""
        self.stopped_for_slot = 0
        """How often a waiting task stopped reading at a data frame that found no free slot."""
        self.receiver_reads = 0
        """How often ``receive()`` took the reading (for tests and benchmarks)."""
        self.response_reads = 0
        """How often an asynchronous ``request()`` took the reading, waiting for its response."""
        self.seat: Seat | None = None
        """The waiting task that would read this connection when the reader stands aside."""

    def feed(self, data: bytes) -> None:
        """Bytes already read from the stream (a prelude's), taken before anything else."""
        if data:
            self._host.traffic.bytes_in += len(data)
            self.parser.receive_data(data)

    # --- the reader task ---------------------------------------------------------------
    async def run(self) -> None:
        """The connection's reader task: read whenever nobody else does."""
        self._started = True
        while True:
            if self.owner is None:
                self.owner = _READER
                try:
                    await self._read(None)
                finally:
                    if self.owner is _READER:
                        self.owner = None
            # Someone else reads, or we handed the reading to a waiting task: that task
            # wakes us when it is done with it.
            await self._stand_aside()
            if self.owner is None:
                # One scheduler round of grace: a task that just handed the reading back and
                # yields once before its next send or request (``request()`` does) takes it
                # again itself, instead of finding the reader blocked in ``receive_some``.
                await trio.lowlevel.checkpoint()

    async def _stand_aside(self) -> None:
        """Wait for ``_resume_reader`` (cheaper than a ``ParkingLot``: this is once per message)."""
        self._aside = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._aside = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _resume_reader(self) -> None:
        """Nobody reads: the reader task resumes (unless a waiting task takes the reading first)."""
        task = self._aside
        if task is not None:
            self._aside = None
            trio.lowlevel.reschedule(task)

    # --- a waiting task ------------------------------------------------------------------
    def claimable(self) -> bool:
        """Nobody reads, and a waiting task may (the reader task has started, no slot is awaited)."""
        return self.owner is None and self._started and self._slot_cost is None and not self._host.closed

    @trio.lowlevel.enable_ki_protection
    async def await_settled(self, out: Outgoing) -> None:
        """Wait until ``out`` (written on this connection) is settled, reading meanwhile when free.

        KI-protected like the connection's own tasks: a Ctrl-C arrives at a checkpoint (the
        ``receive_some``), never halfway through handling a frame in the caller's task."""
        try:
            while not _settled(out):
                if self.claimable():
                    await self._read_for(out)
                    continue
                waiting = self._waiting
                waiting.append(out)
                try:
                    await out.wait()
                finally:
                    waiting.remove(out)
        finally:
            self._pass_on()  # we may have been handed the reading: give it back

    async def _read_for(self, out: Outgoing) -> None:
        self.handed_over += 1
        await self._read_until(lambda: _settled(out))

    async def read_for_receiver(self) -> None:
        """``receive()`` with an empty inbox on a node whose one connection this is: read it
        until the inbox has something (from here, or from anywhere else: ``Inbox.put``
        cancels this read), when the reading is free; return at once when it is not."""
        if self.claimable():
            self.receiver_reads += 1
            inbox = self._host.inbox
            with trio.CancelScope() as scope:
                inbox.reading = reading = (scope, self._host)
                try:
                    await self._read_until(inbox.ready)
                finally:
                    if inbox.reading is reading:  # not a later read's (another connection's)
                        inbox.reading = None

    async def read_for_response(self, done: Callable[[], bool]) -> None:
        """An asynchronous ``request()`` waiting for its response: read this connection (the
        one the request went on) until ``done()``, when the reading is free; return at once
        when it is not. The caller's cancel scope ends the read if the response comes
        on another connection (``RequestTable.offer``)."""
        if self.claimable():
            self.response_reads += 1
            await self._read_until(done)

    @trio.lowlevel.enable_ki_protection
    async def _read_until(self, done: Callable[[], bool]) -> None:
        """Read as the owner until ``done()`` (see ``_read``), then pass the reading on."""
        self.owner = task = trio.lowlevel.current_task()
        try:
            await self._read(done)
        except _ENDS_A_WAITING_READ as exc:
            # The waiting task then fails with the connection's error when it closes.
            if not self._host.closed:
                self._host.fail(exc)
        finally:
            if self.owner is task:
                self.owner = None
            self._pass_on()

    def take_seat(self, seat: Seat) -> bool:
        """The current task waits for something this connection will deliver and would read
        it itself (``_inbox.Seat``); False when another task has the seat."""
        if self.seat is not None:
            return False
        self.seat = seat
        seat.task = trio.lowlevel.current_task()
        return True

    def leave_seat(self, seat: Seat) -> None:
        """The seated task stops waiting: a reader task that stood aside for it resumes
        (``give_back``), unless the task takes the reading again first."""
        if self.seat is seat:
            self.seat = None
        give_back = seat.give_back
        seat.task = seat.give_back = None
        seat.woken = False
        if give_back is not None:
            give_back()

    def _pass_on(self) -> None:
        """Nobody reads: the next waiting task reads, or else the reader task resumes (unless
        a waiting task takes the reading before it runs). Whoever is woken is runnable and
        passes the reading on in turn when it leaves, so the reading is never left idle."""
        if self.owner is None:
            if self._waiting and self._slot_cost is None:
                _wake(self._waiting[0])
            else:
                self._resume_reader()  # only the reader waits for a slot

    # --- the loop ----------------------------------------------------------------------
    async def _read(self, done: Callable[[], bool] | None) -> None:
        """Handle frames until everything read is handled and ``done()`` (a waiting task), or
        until the reader task (``done`` None) hands the reading to a waiting task; a waiting
        task also returns when a data frame finds no free slot.
        """
        host = self._host
        parser = self.parser
        receive_some = host.stream.receive_some
        bufsize = self._bufsize
        traffic = host.traffic
        slots = host.slots
        self._clock = clock = trio.lowlevel.current_clock().current_time  # trio.current_time(), one call less
        if self._slot_cost is not None:
            assert done is None  # only the reader waits for a slot
            await self._wait_for_slot(self._slot_cost)  # one a waiting task left to it
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                # Only here, with everything read handled, does the reading change hands:
                # what came with the ACK (a response, say) is delivered by whoever read it.
                if done is not None:
                    if done():
                        return
                elif self._waiting:
                    self.owner = None  # the task waiting here reads from now on
                    _wake(self._waiting[0])
                    return
                elif (seat := self.seat) is not None and seat.woken:
                    # We woke the seated task: it reads on, and gives the reading back
                    # when it leaves its seat (``leave_seat``).
                    seat.woken = False
                    seat.give_back = self._pass_on
                    self.owner = None
                    return
                if parser.mid_frame:
                    # A peer that stops in the middle of a frame must not hold the
                    # connection (and a slot) for ever: the rest must keep coming.
                    host.watch_stall(trio.current_time() + self._timeout)
                    try:
                        data = await receive_some(bufsize)
                    finally:  # also when a waiting task is cancelled here: the next reader re-arms
                        host.watch_stall(math.inf)
                else:
                    data = await receive_some(bufsize)
                if not data:
                    if parser.mid_frame:
                        raise ConnectionLostError(f"{host} closed by the peer in the middle of a frame")
                    host.peer_closed = True
                    raise ConnectionLostError(f"{host} closed by the peer")
                traffic.bytes_in += len(data)
                parser.receive_data(data)
                continue
            cls = type(event)
            if cls is FrameHead:
                assert isinstance(event, FrameHead)
                if self._announcement_due and not event.is_noop:
                    self._announcement_due = False  # only the first frame after the handshake may be one
                if event.is_message:
                    traffic.messages_in += 1
                    self._head_time = clock()  # msg.deadline counts from here
                    cost = event.header_len + event.data_len
                    if not slots.try_take(cost):
                        if done is not None:
                            self._slot_cost = cost
                            host.waiting_for_slot = True
                            self.stopped_for_slot += 1
                            return  # the reader waits for the slot, as it always did
                        await self._wait_for_slot(cost)
                elif event.is_noop:
                    if self._announcement_due and event.identity != ZERO_IDENTITY:
                        announcement = decode_announcement(event.identity)
                        if announcement is not None:
                            self._announcement_due = False
                            host.learn(announcement, parser)
                            continue
                    traffic.noops_in += 1
                    now = trio.current_time()
                    host.last_activity = now
                    remote = host.remote
                    if remote is not None:
                        remote.last_activity = now
                else:
                    traffic.acks_in += 1
                    remote = host.remote
                    if remote is not None:
                        remote.on_ack(event.identity)
            elif cls is DataFrame:
                assert isinstance(event, DataFrame)
                self._deliver(event)
            elif cls is OversizedFrame:
                assert isinstance(event, OversizedFrame)
                traffic.messages_in += 1
                if not host.on_oversized(event.head):
                    head = event.head
                    raise MessageTooLargeError(
                        f"{host}: frame of {head.header_len + head.data_len} bytes above max_msg_size="
                        f"{host.config.max_msg_size}, and too many refusals are still being answered"
                    )
            else:
                assert isinstance(event, Handshake)
                host.on_peer_handshake(event)
                self._announcement_due = True

    async def _wait_for_slot(self, cost: int) -> None:
        """The reader task stops reading until a slot for ``cost`` is free (TCP pushes back).

        ``waiting_for_slot`` says so meanwhile, and stays set if the connection closes."""
        host = self._host
        self._slot_cost = cost
        host.waiting_for_slot = True
        await host.slots.acquire(cost, host.slot_probe)
        host.waiting_for_slot = False
        self._slot_cost = None

    def _deliver(self, event: DataFrame) -> None:
        host = self._host
        head = event.head
        remote = host.remote
        peer_identity = host.peer_identity
        assert remote is not None
        assert peer_identity is not None
        now = self._clock()
        host.last_activity = remote.last_activity = now
        header = event.header
        meta: ChirpMeta | None = None
        msg_deadline: float | None = None
        if header and header[0] >> 4 == 8:  # a msgpack fixmap: maybe our map
            header, meta, malformed = split_header(header)
            if malformed:
                host.on_bad_header()
            elif meta is not None and meta.remaining is not None:
                msg_deadline = self._head_time + meta.remaining
        host.deliver(
            received_message(
                head.identity,
                head.serial,
                header,
                event.data,
                remote.address,
                remote.port,
                peer_identity,
                head.requests_ack,
                host.release_message,
                msg_deadline,
                meta,
                head.header_len + head.data_len,
            )
        )

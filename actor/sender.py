"""The actor's transition sender: a background thread that owns the DEALER socket.

The control loop only calls ``put`` and ``send_stats`` (queue appends, never the network).
The thread groups transitions into chunks (by count, bytes or age), journals each chunk
(``actor.spool``), and sends it once the learner has answered HELLO with WELCOME. Chunks the
learner does not acknowledge in time are sent again (the timeout follows the acks' round trip,
``actor/resend_timer.py``, between ``resend_after`` and ``max_resend_after`` s); at most
``max_in_flight`` await an ack at a time. A learner restart is noticed from its session id in
WELCOME/ACK (or an ERROR asking for HELLO), and everything it has not checkpointed is resent.

Over 400 lines on purpose: one thread's state machine (HELLO, chunking, journaling, acks,
resends, a learner's restart) whose parts read and change the same in-flight table; the journal
(``actor/spool.py``) and the chunk format (``shared/wire/chunks.py``) are already their own modules.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from actor.resend_timer import ResendTimer
from actor.spool import Spool
from shared.data.dataset import Transition
from shared.learning.schedule import owed_updates
from shared.metrics import write_json_atomic
from shared.wire.chunks import ChunkBuilder
from shared.wire.protocol import (
    MAX_MESSAGE_BYTES,
    MessageType,
    ProtocolError,
    VersionError,
    decode,
    encode,
    encode_frames,
    make_message,
)
from shared.wire.transport import CurveKeys, data_client, plain_contract

log = logging.getLogger("wsrl.actor.sender")

STATE_FILE = "actor_state.json"


@dataclass(frozen=True)
class SenderConfig:
    chunk_transitions: int = 256
    chunk_bytes: int = 4 * 2**20
    flush_interval: float = 0.1  # s; an open chunk older than this is sent
    # s without an ack before a chunk is sent again: the timeout follows the acks' round trip
    # (actor/resend_timer.py, RFC 6298) between these bounds
    resend_after: float = 2.0
    max_resend_after: float = 30.0
    hello_every: float = 0.5  # s between HELLOs until WELCOME
    max_in_flight: int = 32  # chunks awaiting an ack
    memory_bytes: int = 256 * 2**20  # unacknowledged chunk payloads kept in memory

    def __post_init__(self) -> None:
        if not 0 < self.resend_after <= self.max_resend_after:
            raise ValueError("need 0 < resend_after <= max_resend_after")


class FatalLearnerError(RuntimeError):
    """The learner refused this actor for good (e.g. a config fingerprint mismatch)."""


class TransitionSender:
    def __init__(
        self,
        host: str,
        port: int,
        actor_id: str,
        fingerprint: str,
        spool_dir: str | Path,
        keys: CurveKeys | None = None,
        config: SenderConfig = SenderConfig(),
        contract: Mapping[str, Any] | None = None,
    ) -> None:
        """``contract`` is what ``fingerprint`` hashes; sent in HELLO, it lets a learner that
        refuses this actor say which setting differs."""
        self.host, self.port, self.keys, self.cfg = host, port, keys, config
        self.actor_id = actor_id
        self.fingerprint = fingerprint
        self.contract = plain_contract(contract) if contract is not None else None
        self.session = uuid.uuid4().hex[:16]
        self.spool = Spool(spool_dir, config.memory_bytes)
        self._state_path = Path(spool_dir) / STATE_FILE
        state = self._read_state()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # transitions put but not yet journaled in a chunk
        self._stop = threading.Event()
        self._drain = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transition-sender", daemon=True)
        self._seq = 0
        self.resend_timer = ResendTimer(config.resend_after, config.max_resend_after)
        self._learner: str | None = None  # session id of the learner process that welcomed us
        self.run: str | None = state.get("run")  # the learner run the spooled chunks belong to
        # Transitions journaled per actor session (this one and earlier ones): what a restarted
        # actor's predecessor had handed over for delivery when it died.
        self.journaled: dict[str, int] = dict(state.get("journaled", {}))
        self.welcomed = False
        self.fatal: str | None = None
        self.archived_transitions = 0  # journaled for another learner run: never delivered
        self._state_error_logged = -1e9
        # What the learner last told us (persisted, so a restarted actor knows where warmup is).
        self.learner_env_steps = int(state.get("learner_env_steps", 0))
        self.learner_grad_steps = 0
        self.warmup_steps: int | None = state.get("warmup_steps")
        self.utd = 1
        self.weights_version = 0
        self.counters = {
            "chunks_sent": 0,
            "resends": 0,
            "acks": 0,
            "stats_sent": 0,
            "stats_dropped": 0,
            "send_failures": 0,
            "errors": 0,
            "learner_restarts": 0,
            "learner_lost_chunks": 0,  # the learner gave these up as never arrived (its ledger)
        }
        if len(self.spool):
            log.info(
                "spool: %d chunks (%d transitions) from an earlier run will be delivered",
                len(self.spool),
                self.spool.unacked_transitions,
            )

    # -------------------------------------------------------------- control-loop side (cheap)

    def start(self) -> TransitionSender:
        self._thread.start()
        return self

    def put(self, transition: Transition) -> None:
        """Queue one transition (arrays are not copied, so do not modify them afterwards).
        Never blocks."""
        if self.fatal:
            raise FatalLearnerError(self.fatal)
        with self._lock:
            self._queued += 1
        self._queue.put(("t", transition))

    def send_stats(self, stats: Mapping[str, float]) -> None:
        self._queue.put(("s", dict(stats)))

    @property
    def unacked_transitions(self) -> int:
        return self._queued + self.spool.unacked_transitions

    @property
    def global_env_steps(self) -> int:
        """Env steps the learner has from all actors, plus ours it has not acknowledged yet."""
        return self.learner_env_steps + self.unacked_transitions

    def lag_given(self, grad_steps: int) -> int:
        """Env steps the learner's updates are behind its UTD schedule, were it at ``grad_steps``
        (0 during warmup)."""
        if self.warmup_steps is None:
            return 0
        # ours count as soon as they are taken, not when acknowledged
        return owed_updates(self.global_env_steps, grad_steps, self.warmup_steps, self.utd)

    def status(self) -> dict[str, Any]:
        return {
            "welcomed": self.welcomed,
            "unacked_transitions": self.unacked_transitions,
            "spool_chunks": len(self.spool),
            "spilled": self.spool.spilled,
            "rejected_transitions": self.spool.rejected_transitions,
            "learner_env_steps": self.learner_env_steps,
            "resend_timeout_s": round(self.resend_timer.timeout, 3),
            **self.counters,
        }

    def close(
        self, drain_timeout: float = 5.0, unwritten_timeout: float = 60.0, give_up: threading.Event | None = None
    ) -> bool:
        """Send what is queued and wait up to ``drain_timeout`` s for acks. Returns True when
        everything was acknowledged; what was written to the spool stays there for the next run.
        Transitions that could not be written (the spool's disk is full) live in memory only: for
        them the wait goes on up to ``unwritten_timeout`` s, for an ack or for disk space, unless
        ``give_up`` is set (the operator's second Ctrl-C); what is left then is reported as lost."""
        self._drain.set()
        deadline = time.monotonic() + drain_timeout
        while self._thread.is_alive() and time.monotonic() < deadline and not self.fatal:
            if self._queue.empty() and self.unacked_transitions == 0:
                break
            time.sleep(0.01)
        if self.spool.memory_only_transitions and self._thread.is_alive() and not self.fatal:
            log.error(
                "sender: %d transitions are in memory only (the spool's disk %s is full) and not acknowledged: "
                "waiting up to %.0f s for the learner or for disk space; Ctrl-C again gives up and loses them",
                self.spool.memory_only_transitions,
                self.spool.directory,
                unwritten_timeout,
            )
            until = time.monotonic() + unwritten_timeout
            said = time.monotonic()
            while self.spool.memory_only_transitions and time.monotonic() < until and not self.fatal:
                if give_up is not None and give_up.is_set():
                    break
                if time.monotonic() - said >= 5.0:
                    said = time.monotonic()
                    log.error("sender: still %d transitions in memory only", self.spool.memory_only_transitions)
                time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=5.0)
        lost = self.spool.memory_only_transitions
        kept = self.unacked_transitions - lost
        if kept:
            log.warning(
                "sender: %d transitions not acknowledged yet; they stay in %s for the next run",
                kept,
                self.spool.directory,
            )
        if lost:
            self.counters["lost_unwritten"] = lost
            log.error(
                "sender: %d transitions were never written to %s (its disk was full) and were not acknowledged: "
                "they are LOST with this process",
                lost,
                self.spool.directory,
            )
        if self.archived_transitions:
            log.error(
                "sender: %d transitions journaled for an earlier learner run were archived, not delivered",
                self.archived_transitions,
            )
        if self.spool.rejected_transitions:
            log.error(
                "sender: the learner refused %d transitions (kept in %s): they were not delivered",
                self.spool.rejected_transitions,
                self.spool.directory / "rejected",
            )
        return not (
            self.unacked_transitions
            or self.archived_transitions
            or self.spool.rejected_transitions
            or self.counters["learner_lost_chunks"]
        )

    @property
    def saturated(self) -> bool:
        """The spool can take no more: its disk is full and its memory bound is reached."""
        return self.spool.saturated

    # ------------------------------------------------------------------------- the thread

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text())
            return state if state.get("actor") == self.actor_id else {}
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        state = {
            "actor": self.actor_id,
            "run": self.run,
            "learner_env_steps": self.learner_env_steps,
            "warmup_steps": self.warmup_steps,
            "journaled": self.journaled,
        }
        try:
            write_json_atomic(self._state_path, state)
        except OSError as e:  # a full disk: the state is rewritten at the next chunk, ack or welcome
            now = time.monotonic()
            if now - self._state_error_logged > 10.0:
                log.error("sender: cannot write %s (%s); going on, and trying again", self._state_path, e)
                self._state_error_logged = now

    def _run(self) -> None:
        context = zmq.Context()
        sock = data_client(context, self.host, self.port, self.keys)
        builder = ChunkBuilder()
        opened = 0.0
        next_hello = next_disk_try = 0.0
        try:
            while not self._stop.is_set() and not self.fatal:
                now = time.monotonic()
                n_new = self._drain_queue(builder, sock)
                if builder and not opened:
                    opened = now
                if builder and (
                    len(builder) >= self.cfg.chunk_transitions
                    or builder.nbytes >= self.cfg.chunk_bytes
                    or now - opened >= self.cfg.flush_interval
                    or self._drain.is_set()
                ):
                    self._close_chunk(builder)
                    opened = 0.0
                if not self.welcomed and now >= next_hello:
                    self._send(
                        sock,
                        make_message(
                            MessageType.HELLO,
                            actor=self.actor_id,
                            session=self.session,
                            fingerprint=self.fingerprint,
                            **({"contract": self.contract} if self.contract is not None else {}),
                        ),
                    )
                    next_hello = now + self.cfg.hello_every
                if self.welcomed:
                    self._send_due(sock, now)
                if self.spool.disk_full and now >= next_disk_try:
                    self.spool.retry_disk()
                    next_disk_try = now + 1.0
                # Wait for replies only when nothing else is pending.
                timeout = 0 if (n_new or not self._queue.empty()) else 2
                if sock.poll(timeout):
                    while sock.poll(0):
                        self._handle(sock.recv(copy=True))
        except Exception:
            log.exception("sender thread failed")
            self.fatal = self.fatal or "the sender thread failed (see the log)"
        finally:
            sock.close(0)
            context.term()

    def _drain_queue(self, builder: ChunkBuilder, sock: zmq.Socket) -> int:
        n = 0
        while n < 4 * self.cfg.chunk_transitions:
            try:
                kind, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "t":
                builder.add(item)
                if len(builder) >= self.cfg.chunk_transitions or builder.nbytes >= self.cfg.chunk_bytes:
                    self._close_chunk(builder)
            elif self.welcomed:
                ok = self._send(
                    sock, make_message(MessageType.STATS, actor=self.actor_id, session=self.session, stats=item)
                )
                self.counters["stats_sent" if ok else "stats_dropped"] += 1
            else:
                self.counters["stats_dropped"] += 1
            n += 1
        return n

    def _close_chunk(self, builder: ChunkBuilder) -> None:
        n = len(builder)
        frames = encode_frames(builder.build(self.actor_id, self.session, self._seq))
        # The transitions move from "queued" to the spool's unacknowledged count.
        self.spool.add(self.session, self._seq, n, frames)
        with self._lock:
            self._queued -= n
        self.journaled[self.session] = self.journaled.get(self.session, 0) + n
        self._seq += 1
        self._write_state()

    def _send(self, sock: zmq.Socket, message: dict[str, Any] | list[Any]) -> bool:
        """A message dict, or the frames of an encoded chunk (sent without copying)."""
        frames = message if isinstance(message, list) else [encode(message)]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # no connected learner (IMMEDIATE) or its queue is full
            self.counters["send_failures"] += 1
            return False

    def _send_due(self, sock: zmq.Socket, now: float) -> None:
        expired = False
        for key in self.spool.due(
            now, self.resend_timer.timeout, limit=self.cfg.max_in_flight, max_in_flight=self.cfg.max_in_flight
        ):
            resend = self.spool.was_sent(key)
            if not self._send(sock, self.spool.payload(key)):
                break
            self.spool.mark_sent(key, now)
            self.counters["resends" if resend else "chunks_sent"] += 1
            expired |= resend
        if expired:  # one back-off per expiry, however many chunks it sends again
            self.resend_timer.expired()

    # ----------------------------------------------------------------------- replies

    def _handle(self, data: bytes) -> None:
        try:
            msg = decode(data, MAX_MESSAGE_BYTES)
        except VersionError as e:
            self.fatal = f"the learner speaks another protocol version ({e}); run the same release on both machines"
            log.error("sender: %s", self.fatal)
            return
        except ProtocolError as e:
            log.warning("sender: malformed reply from the learner: %s", e)
            return
        kind = msg["type"]
        if kind == MessageType.WELCOME:
            self._welcome(msg)
        elif kind == MessageType.ACK:
            if msg.get("learner") != self._learner:
                self._lost_learner("an ack from a different learner session")
                return
            self._learner_info(msg)
            self._learner_lost(msg.get("lost_chunks"))
            session, seq = str(msg.get("session")), int(msg.get("seq", -1))
            sent_at = self.spool.sent_once_at(session, seq)
            if sent_at is not None and sent_at >= 0:
                self.resend_timer.sample(time.monotonic() - sent_at)
            n = self.spool.ack(session, seq)
            self.counters["acks"] += 1
            self._apply_commits(msg.get("committed"))
            if n:
                self._write_state()
        elif kind == MessageType.ERROR:
            self._error(msg)
        else:
            log.warning("sender: unexpected %s message from the learner", kind)

    def _learner_lost(self, lost: Any) -> None:
        if isinstance(lost, int) and not isinstance(lost, bool) and lost > self.counters["learner_lost_chunks"]:
            log.error(
                "sender: the learner counts %d chunk(s) of this actor as LOST (they never reached it and no "
                "journal held them any more); see its log",
                lost,
            )
            self.counters["learner_lost_chunks"] = lost

    def _welcome(self, msg: Mapping[str, Any]) -> None:
        learner = msg.get("learner")
        run = msg.get("run")
        if self.run is not None and run != self.run:
            # Chunks journaled for another learner run must not leak into this one.
            moved, transitions = self.spool.archive(f"run-{self.run}")
            self.archived_transitions += transitions
            if moved:
                log.warning(
                    "sender: %d spooled chunks belong to learner run %s, not %s; moved to %s",
                    moved,
                    self.run,
                    run,
                    self.spool.directory / f"run-{self.run}",
                )
            self.learner_env_steps = 0
        if self._learner is not None and learner != self._learner:
            self.counters["learner_restarts"] += 1
        if learner != self._learner:
            self.resend_timer = ResendTimer(self.cfg.resend_after, self.cfg.max_resend_after)  # its own round trip
            # A new learner has only what its checkpoint holds: resend everything not committed.
            resent = self.spool.unack_all()
            if resent and self._learner is not None:
                log.warning(
                    "sender: the learner restarted; resending %d acknowledged but uncheckpointed transitions", resent
                )
        self._learner = learner
        self.run = str(run)
        self._learner_info(msg)
        self._apply_commits(msg.get("committed"))
        self.welcomed = True
        self._write_state()
        log.info(
            "sender: welcomed by learner %s (env steps %d, warmup %s, weights v%d); %d chunks to send",
            learner,
            self.learner_env_steps,
            self.warmup_steps,
            self.weights_version,
            self.spool.unacked_chunks,
        )

    def _learner_info(self, msg: Mapping[str, Any]) -> None:
        for name, attr in (
            ("env_steps", "learner_env_steps"),
            ("grad_steps", "learner_grad_steps"),
            ("warmup_steps", "warmup_steps"),
            ("utd", "utd"),
            ("weights_version", "weights_version"),
        ):
            v = msg.get(name)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                setattr(self, attr, max(v, 1) if name == "utd" else v)

    def _apply_commits(self, committed: Any) -> None:
        if not isinstance(committed, dict):
            return
        for session, mark in committed.items():
            if isinstance(mark, list) and len(mark) == 2 and isinstance(mark[0], int) and isinstance(mark[1], list):
                self.spool.commit(str(session), mark[0], [s for s in mark[1] if isinstance(s, int)])

    def _lost_learner(self, why: str) -> None:
        if self.welcomed:
            log.warning("sender: %s; saying HELLO again", why)
        self.welcomed = False

    def _error(self, msg: Mapping[str, Any]) -> None:
        code, reason = msg.get("code"), str(msg.get("reason", ""))[:500]
        self.counters["errors"] += 1
        if code == "hello_first":
            self._lost_learner("the learner does not know this session")
        elif code in ("fingerprint", "version", "identity"):
            self.fatal = f"the learner refused this actor: {reason}"
            log.error("sender: %s", self.fatal)
        elif code == "rejected" and isinstance(msg.get("seq"), int):
            self.spool.reject(str(msg.get("session")), msg["seq"], reason)
        else:
            log.warning("sender: learner error %s: %s", code, reason)

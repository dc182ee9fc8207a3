"""The learner's data channel: a thread that owns the ROUTER socket and fills the replay buffer.

Per message from an actor's DEALER:
- HELLO: the config fingerprint must match (else ERROR ``fingerprint`` naming each setting of
  the contract that differs, and the actor stops); with CURVE, an actor id belongs to the key
  that first said HELLO as it (recorded in the ledger, so in every checkpoint), and another key
  is refused (ERROR ``identity``);
  the answer is WELCOME with what this learner already holds from that actor (the ledger
  marks), the env steps ingested, the warmup length and the weights version.
- CHUNK: only from a welcomed connection; a chunk already in the ledger is acknowledged again
  and not inserted; a new one is validated whole, inserted, recorded and acknowledged; a bad one
  gets ERROR ``rejected``.
- STATS: queued for the main thread's logs, at most a few per second per actor; no reply.
- Bounded: a chunk far beyond the highest seq its session delivered is refused; a hole that
  stays open while ``MAX_SEQ_AHEAD`` later chunks arrive is given up and reported as lost
  (``lost_chunks`` in the counters and in each ACK); an actor id holds at most
  ``MAX_SESSIONS_PER_ACTOR`` sessions (fully checkpointed old ones are forgotten first).
Anything malformed is logged (rate-limited) and answered with ERROR; the thread keeps serving.
Inserting a chunk and recording it in the ledger happen under ``lock``, which the learner also
holds while it snapshots buffer and ledger, so a checkpoint never splits a chunk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import zmq

from learner.ledger import Ledger
from shared.data.dataset import ObsSpec, ValueLimits
from shared.storage.replay_buffer import ReplayBuffer
from shared.wire.chunks import check_id, check_seq, unpack_chunk
from shared.wire.protocol import (
    MAX_MESSAGE_BYTES,
    MessageType,
    ProtocolError,
    VersionError,
    decode_frames,
    encode,
    make_message,
)
from shared.wire.transport import contract_differences

log = logging.getLogger("wsrl.learner.ingest")

MAX_STATS_KEYS = 64
# How far past an actor session's watermark a chunk's seq may be. A sender keeps at most 32
# chunks in flight and resends in order, so a seq further ahead is forged or broken; refusing it
# also bounds the out-of-order seqs the ledger keeps (and every ACK carries).
MAX_SEQ_AHEAD = 1024
MAX_SESSIONS_PER_ACTOR = 64  # ledger entries (and buffer streams) one actor id may hold
STATS_PER_S, STATS_BURST = 5.0, 20  # each actor's STATS beyond this rate are dropped


def _user_id(frame: zmq.Frame) -> str:
    """The CURVE key that authenticated the connection (ZAP User-Id), "" without CURVE."""
    try:
        return str(frame.get("User-Id") or "")
    except zmq.ZMQError:
        return ""


class IngestServer:
    def __init__(
        self,
        sock: zmq.Socket,
        buffer: ReplayBuffer,
        ledger: Ledger,
        fingerprint: str,
        info: Callable[[], Mapping[str, Any]],
        contract: Mapping[str, Any] | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
        limits: ValueLimits | None = None,
        wire: ObsSpec | None = None,
        derive: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        """``info()`` returns what replies carry besides env steps (the ledger's): the run id,
        grad_steps, warmup_steps, utd, weights_version. ``contract`` (what ``fingerprint`` hashes)
        lets a refusal name what differs. ``wire``: the observations actors send (default the
        buffer's); ``derive`` adds the buffer's derived keys to a chunk's frames (the trunk-feature
        cache, ``learner.features``), outside the buffer's lock."""
        self.sock = sock
        self.buffer = buffer
        self.wire = buffer.obs_spec if wire is None else wire
        self.derive = derive
        self.ledger = ledger
        self.committed = ledger.copy()
        self.fingerprint = fingerprint
        self.contract = contract
        self.limits = limits or ValueLimits()
        self.info = info
        self.max_bytes = max_bytes
        self.session = uuid.uuid4().hex[:16]
        self.lock = threading.Lock()
        self.data_arrived = threading.Condition()
        self.stats: queue.SimpleQueue = queue.SimpleQueue()
        self._peers: dict[bytes, str] = {}  # routing id -> welcomed actor id
        self._stats_tokens: dict[str, tuple[float, float]] = {}  # actor -> (tokens, last refill)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.counters = {
            "chunks": 0,
            "duplicates": 0,
            "rejected": 0,
            "malformed": 0,
            "hellos": 0,
            "refused": 0,
            "stats": 0,
            "stats_dropped": 0,
            "intervened_steps": 0,
            "lost_chunks": 0,  # holes given up (``Ledger.close_holes``)
        }

    @property
    def env_steps(self) -> int:
        return self.ledger.transitions()

    def start(self) -> IngestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def set_committed(self, ledger: Ledger) -> None:
        """Called after a checkpoint with the ledger it saved; actors may forget those chunks."""
        self.committed = ledger

    def wait_for_data(self, timeout: float) -> None:
        with self.data_arrived:
            self.data_arrived.wait(timeout)

    # ------------------------------------------------------------------------------ loop

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            while not self._stop.is_set():
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                try:
                    self._handle(frames)
                except Exception:  # a bug must not kill ingestion; say so loudly
                    log.exception("ingest: failed handling a message")

    def _reply(self, peer: bytes, message: dict[str, Any]) -> None:
        with contextlib.suppress(zmq.ZMQError):  # the peer is gone; it will say HELLO again
            self.sock.send_multipart([peer, encode(message)], zmq.NOBLOCK)

    def _malformed(self, peer: bytes | None, why: str) -> None:
        self.counters["malformed"] += 1
        n = self.counters["malformed"]
        if n <= 10 or n % 1000 == 0:
            log.warning("ingest: malformed message #%d: %s", n, why)
        if peer is not None:
            self._reply(peer, make_message(MessageType.ERROR, code="malformed", reason=why[:300]))

    def _handle(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        if len(frames) < 2:
            self._malformed(peer, "an empty message")
            return
        try:
            msg = decode_frames([f.buffer for f in frames[1:]], self.max_bytes)
        except VersionError as e:
            self.counters["refused"] += 1
            log.error("ingest: refused a peer: %s; update it to this learner's version", e)
            self._reply(peer, make_message(MessageType.ERROR, code="version", reason=str(e)))
            return
        except ProtocolError as e:
            self._malformed(peer, str(e))
            return
        kind = msg["type"]
        try:
            if kind == MessageType.HELLO:
                self._hello(peer, msg, _user_id(frames[1]))
            elif kind == MessageType.CHUNK:
                self._chunk(peer, msg)
            elif kind == MessageType.STATS:
                self._stats(peer, msg)
            else:
                self._malformed(peer, f"unexpected message type {kind!r} on the data channel")
        except ProtocolError as e:
            self._malformed(peer, f"{kind}: {e}")

    def _counters(self) -> dict[str, Any]:
        return {"learner": self.session, "env_steps": self.env_steps, **self.info()}

    def _hello(self, peer: bytes, msg: Mapping[str, Any], key: str = "") -> None:
        actor = check_id(msg.get("actor"), "actor")
        session = check_id(msg.get("session"), "session")
        self.counters["hellos"] += 1
        bound = self.ledger.key_of(actor) if key else None
        if key and bound is not None and bound != key:
            self.counters["refused"] += 1
            reason = f"actor id {actor!r} belongs to another CURVE key; each actor needs its own id"
            log.error("ingest: refused a HELLO as %r from key %s...: %s", actor, key[:8], reason)
            self._reply(peer, make_message(MessageType.ERROR, code="identity", reason=reason))
            return
        if session not in self.ledger.sessions(actor) and not self._room_for_session(actor):
            self.counters["refused"] += 1
            reason = f"actor {actor!r} has {MAX_SESSIONS_PER_ACTOR} sessions with data not yet checkpointed"
            log.error("ingest: refused a new session of %r: %s", actor, reason)
            self._reply(peer, make_message(MessageType.ERROR, code="sessions", reason=reason))
            return
        if msg.get("fingerprint") != self.fingerprint:
            self.counters["refused"] += 1
            reason = (
                f"config fingerprint {msg.get('fingerprint')!r} differs from the learner's "
                f"{self.fingerprint!r}: actor and learner must use the same pre-trained checkpoint, "
                "task, reward settings and protocol version"
            )
            if self.contract is not None:
                reason += "; differs in: " + "; ".join(contract_differences(self.contract, msg.get("contract")))
            log.error("ingest: refused actor %r: %s", actor, reason)
            self._reply(peer, make_message(MessageType.ERROR, code="fingerprint", reason=reason))
            return
        if key and bound is None:
            # Bound only once every check passed: a misconfigured robot PC (wrong checkpoint, a
            # copied --actor-id) that is refused must not claim the id for the right one.
            with self.lock:
                self.ledger.bind(actor, key)
        self._peers[peer] = actor
        log.info(
            "ingest: actor %r (session %s) connected; it has %d transitions here",
            actor,
            msg["session"],
            self.ledger.transitions(actor),
        )
        self._reply(peer, make_message(MessageType.WELCOME, committed=self.committed.marks(actor), **self._counters()))

    def _chunk(self, peer: bytes, msg: Mapping[str, Any]) -> None:
        actor = self._peers.get(peer)
        if actor is None:
            self._reply(peer, make_message(MessageType.ERROR, code="hello_first", reason="send HELLO first"))
            return
        seq = check_seq(msg.get("seq"))
        session = check_id(msg.get("session"), "session")
        if msg.get("actor") != actor:
            raise ProtocolError(f"chunk says actor {msg.get('actor')!r}, the connection is {actor!r}")
        if self.ledger.has(actor, session, seq):
            self.counters["duplicates"] += 1
        else:
            if session not in self.ledger.sessions(actor) and not self._room_for_session(actor):
                self._reply(peer, make_message(MessageType.ERROR, code="hello_first", reason="too many sessions"))
                return
            # Measured from the highest seq in, not the watermark: a hole below it (a chunk that
            # nobody holds any more) must never turn into the refusal of every later chunk.
            ahead_of = self.ledger.highest(actor, session)
            try:
                if seq > ahead_of + MAX_SEQ_AHEAD:
                    raise ProtocolError(
                        f"seq {seq} is more than {MAX_SEQ_AHEAD} beyond what this session delivered ({ahead_of})"
                    )
                chunk = unpack_chunk(msg, self.wire, self.buffer.action_dim, self.limits)
            except ProtocolError as e:
                self.counters["rejected"] += 1
                log.error("ingest: rejected chunk %s/%d from %r: %s", session, seq, actor, e)
                if seq <= ahead_of + MAX_SEQ_AHEAD:
                    with self.lock:  # consumed, with nothing inserted: the watermark moves past it
                        self.ledger.add(actor, session, seq, 0)
                        self._close_holes(actor, session)
                self._reply(
                    peer,
                    make_message(MessageType.ERROR, code="rejected", session=session, seq=seq, reason=str(e)[:500]),
                )
                return
            stream = f"{actor}/{session}"
            arrays = chunk.arrays()
            if self.derive is not None:
                arrays["frames"] = self.derive(arrays["frames"])
            with self.lock:
                self.buffer.insert_chunk(**arrays, stream=stream)
                self.ledger.add(actor, session, seq, len(chunk))
                self._close_holes(actor, session)
            self.counters["chunks"] += 1
            self.counters["intervened_steps"] += int(chunk.intervened.sum())
            with self.data_arrived:
                self.data_arrived.notify_all()
        self._reply(
            peer,
            make_message(
                MessageType.ACK,
                session=session,
                seq=seq,
                committed=self.committed.marks(actor),
                lost_chunks=self.ledger.lost(actor),
                **self._counters(),
            ),
        )

    def _close_holes(self, actor: str, session: str) -> None:
        """Seqs that stayed missing while MAX_SEQ_AHEAD later ones arrived are lost: said loudly
        (log, the counters in status.json, every ACK to that actor), and ingest goes on."""
        missing = self.ledger.close_holes(actor, session, MAX_SEQ_AHEAD)
        if missing:
            self.counters["lost_chunks"] += len(missing)
            log.error(
                "ingest: %d chunk(s) of %r session %s never arrived while %d later ones did (seqs %d..%d): "
                "counted as LOST; ingest goes on",
                len(missing),
                actor,
                session,
                MAX_SEQ_AHEAD,
                missing[0],
                missing[-1],
            )

    def _stats(self, peer: bytes, msg: Mapping[str, Any]) -> None:
        actor = self._peers.get(peer)
        stats = msg.get("stats")
        if actor is None:
            return  # no reply to stats, ever
        if not isinstance(stats, dict) or len(stats) > MAX_STATS_KEYS:
            raise ProtocolError("stats must be a map of at most 64 numbers")
        clean = {}
        for k, v in stats.items():
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            if isinstance(k, str) and len(k) <= 64 and numeric and math.isfinite(v):
                clean[k] = float(v)
        now = time.monotonic()
        tokens, last = self._stats_tokens.get(actor, (float(STATS_BURST), now))
        tokens = min(float(STATS_BURST), tokens + (now - last) * STATS_PER_S)
        if tokens < 1.0:
            self.counters["stats_dropped"] += 1
            self._stats_tokens[actor] = (tokens, now)
            return
        self._stats_tokens[actor] = (tokens - 1.0, now)
        self.counters["stats"] += 1
        self.stats.put((actor, time.time(), clean))

    def _room_for_session(self, actor: str) -> bool:
        """Whether ``actor`` may open one more session: under the cap, after forgetting its oldest
        sessions whose chunks are all in a checkpoint (an actor drops those chunks once told, so
        none of them can come back)."""
        sessions = self.ledger.sessions(actor)
        if len(sessions) < MAX_SESSIONS_PER_ACTOR:
            return True
        for old in list(sessions):
            if len(sessions) < MAX_SESSIONS_PER_ACTOR:
                break
            live, saved = self.ledger.marks(actor).get(old), self.committed.marks(actor).get(old)
            if live is not None and live == saved and not live[1]:
                with self.lock:
                    self.ledger.drop_session(actor, old)
                    self.committed.drop_session(actor, old)
                    self.buffer.drop_stream(f"{actor}/{old}")
                sessions.remove(old)
        return len(sessions) < MAX_SESSIONS_PER_ACTOR

"""The actor's journal of sent chunks: nothing is forgotten until the learner has checkpointed it.

Every chunk is written to ``directory`` (one file per chunk, temp file + rename) the moment it is
formed, and kept there until the learner reports it *committed* (inside a learner checkpoint).
A chunk that is only *acknowledged* (inserted into the learner's buffer, not yet checkpointed)
is not resent, but it stays on disk: if the learner dies and resumes from an older checkpoint,
the actor resends it. A restarted actor finds its predecessor's chunks here and resends them
too; the learner's per-session ledger drops duplicates.

Memory holds at most ``memory_bytes`` of chunk payloads (the newest unacknowledged ones); the
rest are read back from disk when they must be resent. A chunk the learner refuses for good is
moved to ``rejected/``, never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("wsrl.actor.spool")

_MAGIC = b"WSRLCHK1"


def write_frames(path: Path, frames: Sequence[Any]) -> None:
    """A chunk file: magic, frame count, then each frame as an 8-byte length and its bytes."""
    with open(path, "wb") as f:
        f.write(_MAGIC + struct.pack("<I", len(frames)))
        for fr in frames:
            f.write(struct.pack("<Q", memoryview(fr).nbytes))
            f.write(fr)


def read_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:8] != _MAGIC or len(data) < 12:
        raise ValueError(f"{path} is not a chunk file")
    (count,), pos, frames = struct.unpack_from("<I", data, 8), 12, []
    for _ in range(count):
        (n,) = struct.unpack_from("<Q", data, pos)
        frames.append(data[pos + 8 : pos + 8 + n])
        pos += 8 + n
    if pos != len(data):
        raise ValueError(f"{path} is truncated or has trailing bytes")
    return frames


_NAME = re.compile(r"^(?P<session>[0-9A-Za-z_-]{1,64})-(?P<seq>\d{12})-(?P<n>\d+)\.chunk$")


@dataclass
class _Entry:
    session: str
    seq: int
    n: int  # transitions
    path: Path
    data: list[Any] | None  # the message's frames; None: only on disk
    nbytes: int
    acked: bool = False
    sent_at: float = -1.0
    sends: int = 0  # since it was last (re)queued: an ack of a chunk sent once times the round trip


class Spool:
    def __init__(self, directory: str | Path, memory_bytes: int = 256 * 2**20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_bytes = int(memory_bytes)
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._unacked: dict[tuple[str, int], None] = {}  # insertion-ordered set
        self._unacked_transitions = 0
        self._in_memory = 0
        self.spilled = 0  # chunks that had to live on disk only
        self.rejected_transitions = 0  # in chunks the learner refused (kept in rejected/, not delivered)
        self.disk_full = False  # the last write failed; chunks wait in memory for the disk
        for p in sorted(self.directory.glob("*.chunk")):
            m = _NAME.match(p.name)
            if m is None:
                log.warning("spool: ignoring unexpected file %s", p)
                continue
            e = _Entry(m["session"], int(m["seq"]), int(m["n"]), p, None, p.stat().st_size)
            self._entries[(e.session, e.seq)] = e
            self._unacked[(e.session, e.seq)] = None
            self._unacked_transitions += e.n
        for p in self.directory.glob("*.tmp"):
            p.unlink()  # a chunk being written when the process died was never sent

    # --------------------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unacked_transitions(self) -> int:
        return self._unacked_transitions

    @property
    def unacked_chunks(self) -> int:
        return len(self._unacked)

    @property
    def memory_in_use(self) -> int:
        return self._in_memory

    def due(self, now: float, resend_after: float, limit: int, max_in_flight: int) -> list[tuple[str, int]]:
        """Unacknowledged chunks to send now, oldest first: never sent, or sent more than
        ``resend_after`` s ago; at most ``max_in_flight`` may be awaiting an ack at once."""
        out, in_flight = [], 0
        for key in self._unacked:
            e = self._entries[key]
            if e.sent_at >= 0 and now - e.sent_at < resend_after:
                in_flight += 1
                if in_flight >= max_in_flight:
                    break
                continue
            out.append(key)
            if len(out) >= limit or len(out) + in_flight >= max_in_flight:
                break
        return out

    def payload(self, key: tuple[str, int]) -> list[Any]:
        """The chunk's message frames (from memory, else read back from its file)."""
        e = self._entries[key]
        return e.data if e.data is not None else read_frames(e.path)

    # --------------------------------------------------------------------------- changes

    def add(self, session: str, seq: int, n: int, frames: list[Any]) -> None:
        path = self.directory / f"{session}-{seq:012d}-{n}.chunk"
        tmp = path.with_suffix(".tmp")
        try:
            write_frames(tmp, frames)
            os.replace(tmp, path)
        except OSError as e:
            # Keep it in memory regardless of the bound: a full disk must not lose data.
            if not self.disk_full:
                log.error("spool: cannot write %s (%s); keeping chunks in memory until the disk has room", path, e)
            self.disk_full = True
            tmp.unlink(missing_ok=True)
        entry = _Entry(session, seq, n, path, frames, sum(memoryview(f).nbytes for f in frames))
        self._entries[(session, seq)] = entry
        self._unacked[(session, seq)] = None
        self._unacked_transitions += n
        self._in_memory += entry.nbytes
        self._evict()

    @property
    def memory_only_transitions(self) -> int:
        """Unacknowledged transitions whose chunk could not be written to disk (a full disk): they
        live in this process's memory only, and are lost if it exits before they are acked."""
        entries = [self._entries.get(k) for k in list(self._unacked)]  # the sender thread may be acking
        return sum(e.n for e in entries if e is not None and not e.path.exists())

    @property
    def saturated(self) -> bool:
        """The disk is full and the memory bound is reached: take nothing more for now."""
        return self.disk_full and self._in_memory > self.memory_bytes

    def retry_disk(self) -> int:
        """Write chunks that live only in memory to disk again; returns how many got there."""
        written = 0
        for e in self._entries.values():
            if e.data is None or e.path.exists():
                continue
            tmp = e.path.with_suffix(".tmp")
            try:
                write_frames(tmp, e.data)
                os.replace(tmp, e.path)
            except OSError:
                tmp.unlink(missing_ok=True)
                return written
            written += 1
        if self.disk_full:
            log.info("spool: the disk has room again; %d chunks written", written)
        self.disk_full = False
        self._evict()
        return written

    def _evict(self) -> None:
        if self._in_memory <= self.memory_bytes:
            return
        for key in sorted(self._entries):  # oldest sessions/seqs first
            e = self._entries[key]
            if e.data is not None and e.path.exists():
                self._in_memory -= e.nbytes
                e.data = None
                self.spilled += 1
                if self._in_memory <= self.memory_bytes:
                    return

    def was_sent(self, key: tuple[str, int]) -> bool:
        return self._entries[key].sent_at >= 0

    def mark_sent(self, key: tuple[str, int], now: float) -> None:
        e = self._entries[key]
        e.sent_at = now
        e.sends += 1

    def sent_once_at(self, session: str, seq: int) -> float | None:
        """When an unacknowledged chunk was sent, if it was sent exactly once (else ``None``: an
        ack of a resent chunk may answer either send, Karn's algorithm)."""
        e = self._entries.get((session, seq))
        return e.sent_at if e is not None and not e.acked and e.sends == 1 else None

    def ack(self, session: str, seq: int) -> int:
        """Mark a chunk inserted by the learner; returns its transition count (0 if unknown)."""
        e = self._entries.get((session, seq))
        if e is None or e.acked:
            return 0
        e.acked = True
        del self._unacked[(session, seq)]
        self._unacked_transitions -= e.n
        if e.data is not None and e.path.exists():
            self._in_memory -= e.nbytes
            e.data = None
        return e.n

    def commit(self, session: str, upto: int, extra: list[int] | tuple[int, ...] = ()) -> None:
        """The learner checkpointed chunks ``<= upto`` (and ``extra``) of ``session``: forget them."""
        extra_set = set(extra)
        for key in [k for k in self._entries if k[0] == session and (k[1] <= upto or k[1] in extra_set)]:
            e = self._entries.pop(key)
            self._forget(key, e)
            e.path.unlink(missing_ok=True)

    def unack_all(self) -> int:
        """The learner restarted: anything not committed must be sent again. Returns the count."""
        n = 0
        for e in self._entries.values():
            if e.acked:
                e.acked = False
                n += e.n
            e.sent_at, e.sends = -1.0, 0
        self._unacked = dict.fromkeys(sorted(self._entries))
        self._unacked_transitions = sum(e.n for e in self._entries.values())
        return n

    def archive(self, name: str) -> tuple[int, int]:
        """Move every chunk into ``name/`` (kept, never sent again); returns how many chunks and
        transitions."""
        dest = self.directory / name
        n = transitions = 0
        for key in list(self._entries):
            e = self._entries.pop(key)
            self._forget(key, e)
            dest.mkdir(exist_ok=True)
            if e.path.exists():
                e.path.replace(dest / e.path.name)
            elif e.data is not None:
                write_frames(dest / e.path.name, e.data)
            n += 1
            transitions += e.n
        return n, transitions

    def _forget(self, key: tuple[str, int], e: _Entry) -> None:
        if e.data is not None:
            self._in_memory -= e.nbytes
        if key in self._unacked:
            del self._unacked[key]
            self._unacked_transitions -= e.n

    def reject(self, session: str, seq: int, reason: str) -> None:
        e = self._entries.pop((session, seq), None)
        if e is None:
            return
        self._forget((session, seq), e)
        self.rejected_transitions += e.n
        dest = self.directory / "rejected"
        dest.mkdir(exist_ok=True)
        if e.path.exists():
            e.path.replace(dest / e.path.name)
        elif e.data is not None:
            write_frames(dest / e.path.name, e.data)
        (dest / (e.path.name + ".reason")).write_text(reason + "\n")
        log.error("spool: the learner refused chunk %s/%d (%s); kept in %s", session, seq, reason, dest)

"""Which chunks the learner has inserted, per actor and actor session: the dedupe record.

For each (actor, session) it keeps a watermark (every seq <= ``upto`` is in) plus the few seqs
above it that arrived out of order, so it stays small however long a run lasts. It is saved
inside each replay-buffer snapshot, so a resumed learner knows exactly what its buffer holds.

A hole below those extras is normally filled by the actor's resend within seconds. One that
outlives ``close_holes``'s bound is a chunk nobody holds any more: the watermark moves past it
and the seqs are counted as lost (``lost``), so the loss is reported, never turned into the
refusal of every later chunk.
"""

from __future__ import annotations

import copy
from typing import Any


class Ledger:
    def __init__(self, data: dict[str, Any] | None = None) -> None:
        # actor -> {"sessions": {session: [upto, extras]}, "transitions": int, "key": CURVE user id or None}
        self._actors: dict[str, dict[str, Any]] = {}
        for actor, rec in (data or {}).items():
            sessions = {str(s): [int(m[0]), {int(x) for x in m[1]}] for s, m in rec["sessions"].items()}
            self._actors[str(actor)] = {
                "sessions": sessions,
                "transitions": int(rec["transitions"]),
                "key": rec.get("key"),
                "lost": int(rec.get("lost", 0)),
            }

    def _record(self, actor: str) -> dict[str, Any]:
        return self._actors.setdefault(actor, {"sessions": {}, "transitions": 0, "key": None, "lost": 0})

    def has(self, actor: str, session: str, seq: int) -> bool:
        mark = self._actors.get(actor, {}).get("sessions", {}).get(session)
        return mark is not None and (seq <= mark[0] or seq in mark[1])

    def upto(self, actor: str, session: str) -> int:
        """Every seq of this session up to here is in (-1: none yet)."""
        mark = self._actors.get(actor, {}).get("sessions", {}).get(session)
        return -1 if mark is None else int(mark[0])

    def highest(self, actor: str, session: str) -> int:
        """The highest seq of this session that is in (-1: none yet)."""
        mark = self._actors.get(actor, {}).get("sessions", {}).get(session)
        return -1 if mark is None else max([int(mark[0]), *mark[1]])

    def lost(self, actor: str) -> int:
        """Chunks of this actor that never arrived and were given up (``close_holes``)."""
        return int(self._actors.get(actor, {}).get("lost", 0))

    def close_holes(self, actor: str, session: str, max_extras: int) -> list[int]:
        """If more than ``max_extras`` seqs wait above a hole, give the holes up: the watermark
        moves to the highest seq and the missing ones are counted as lost. Returns them."""
        rec = self._actors.get(actor)
        if rec is None:
            return []
        mark = rec["sessions"].get(session)
        if mark is None or len(mark[1]) <= max_extras:
            return []
        top = max(mark[1])
        missing = [s for s in range(mark[0] + 1, top) if s not in mark[1]]
        mark[0], mark[1] = top, set()
        rec["lost"] = int(rec.get("lost", 0)) + len(missing)
        return missing

    def sessions(self, actor: str) -> list[str]:
        return list(self._actors.get(actor, {}).get("sessions", {}))

    def key_of(self, actor: str) -> str | None:
        """The CURVE key (ZAP user id) this actor id is bound to, if any."""
        return self._actors.get(actor, {}).get("key")

    def bind(self, actor: str, key: str) -> None:
        rec = self._record(actor)
        rec["key"] = key

    def release(self, actor: str) -> bool:
        """Unbind an actor id from its CURVE key (the learner's ``--release-actor``): the next
        actor that passes every check of a HELLO under this id binds it. True if it was bound."""
        rec = self._actors.get(actor)
        if rec is None or rec.get("key") is None:
            return False
        rec["key"] = None
        return True

    def drop_session(self, actor: str, session: str) -> None:
        self._actors.get(actor, {}).get("sessions", {}).pop(session, None)

    def add(self, actor: str, session: str, seq: int, transitions: int) -> None:
        rec = self._record(actor)
        mark = rec["sessions"].setdefault(session, [-1, set()])
        mark[1].add(seq)
        while mark[0] + 1 in mark[1]:
            mark[0] += 1
            mark[1].discard(mark[0])
        rec["transitions"] += transitions

    def transitions(self, actor: str | None = None) -> int:
        if actor is not None:
            return self._actors.get(actor, {}).get("transitions", 0)
        return sum(r["transitions"] for r in self._actors.values())

    def marks(self, actor: str) -> dict[str, list]:
        """``{session: [upto, [extras]]}`` for one actor (the form sent in WELCOME/ACK)."""
        sessions = self._actors.get(actor, {}).get("sessions", {})
        return {s: [m[0], sorted(m[1])] for s, m in sessions.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            a: {
                "sessions": self.marks(a),
                "transitions": r["transitions"],
                "key": r.get("key"),
                "lost": r.get("lost", 0),
            }
            for a, r in self._actors.items()
        }

    def copy(self) -> Ledger:
        return Ledger(copy.deepcopy(self.to_json()))

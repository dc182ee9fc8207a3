"""Which chunks the learner has inserted, per actor and actor session: the dedupe record.

For each (actor, session) it keeps a watermark (every seq <= ``upto`` is in) plus the few seqs
above it that arrived out of order, so it stays small however long a run lasts. It is saved
inside each replay-buffer snapshot, so a resumed learner knows exactly what its buffer holds.
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
            }

    def has(self, actor: str, session: str, seq: int) -> bool:
        mark = self._actors.get(actor, {}).get("sessions", {}).get(session)
        return mark is not None and (seq <= mark[0] or seq in mark[1])

    def upto(self, actor: str, session: str) -> int:
        """Every seq of this session up to here is in (-1: none yet)."""
        mark = self._actors.get(actor, {}).get("sessions", {}).get(session)
        return -1 if mark is None else int(mark[0])

    def sessions(self, actor: str) -> list[str]:
        return list(self._actors.get(actor, {}).get("sessions", {}))

    def key_of(self, actor: str) -> str | None:
        """The CURVE key (ZAP user id) this actor id is bound to, if any."""
        return self._actors.get(actor, {}).get("key")

    def bind(self, actor: str, key: str) -> None:
        rec = self._actors.setdefault(actor, {"sessions": {}, "transitions": 0, "key": None})
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
        rec = self._actors.setdefault(actor, {"sessions": {}, "transitions": 0, "key": None})
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
            a: {"sessions": self.marks(a), "transitions": r["transitions"], "key": r.get("key")}
            for a, r in self._actors.items()
        }

    def copy(self) -> Ledger:
        return Ledger(copy.deepcopy(self.to_json()))

"""The actor's weight receiver: a thread on a CONFLATE SUB socket that keeps the newest policy.

It decodes and checks each WEIGHTS message off the control loop, converts it to device arrays
and leaves it in a one-slot mailbox; the control loop picks it up between steps with
``latest()`` (one attribute read: the swap is atomic). Older or equal versions, messages for
another config and malformed trees are dropped with a log line; the running policy stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import zmq

from shared.wire.policy_weights import params_from_message
from shared.wire.protocol import ProtocolError, decode
from shared.wire.transport import CurveKeys, weights_client

log = logging.getLogger("wsrl.actor.weights")


@dataclass(frozen=True)
class ReceivedWeights:
    version: int
    params: Any
    sent_at: float  # learner's wall clock at publish
    ready_at: float  # our wall clock when usable
    grad_steps: int


class WeightsReceiver:
    def __init__(
        self,
        host: str,
        port: int,
        template: Any,
        fingerprint: str,
        keys: CurveKeys | None = None,
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        """``prepare(params)`` runs on this thread before new weights are offered, e.g. one
        policy call, so that any compilation for them never happens in the control loop."""
        self.host, self.port, self.keys = host, port, keys
        self.prepare = prepare
        self.template = template
        self.fingerprint = fingerprint
        self._latest: ReceivedWeights | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="weights-receiver", daemon=True)
        self.received = 0
        self.refused = 0
        self.learner_grad_steps = 0  # from every message, republishes included

    def start(self) -> WeightsReceiver:
        self._thread.start()
        return self

    def latest(self) -> ReceivedWeights | None:
        return self._latest

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        context = zmq.Context()
        sock = weights_client(context, self.host, self.port, self.keys)
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                data = sock.recv(copy=True)
                self._accept(data)
        finally:
            sock.close(0)
            context.term()

    def _accept(self, data: bytes) -> None:
        try:
            msg = decode(data)
            grad = msg.get("grad_steps")
            if isinstance(grad, int) and grad > self.learner_grad_steps:
                self.learner_grad_steps = grad
            current = self._latest.version if self._latest else 0
            if msg.get("version", -1) <= current:
                return  # a republish of what we run
            params = params_from_message(msg, self.template, self.fingerprint)
        except ProtocolError as e:
            self.refused += 1
            log.warning("weights: refused a weights message: %s", e)
            return
        params = jax.block_until_ready(jax.device_put(params))
        if self.prepare is not None:
            self.prepare(params)
        self.template = params  # a later message without the frozen trunk takes it from here
        self._latest = ReceivedWeights(
            msg["version"], params, float(msg.get("sent_at", 0.0)), time.time(), int(msg.get("grad_steps", 0))
        )
        self.received += 1

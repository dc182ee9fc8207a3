"""Policy weights on the wire: only the actor's parameters, with a version and the fingerprint.

The learner publishes ``weights_message``; the actor turns it back into parameters with
``params_from_message``, which checks every array against the actor's own parameter tree by
path and shape (``shared.checkpoint.merge_state``), so a wrong or partial tree is refused with
the parameter's name and the running policy is kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import serialization

from shared.protocol import MessageType, ProtocolError, make_message


def weights_message(actor_params: Any, version: int, fingerprint: str, **counters: int) -> dict[str, Any]:
    tree = jax.tree.map(np.asarray, serialization.to_state_dict(jax.device_get(actor_params)))
    return make_message(
        MessageType.WEIGHTS,
        version=int(version),
        fingerprint=fingerprint,
        params=tree,
        sent_at=time.time(),
        **{k: int(v) for k, v in counters.items()},
    )


def params_from_message(msg: Mapping[str, Any], template: Any, fingerprint: str) -> Any:
    """The parameters in a decoded WEIGHTS message, laid onto ``template`` (the actor's tree)."""
    from shared.checkpoint import CheckpointError, merge_state

    if msg.get("type") != MessageType.WEIGHTS:
        raise ProtocolError(f"expected a weights message, got {msg.get('type')!r}")
    if msg.get("fingerprint") != fingerprint:
        raise ProtocolError(f"weights for config {msg.get('fingerprint')!r}, this actor runs {fingerprint!r}")
    version = msg.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ProtocolError(f"weights version must be a non-negative integer, got {version!r}")
    params = msg.get("params")
    if not isinstance(params, dict):
        raise ProtocolError("weights message has no parameter tree")
    try:
        merged = merge_state(serialization.to_state_dict(template), params, "weights")
    except CheckpointError as e:
        raise ProtocolError(str(e)) from None
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(merged)):
        raise ProtocolError(f"weights version {version} hold non-finite values")
    return serialization.from_state_dict(template, merged)

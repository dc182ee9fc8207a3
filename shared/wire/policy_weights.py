"""Policy weights on the wire: only the actor's parameters, with a version and the fingerprint.

The learner publishes ``weights_message``; the actor turns it back into parameters with
``params_from_message``, which checks every array against the actor's own parameter tree by
path and shape (``shared.storage.checkpoint.merge_state``), so a wrong or partial tree is refused with
the parameter's name and the running policy is kept.

A frozen image trunk (``trunk_*`` subtrees of a ResNet-10 with ``freeze_trunk``: about 5 M of the
robot policy's parameters) never changes, so most messages leave it out and carry its digest
(``frozen_digest``) instead; the actor fills it in from the trunk it has, if that trunk's digest
is the same, and otherwise waits for a full message (the learner sends one every
``FULL_EVERY`` publishes, the first included).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import serialization

from shared.wire.protocol import MessageType, ProtocolError, make_message

FULL_EVERY = 20  # publishes: a message with the frozen trunk included, for an actor without it
FROZEN_PREFIX = "trunk_"


def split_frozen(tree: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tree`` without its ``trunk_*`` subtrees, and those subtrees by path (``a/b/trunk_x``)."""
    frozen: dict[str, Any] = {}

    def visit(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for k, v in node.items():
            if k.startswith(FROZEN_PREFIX) and isinstance(v, Mapping):
                frozen[prefix + k] = v
            elif isinstance(v, Mapping):
                out[k] = visit(v, f"{prefix}{k}/")
            else:
                out[k] = v
        return out

    return visit(tree, ""), frozen


def tree_digest(frozen: Mapping[str, Any]) -> str:
    """A content hash of parameter subtrees (by path): every path, dtype, shape and byte."""
    from flax.traverse_util import flatten_dict

    flat = flatten_dict({k: serialization.to_state_dict(v) for k, v in frozen.items()}, sep="/")
    h = hashlib.sha256()
    for path in sorted(flat):
        a = np.ascontiguousarray(np.asarray(flat[path]))
        h.update(f"{path}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weights_message(
    actor_params: Any,
    version: int,
    fingerprint: str,
    frozen_trunk: bool = False,
    include_frozen: bool = True,
    frozen_digest: str | None = None,
    **counters: int,
) -> dict[str, Any]:
    """A WEIGHTS message. ``frozen_trunk``: the ``trunk_*`` subtrees never change, so the message
    names their digest (``frozen_digest``: computed here unless given) and, unless
    ``include_frozen``, leaves them out."""
    tree = jax.tree.map(np.asarray, serialization.to_state_dict(jax.device_get(actor_params)))
    extra: dict[str, Any] = {}
    if frozen_trunk:
        changing, frozen = split_frozen(tree)
        if frozen:
            extra["frozen_digest"] = frozen_digest or tree_digest(frozen)
            if not include_frozen:
                tree = changing
    return make_message(
        MessageType.WEIGHTS,
        version=int(version),
        fingerprint=fingerprint,
        params=tree,
        sent_at=time.time(),
        **extra,
        **{k: int(v) for k, v in counters.items()},
    )


def params_from_message(msg: Mapping[str, Any], template: Any, fingerprint: str) -> Any:
    """The parameters in a decoded WEIGHTS message, laid onto ``template`` (the actor's tree)."""
    from shared.storage.checkpoint import CheckpointError, merge_state

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
    want = serialization.to_state_dict(template)
    digest = msg.get("frozen_digest")
    if digest is not None:
        params = _with_frozen(params, want, digest, version)
    try:
        merged = merge_state(want, params, "weights")
    except CheckpointError as e:
        raise ProtocolError(str(e)) from None
    if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(merged)):
        raise ProtocolError(f"weights version {version} hold non-finite values")
    return serialization.from_state_dict(template, merged)


def _with_frozen(params: dict[str, Any], template: Mapping[str, Any], digest: Any, version: int) -> dict[str, Any]:
    """``params`` with the frozen trunks filled in from ``template`` when the message left them
    out (the template's trunks must have the message's digest); a full message's trunks are
    checked against the digest it names."""
    _, sent = split_frozen(params)
    _, have = split_frozen(template)
    if sent:
        if tree_digest(sent) != digest:
            raise ProtocolError(f"weights version {version}: the frozen trunk does not match its digest")
        return params
    if not have:
        raise ProtocolError(f"weights version {version} leave out a frozen trunk this actor's policy does not have")
    if tree_digest(have) != digest:
        raise ProtocolError(
            f"weights version {version} leave out a frozen trunk that differs from this actor's "
            "(waiting for a message that carries it)"
        )
    out = dict(params)
    for path, sub in have.items():
        *parents, leaf = path.split("/")
        node = out
        for k in parents:
            node[k] = dict(node.get(k, {}))
            node = node[k]
        node[leaf] = sub
    return out

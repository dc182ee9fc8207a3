"""Weight messages without the frozen image trunk (shared/wire/policy_weights.py, actor/weights.py)."""

import jax
import numpy as np
import pytest
from flax import serialization

from actor.weights import WeightsReceiver
from shared.learning.agents import create_agent
from shared.wire.policy_weights import params_from_message, split_frozen, tree_digest, weights_message
from shared.wire.protocol import ProtocolError, decode, encode
from tests.helpers import image_config, image_obs


def actor_params(seed: int):
    return create_agent(image_config("resnet10"), image_obs(16), 6, seed=seed).actor.params


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(serialization.to_state_dict(a)), jax.tree.leaves(serialization.to_state_dict(b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def trained(params):
    """The learner's policy after updates: every parameter but the frozen trunk changed."""
    tree = serialization.to_state_dict(params)
    changing, frozen = split_frozen(tree)
    assert frozen and all(k.split("/")[-1].startswith("trunk_") for k in frozen)
    moved = jax.tree.map(lambda x: np.asarray(x) + 1.0, changing)
    return serialization.from_state_dict(params, _merge(moved, frozen))


def _merge(changing, frozen):
    out = jax.tree.map(lambda x: x, changing)
    for path, sub in frozen.items():
        *parents, leaf = path.split("/")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = sub
    return out


def test_a_message_without_the_trunk_reconstructs_the_policy_exactly_and_is_smaller():
    start = actor_params(0)  # what the actor has: the pre-trained policy, same trunk
    learner = trained(start)
    full = encode(weights_message(learner, 1, "fp", frozen_trunk=True))
    lean = encode(weights_message(learner, 2, "fp", frozen_trunk=True, include_frozen=False))
    trunk_bytes = sum(
        np.asarray(x).nbytes for x in jax.tree.leaves(split_frozen(serialization.to_state_dict(start))[1])
    )
    assert len(full) - len(lean) >= trunk_bytes  # the trunk is what was left out
    assert "trunk_wrist_1" not in str(decode(lean)["params"].keys()) and decode(lean)["frozen_digest"]
    assert_same(params_from_message(decode(lean), start, "fp"), learner)
    assert_same(params_from_message(decode(full), start, "fp"), learner)
    # without frozen_trunk nothing changes: the whole tree, no digest
    assert "frozen_digest" not in decode(encode(weights_message(learner, 3, "fp")))


def test_an_actor_with_another_trunk_waits_for_a_full_message_then_takes_its_trunk():
    other = actor_params(1)  # an actor whose trunk differs (e.g. another pre-trained file)
    learner = trained(actor_params(0))
    lean = weights_message(learner, 2, "fp", frozen_trunk=True, include_frozen=False)
    with pytest.raises(ProtocolError, match="differs from this actor's"):
        params_from_message(decode(encode(lean)), other, "fp")
    rx = WeightsReceiver("127.0.0.1", 1, other, "fp")  # not started: messages fed as if received
    rx._accept(encode(lean))
    assert rx.latest() is None and rx.refused == 1
    rx._accept(encode(weights_message(learner, 3, "fp", frozen_trunk=True)))  # the periodic full one
    rx._accept(encode(weights_message(learner, 4, "fp", frozen_trunk=True, include_frozen=False)))
    assert rx.latest().version == 4 and rx.refused == 1
    assert_same(rx.latest().params, learner)


def test_a_full_message_whose_trunk_does_not_match_its_digest_is_refused():
    learner = actor_params(0)
    msg = weights_message(learner, 1, "fp", frozen_trunk=True)
    msg["frozen_digest"] = tree_digest({"x": {"k": np.zeros(1)}})
    with pytest.raises(ProtocolError, match="does not match its digest"):
        params_from_message(decode(encode(msg)), learner, "fp")

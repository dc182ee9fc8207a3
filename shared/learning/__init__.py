"""Learning: the agents (SAC, CQL/Cal-QL, IQL as pure functions over pytrees), networks, encoders, LayerNorm, augmentation, the methods the paper compares, the update schedule, diagnostics, the reward classifier and the WSRL hand-off."""

import jax as _jax

# JAX's threefry in its "partitionable" form (the default since JAX 0.5) draws random numbers
# from counters that XLA folds at compile time, in proportion to the array's size: compiling one
# 256 x 16 x 6 uniform draw took 1.3 s on one CPU core against 0.3 s in the classic form, a
# ResNet's truncated-normal initializers 25 s of a tiny image test's 98. The partitionable form
# only saves communication when random draws are sharded over several devices, which nothing here
# does, so every process that uses these agents draws in the classic form (set on import, so
# the learner, the actor and a notebook sample the same numbers from the same key).
_jax.config.update("jax_threefry_partitionable", False)

"""LayerNorm + ReLU over a critic ensemble's activation: flax's autodiff against shared/learning/layer_norm.py.

Forward and gradient (with respect to the input, scale and bias) of a [members, rows, width]
activation, each member with its own scale and bias (the vmapped critic ensemble's layout).

Usage: taskset -c 0 .venv/bin/python benchmarks/layer_norm.py [--members 10] [--rows 1024] [--width 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--rows", type=int, default=1024, help="batch rows (the actor step's 4 x 256)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()

    from shared.xla_cpu import tune_process

    tune_process()
    import flax.linen as nn
    import jax
    import numpy as np

    from shared.learning.layer_norm import EPSILON, layer_norm
    from shared.learning.networks import forward

    rng = np.random.default_rng(0)
    shape = (args.members, args.rows, args.width)
    x = jax.numpy.asarray(rng.normal(size=shape), np.float32)
    scale = jax.numpy.asarray(1 + 0.1 * rng.normal(size=(args.members, args.width)), np.float32)
    bias = jax.numpy.asarray(0.1 * rng.normal(size=(args.members, args.width)), np.float32)
    w = jax.numpy.asarray(rng.normal(size=shape), np.float32)

    def flax_ln(x, s, b):
        y = forward(nn.LayerNorm(epsilon=EPSILON), {"scale": s, "bias": b}, x)
        return nn.relu(y)

    def ours(x, s, b):
        return layer_norm(x, s, b, EPSILON, True)

    def timed(f) -> float:
        jax.block_until_ready(f(x, scale, bias))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            jax.block_until_ready(f(x, scale, bias))
            n += 1
        return 1e3 * (time.perf_counter() - t0) / n

    print(f"[{args.members}, {args.rows}, {args.width}] float32, cores {sorted(os.sched_getaffinity(0))}")
    for name, f in (("flax nn.LayerNorm + relu", flax_ln), ("shared/learning/layer_norm.py", ours)):
        fwd = jax.jit(jax.vmap(f))
        grad = jax.jit(jax.grad(lambda x, s, b, f=f: (jax.vmap(f)(x, s, b) * w).sum(), argnums=(0, 1, 2)))
        print(f"  {name:26s} forward {timed(fwd):7.2f} ms   gradient {timed(grad):7.2f} ms")


if __name__ == "__main__":
    main()

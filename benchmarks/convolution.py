"""A ResNet-10 trunk's frames per second, with every convolution through XLA's own against
``shared/learning/convolution.py`` (im2col where a map is smaller than the kernel).

Prints, for each image size, the trunk's time on a batch of frames both ways (``--frames 1``:
one camera frame as the actor's policy sees it).

Usage: taskset -c 0 .venv/bin/python benchmarks/convolution.py [--sizes 64 128] [--frames 256]
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
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--frames", type=int, default=256, help="frames per trunk call (the dataset's block)")
    p.add_argument("--filters", type=int, default=64, help="ResNet-10 base filters (SERL's: 64)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from shared.xla_cpu import tune_process

    tune_process()
    import flax.linen as nn
    import jax
    import numpy as np

    from shared.learning import encoders

    def timed(f, *a) -> float:
        jax.block_until_ready(f(*a))
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            best = min(best, time.perf_counter() - t0)
        return best

    print(f"ResNet-10 trunk, {args.frames} frames a call, float32, cores {sorted(os.sched_getaffinity(0))}")
    rng = np.random.default_rng(0)
    ours = encoders._Conv
    for size in args.sizes:
        imgs = rng.integers(0, 255, (args.frames, size, size, 3), dtype=np.uint8)
        params = encoders.ResNet10Trunk(args.filters).init(jax.random.PRNGKey(0), imgs[:1])
        row = []
        for name, conv_cls in (("XLA's convolution", nn.Conv), ("convolution.conv", ours)):
            encoders._Conv = conv_cls  # read when the trunk is traced
            try:
                f = jax.jit(encoders.ResNet10Trunk(args.filters).apply)
                t = timed(f, params, imgs)
            finally:
                encoders._Conv = ours
            row.append(f"{name} {1e3 * t:8.1f} ms ({args.frames / t:5.0f} frames/s)")
        print(f"  {size:4d} px: " + "   ".join(row))


if __name__ == "__main__":
    main()

"""Process settings that make XLA:CPU updates faster; entry points call ``tune_process()`` first.

Two measured causes of lost time in the learner's update on a CPU (``benchmarks/learner_throughput.py``,
docs/benchmarks.md "Learner"):

- **Page faults.** XLA:CPU allocates each call's temporaries (tens of MB for an ensemble update)
  with malloc; glibc serves blocks that large with a fresh ``mmap`` and unmaps them on free, so
  every call touched every page anew: 11,500 minor faults and 19 ms of kernel time per fused SAC
  call (~20 % of it). Keeping large blocks in the heap (no mmap, no trimming) removes them.
  The price: the process keeps its peak heap instead of handing it back, which a learner, whose
  peak is its steady state, does not notice.
- **YNNPACK fusions.** jaxlib 0.10's XLA:CPU lets YNNPACK take over whole fusions of a dot with
  the elementwise work and reductions around it (LayerNorm's), which ran slower than XLA's own
  loop fusions: handing YNNPACK the matmuls alone made the update ~15 % faster.

Both are defaults: a user's own ``XLA_FLAGS`` entry for the YNNPACK fusions wins, and nothing here
changes results (the same maths, the same kernels for the matmuls).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("wsrl.xla_cpu")

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
# The flag's name is jaxlib's, and an XLA that does not know a flag in XLA_FLAGS refuses to start:
# set it only for the jaxlib series it was measured on (the lock files pin it).
YNN_JAXLIB_SERIES = ("0", "10")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_TRIM_THRESHOLD = 1 << 30  # return heap to the OS only past 1 GiB free at the top
_TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps


def _jaxlib_version() -> tuple[str, ...] | None:
    try:
        from importlib.metadata import version

        return tuple(version("jaxlib").split(".")[:2])
    except Exception:
        return None


def xla_flags(current: str, jaxlib_series: tuple[str, ...] | None) -> str:
    """``current`` XLA_FLAGS with the YNNPACK setting added, unless the user set their own or
    this jaxlib is not the one it was measured on."""
    if "ynn_fusion_type" in current or jaxlib_series != YNN_JAXLIB_SERIES:
        return current
    return f"{current} {YNN_FLAG}".strip()


def keep_large_blocks_in_heap() -> bool:
    """glibc only: serve large blocks from the heap and keep freed memory there. True if set."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        # One arena: a thread's own arena grows in 64 MiB heaps and maps anything larger
        # afresh whatever M_MMAP_MAX says (seen: a 64 MiB temporary faulted in on every call).
        for param, value in (
            (_M_ARENA_MAX, 1),
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        )
    )
    if not ok:
        log.debug("mallopt refused a setting; malloc keeps its defaults")
    return ok


def tune_process() -> None:
    """Apply both settings. Call before JAX runs anything: XLA reads its flags when the backend
    starts, and allocations made before this keep the old behaviour."""
    os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), _jaxlib_version())
    keep_large_blocks_in_heap()

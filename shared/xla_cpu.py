"""Process settings that make XLA:CPU updates faster (and a stack dump on ``SIGUSR2``); entry points call
``tune_process()`` first.

XLA:CPU allocates each call's temporaries (tens of MB for an ensemble update) with malloc; glibc
serves blocks that large with a fresh ``mmap`` and unmaps them on free, so every call touched
every page anew: 22,000 minor page faults and 43 ms of kernel time per fused SAC call pinned to
one core, about 40 % of the call (``benchmarks/learner_throughput.py --untuned``). Keeping large
blocks in the heap (one arena, no mmap, no trimming) removes them. The price: the process keeps
its peak heap instead of handing it back, which a learner, whose peak is its steady state, does
not notice. Results are unchanged (the same kernels run on the same data).

Measured and not kept: ``--xla_cpu_experimental_ynn_fusion_type=individual_dot`` (YNNPACK gets
the matmuls without the elementwise work around them) made the SAC update ~15 % faster but the
Cal-QL steps 1.5-2x slower (docs/benchmarks.md), so XLA's default stays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import logging
import signal
import sys

log = logging.getLogger("wsrl.xla_cpu")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_TRIM_THRESHOLD = 1 << 30  # return heap to the OS only past 1 GiB free at the top
_TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps


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


STACKS_SIGNAL = signal.SIGUSR2


def stacks_on_signal() -> None:
    """``kill -USR2 PID`` writes every thread's Python stack to the process's stderr (its log) and
    the process goes on: how a hang inside XLA or a socket is located without a debugger (the
    simulated job sends it before stopping a stalled learner, ``learner.sim_pipeline``)."""
    try:
        faulthandler.register(STACKS_SIGNAL, all_threads=True)
    except (OSError, ValueError, AttributeError):
        # sys.stderr replaced by an object without a file descriptor (a command run in-process
        # under a test's capture): the process's own stderr instead, if it has one.
        if sys.__stderr__ is not None:
            faulthandler.register(STACKS_SIGNAL, file=sys.__stderr__, all_threads=True)


def tune_process() -> None:
    """Call first thing in a process's entry point, before JAX runs anything: blocks allocated
    before keep their old behaviour. Also turns on ``stacks_on_signal``."""
    keep_large_blocks_in_heap()
    stacks_on_signal()

"""The learner's process settings (shared/xla_cpu.py)."""

import platform
import sys

from shared.xla_cpu import keep_large_blocks_in_heap


def test_glibc_takes_the_malloc_settings():
    # What they buy (page faults and kernel time per update call) is printed by
    # benchmarks/learner_throughput.py, with --untuned for the figure without them; how many
    # faults remain varies between runs on a VM, so it is a printed figure, not a test.
    assert keep_large_blocks_in_heap() == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")

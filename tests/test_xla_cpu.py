"""The learner's process settings: XLA flags and malloc (shared/xla_cpu.py)."""

import platform
import sys

from shared.xla_cpu import YNN_FLAG, YNN_JAXLIB_SERIES, keep_large_blocks_in_heap, xla_flags


def test_the_ynn_flag_is_added_once_and_never_over_a_users_choice():
    assert xla_flags("", YNN_JAXLIB_SERIES) == YNN_FLAG
    assert xla_flags("--xla_dump_to=/tmp/x", YNN_JAXLIB_SERIES) == f"--xla_dump_to=/tmp/x {YNN_FLAG}"
    assert xla_flags(YNN_FLAG, YNN_JAXLIB_SERIES) == YNN_FLAG
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    assert xla_flags(mine, YNN_JAXLIB_SERIES) == mine
    # a jaxlib it was not measured on may not know the flag, and would refuse to start
    assert xla_flags("", ("0", "11")) == "" and xla_flags("", None) == ""


def test_glibc_takes_the_malloc_settings():
    # What they buy (page faults per update call) is measured by benchmarks/learner_throughput.py;
    # how much varies between runs on a VM, so it is a printed figure, not a test.
    assert keep_large_blocks_in_heap() == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")

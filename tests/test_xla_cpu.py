"""The learner's process settings (shared/xla_cpu.py)."""

import platform
import sys

from shared.xla_cpu import keep_large_blocks_in_heap


def test_glibc_takes_the_malloc_settings():
    # What they buy (page faults and kernel time per update call) is printed by
    # benchmarks/learner_throughput.py, with --untuned for the figure without them; how many
    # faults remain varies between runs on a VM, so it is a printed figure, not a test.
    assert keep_large_blocks_in_heap() == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_sigusr2_writes_every_threads_stack_and_the_process_goes_on(tmp_path):
    import signal
    import subprocess
    import time

    code = (
        "import threading, time\n"
        "from shared.xla_cpu import stacks_on_signal\n"
        "stacks_on_signal()\n"
        "def waiting_in_a_thread():\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=waiting_in_a_thread, daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(2)\n"
        "print('still running', flush=True)\n"
    )
    log = tmp_path / "child.log"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR2)
    assert p.wait(30) == 0  # the dump does not stop it
    text = log.read_text()
    assert "waiting_in_a_thread" in text and "<module>" in text  # both threads' stacks
    assert text.rstrip().endswith("still running")

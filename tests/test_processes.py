"""The simulated job's child processes (learner/processes.py): the stall watch and stack dumps."""

import time

from learner.processes import Processes, StallWatch


def test_the_stall_watch_counts_from_the_last_change():
    watch = StallWatch(10.0, now=100.0)
    assert watch.stalled_for(("warmup", 0), now=105.0) is None  # first sight is a change
    assert watch.stalled_for(("warmup", 0), now=115.0) is None  # 10 s: not past the limit
    assert watch.stalled_for(("warmup", 0), now=115.5) == 10.5
    assert watch.stalled_for(("warmup", 3), now=120.0) is None  # moved: counted from here
    assert watch.stalled_for(("warmup", 3), now=129.0) is None
    assert watch.stalled_for(("warmup", 3), now=131.0) == 11.0
    never = StallWatch(0.0, now=0.0)
    never.stalled_for("x", now=0.0)
    assert never.stalled_for("x", now=1e9) is None


def test_a_hung_child_writes_every_threads_stack_into_its_log_and_is_stopped(tmp_path, monkeypatch):
    """A child in a call that never returns, with a second thread: SIGUSR2 (``stacks_on_signal``)
    puts both threads' stacks in its log, the child goes on, and stop_all ends it."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading\n"
        "from shared.xla_cpu import stacks_on_signal\n"
        "stacks_on_signal()\n"
        "def waiting_in_a_thread():\n"
        "    threading.Event().wait()\n"
        "threading.Thread(target=waiting_in_a_thread, daemon=True).start()\n"
        "print('started', flush=True)\n"
        "def never_returns():\n"
        "    threading.Event().wait()\n"
        "never_returns()\n"
    )
    procs = Processes()
    log = tmp_path / "hang.log"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child runs `python -m hang` from the checkout
    try:
        procs.start("hang", ["hang"], log)
        deadline = time.monotonic() + 30
        while "started" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.dump_stacks(wait_s=1.0)
        assert procs.check("hang") is None  # still running after the dump
        text = log.read_text()
        assert "never_returns" in text and "waiting_in_a_thread" in text
    finally:
        procs.stop_all()
    assert procs.procs["hang"].poll() is not None

"""Child processes of the simulated job: the project's own commands (``python -m ...``) run from
the checkout, each with its output in a log file; a failure raises with the end of that log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Hashable
from pathlib import Path

from shared.xla_cpu import STACKS_SIGNAL

ROOT = Path(__file__).resolve().parent.parent  # the checkout: the processes' working directory


def failure(what: str, rc: int, log_path: Path, lines: int = 15) -> RuntimeError:
    """The error for a child that exited with ``rc``: its name, the code and its log's last lines."""
    tail = "\n".join(log_path.read_text().splitlines()[-lines:])
    return RuntimeError(f"{what} exited with code {rc}; end of {log_path}:\n{tail}")


def run_module(args: list[str], log_path: Path) -> None:
    """One of the project's commands as a child process, to its end; its output goes to ``log_path``."""
    with open(log_path, "w") as f:
        rc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise failure(args[0], rc, log_path)


class Processes:
    """The learner and actor child processes; both are stopped however the pipeline ends."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, args: list[str], log_path: Path) -> None:
        self.logs[name] = log_path
        f = open(log_path, "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env
        )

    def check(self, name: str) -> int | None:
        rc = self.procs[name].poll()
        if rc not in (None, 0):
            raise failure(f"the {name}", rc, self.logs[name])
        return rc

    def stop(self, name: str, timeout: float = 30.0) -> None:
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def dump_stacks(self, wait_s: float = 2.0) -> None:
        """Every live child writes its threads' Python stacks into its log (``stacks_on_signal``)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(STACKS_SIGNAL)
        time.sleep(wait_s)

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


class StallWatch:
    """How long a job's progress (any hashable summary of its counters) has not changed; a hung
    child (seen: the learner waiting forever inside XLA at start-up) otherwise holds the job
    silently until someone looks. ``limit_s`` <= 0: never stalled."""

    def __init__(self, limit_s: float, now: float | None = None) -> None:
        self.limit_s = float(limit_s)
        self.since = time.monotonic() if now is None else now
        self.progress: Hashable = None

    def stalled_for(self, progress: Hashable, now: float | None = None) -> float | None:
        """Seconds without a change in ``progress`` if past the limit, else None."""
        now = time.monotonic() if now is None else now
        if progress != self.progress:
            self.progress, self.since = progress, now
            return None
        idle = now - self.since
        return idle if self.limit_s > 0 and idle > self.limit_s else None

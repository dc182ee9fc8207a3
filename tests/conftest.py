import atexit
import os
import shutil
import tempfile

import pytest

# Tests run on the CPU even on a GPU box, and never preallocate device memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# One XLA compilation cache for the whole test run, shared with the processes the tests start
# (they inherit the environment). Most tests build the same tiny agents and updates again, in
# new processes or as new jitted closures, which XLA compiles again; from the cache a 4-critic
# update loads instead. Every compilation is cached, however quick, because a new agent's
# eager initialisation is hundreds of small ones. A fresh folder per run, removed after it, so
# a run never depends on an earlier one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="wsrl-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # No size limit, hence no file lock: with a limit, every write (jax/_src/lru_cache.py, put ->
    # _evict_if_needed) reads the size and access time of every entry, holding the lock that
    # every read also takes. A run writes thousands of entries (2,015 for test_networks.py and
    # test_update.py alone), so writes grew to 0.1-0.3 s each and the two workers queued on the
    # lock: those two files took 283 s on two workers with the limit and 193 s without. An entry
    # read while another process is still writing it fails to decompress, and JAX then warns and
    # compiles (jax/_src/compiler.py, _cache_read): slower, never wrong.
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")

# The learner's process settings (shared/xla_cpu.py), so tests run what production runs.
from shared.xla_cpu import tune_process

tune_process()

# Under pytest-xdist each worker keeps to one core (gw0 the first, gw1 the second, ...), with the
# processes it starts: the worker that runs the realtime tests then has its core to itself, as a
# robot server needs, and never waits on another worker's compiler threads. (A server in the test's
# own process still shares that core with the test: tests of a simulated arm's motion must not ask
# for the motion of a quiet core; docs/benchmarks.md, the reflex test.)
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= len(_cores):
        os.sched_setaffinity(0, {_cores[int(_worker[2:]) % len(_cores)]})


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for pytest-xdist (``--dist loadgroup``, launch/test.sh): the tests that keep real
    time share one worker, one after another, so two of them never compete for the cores; the tests
    of a module-scoped fixture share a worker so the fixture is built once."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    units: dict[str, str] = {}
    for item in items:
        units[item.nodeid] = item.nodeid
        if item.get_closest_marker("realtime"):
            item.add_marker(pytest.mark.xdist_group("realtime"))
            units[item.nodeid] = "realtime"
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        # only our own fixtures (a baseid); pytest's tmp_path_factory is session-scoped too
        if any(d[-1].scope == "module" and d[-1].baseid for d in defs if d):
            units[item.nodeid] = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(units[item.nodeid]))
    # The longest first, the short ones filling in at the end (xdist hands out work units in
    # this order after the largest groups): a unit with a slow test goes before the rest.
    slow = {units[i.nodeid] for i in items if i.get_closest_marker("slow")}
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts the same way
        items.sort(key=lambda i: units[i.nodeid] not in slow)


@pytest.hookimpl(trylast=True)  # after xdist's hook has (or has not) written the groups
def pytest_collection_finish(session: pytest.Session) -> None:
    """A pytest or xdist upgrade can silently stop --dist loadgroup from grouping (it did in
    pytest 9.2: pytest-dev/pytest-xdist#1386); then two robot servers would share the cores."""
    if not session.config.getoption("loadgroup", default=False):  # set on xdist workers only
        return
    lost = [i.nodeid for i in session.items if i.get_closest_marker("realtime") and "@realtime" not in i.nodeid]
    if lost:
        raise pytest.UsageError(f"pytest-xdist did not group the realtime tests (e.g. {lost[0]}); see pyproject.toml")

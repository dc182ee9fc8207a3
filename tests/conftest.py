import atexit
import os
import shutil
import tempfile

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

# The learner's process settings (shared/xla_cpu.py), so tests run what production runs.
from shared.xla_cpu import tune_process

tune_process()

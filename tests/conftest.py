import os

# Tests run on the CPU even on a GPU box, and never preallocate device memory.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# The learner's process settings (shared/xla_cpu.py), so tests run what production runs.
from shared.xla_cpu import tune_process

tune_process()

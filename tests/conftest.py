"""Test-session setup: 8 fake CPU devices (set before jax is imported anywhere) and offline HF."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# CPU matmuls are full float32 already; pin it so parity bounds don't depend on the platform default.
jax.config.update("jax_default_matmul_precision", "highest")
# Nothing here writes a persistent cache (no directory is set); skip hashing every program for it.
jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
  """Drop each test file's compiled programs when it ends.

  One process runs ~750 tests on 8 fake devices; without this every executable stays cached until the end, and the
  suite's memory grows until XLA's compiler fails (a segfault in `backend_compile_and_load`, seen in CI at test 742).
  """
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope="session")
def root() -> None:
  """For tests that need root: CI runs the suite as root, so without it they fail instead of skipping."""
  assert os.geteuid() == 0, ("run the tests as root, as CI does: the sandbox drops each program to its own uid, and "
                             "hiding bwrap takes a private mount namespace")

"""Test-session setup: 8 fake CPU devices (set before jax is imported anywhere) and offline HF."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

# CPU matmuls are full float32 already; pin it so parity bounds don't depend on the platform default.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def root() -> None:
  """For tests that need root: CI runs the suite as root, so without it they fail instead of skipping."""
  assert os.geteuid() == 0, ("run the tests as root, as CI does: the sandbox drops each program to its own uid, and "
                             "hiding bwrap takes a private mount namespace")

"""ssd_jax: Simple Self-Distillation (arXiv 2604.01193) for code LLMs in JAX."""

import os

# XLA's CPU scheduler optimizes for concurrency by default and so keeps every layer's attention buffers of the SFT
# backward alive at once, whatever the remat policy: SmolLM2-135M at 2 x 1,024 tokens needs 10.4 GiB of
# temporaries with remat full (10.0 without). The memory-minimizing scheduler runs the same ops, bitwise the same
# steps, in 3.9 GiB (BUILD_NOTES §14). Only the CPU backend reads the flag; it takes effect when jax starts its
# backends after this import, and a value the user set wins. (Passed per compile through `jax.jit(...,
# compiler_options=...)` it does not have this effect: 9.7 GiB.)
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _CPU_SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CPU_SCHEDULER_FLAG}=false".strip()

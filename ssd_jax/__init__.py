"""ssd_jax: Simple Self-Distillation (arXiv 2604.01193) for code LLMs in JAX."""

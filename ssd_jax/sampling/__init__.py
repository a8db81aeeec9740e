"""Decoding: the sampling operator and its settings, the scheduler and the engine."""

from ssd_jax.sampling.sampler import SamplingConfig, SamplingParams, row_keys, sample, truncated_probs

__all__ = ["SamplingConfig", "SamplingParams", "row_keys", "sample", "truncated_probs"]

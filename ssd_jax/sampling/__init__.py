"""Decoding: the jitted decode loop over the model's KV cache."""

from ssd_jax.sampling.sampler import SamplingParams, row_keys, sample, truncated_probs

__all__ = ["SamplingParams", "row_keys", "sample", "truncated_probs"]

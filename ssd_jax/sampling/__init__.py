"""Decoding: the jitted decode loop over the model's KV cache."""

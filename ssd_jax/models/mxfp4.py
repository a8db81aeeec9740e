"""MXFP4 (OCP microscaling FP4), the format GPT-OSS checkpoints store their expert weights in.

A quantized HF tensor `W` is stored as two tensors: `W_blocks` uint8 [..., R, G, 16], two E2M1 values per byte (the
low nibble first), and `W_scales` uint8 [..., R, G], one E8M0 exponent per block of 32 values (2 ** (scale - 127)).
Row r of block g holds W's entries [g * 32, (g + 1) * 32) along its last-but-one axis after the transpose that
transformers applies: the dequantized tensor is [..., G * 32, R] (for GPT-OSS's `gate_up_proj`, [E, D, 2F]).

Dequantization here is numpy on the host, in float32, where every value (an E2M1 value times a power of two) is
exact; casting to bfloat16 afterwards is exact too (an E2M1 mantissa has 1 bit), so the result equals transformers'
`convert_moe_packed_tensors` in either dtype.
"""

from __future__ import annotations

import numpy as np

BLOCKS_SUFFIX, SCALES_SUFFIX = "_blocks", "_scales"
VALUES_PER_BLOCK = 32
# E2M1 code -> value: sign bit 3, exponent bits 2-1, mantissa bit 0.
FP4_VALUES = np.array([+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
                       -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)


def dequantized_shape(blocks_shape: tuple[int, ...], scales_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
  """The dequantized tensor's shape, (*prefix, G * 32, R), from blocks [*prefix, R, G, 16] and scales [*prefix, R, G].

  Raises ValueError naming the tensor when the two do not describe one MXFP4 tensor.
  """
  if len(blocks_shape) < 3 or blocks_shape[-1] * 2 != VALUES_PER_BLOCK or tuple(blocks_shape[:-1]) != tuple(
      scales_shape):
    raise ValueError(f"{name}: MXFP4 blocks {tuple(blocks_shape)} and scales {tuple(scales_shape)} do not match; "
                     f"expected blocks [..., R, G, {VALUES_PER_BLOCK // 2}] and scales [..., R, G]")
  *prefix, rows, groups, _ = blocks_shape
  return (*prefix, groups * VALUES_PER_BLOCK, rows)


def dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """blocks uint8 [*prefix, R, G, 16], scales uint8 [*prefix, R, G] -> float32 [*prefix, G * 32, R]."""
  dequantized_shape(blocks.shape, scales.shape, "mxfp4")
  blocks = np.asarray(blocks, np.uint8)
  values = np.empty((*blocks.shape[:-1], VALUES_PER_BLOCK), np.float32)
  values[..., 0::2] = FP4_VALUES[blocks & 0x0F]
  values[..., 1::2] = FP4_VALUES[blocks >> 4]
  values = np.ldexp(values, np.asarray(scales, np.int32)[..., None] - 127)
  *prefix, rows, groups, width = values.shape
  return np.swapaxes(values.reshape(*prefix, rows, groups * width), -1, -2)

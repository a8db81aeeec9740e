"""HF checkpoint directories <-> ssd_jax params.

Import streams safetensors tensor by tensor (grouped by file) and places each one straight onto its
target sharding with `jax.make_array_from_callback`: a host holds at most one HF tensor (or, for
stacked experts, the experts its own devices need) at a time, so a 30B model never exists as a full
host copy and every host of a pod reads only what it places.

GPT-OSS stores every expert of a layer in one tensor ([E, ...]; gate and up interleaved along the last axis), read
by expert range, and its released checkpoints quantize those to MXFP4 (`*_blocks` + `*_scales`), dequantized here on
load (`mxfp4`); export writes them back unquantized.

Export writes config.json, safetensors shards (+ index), generation_config.json and the tokenizer
files into a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from ssd_jax.coordination import barrier, is_coordinator
from ssd_jax.models import mxfp4
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules
from ssd_jax.models.transformer import ParamSpec, Params, param_specs

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "generation_config.json")


class CheckpointError(ValueError):
  """A checkpoint file or tensor is missing, truncated or not what the config says it should be."""


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """How one param leaf is made from HF tensors.

  `hf_names` lists the source tensors (several for stacked experts, stacked on axis 0); `to_ours` maps one
  HF tensor to its slice of the leaf, `to_hf` maps that slice back. `fused_experts`: the one HF tensor holds every
  expert on axis 0 (GPT-OSS), so a device's experts are read as a range of it. `part` (i, n): the leaf is every
  n-th entry of the HF tensor's last axis from i (GPT-OSS's interleaved gate/up), so export merges n leaves.
  """

  leaf: str
  hf_names: tuple[str, ...]
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]
  fused_experts: bool = False
  part: tuple[int, int] = (0, 1)

  @property
  def stacked(self) -> bool:
    return len(self.hf_names) > 1


def _identity(x):
  return x


def _transpose(x):
  return x.T


def leaf_names(tree) -> list[str]:
  """Dotted names of the leaves in flatten order, e.g. 'layers.3.attn.q'."""
  paths, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, ParamSpec))
  return [jax.tree_util.keystr(p, simple=True, separator=".") for p, _ in paths]


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
  """The HF <-> ssd_jax mapping for every leaf of `param_specs(cfg)`, in leaf order."""
  d, h, k, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  specs = param_specs(cfg)
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, ParamSpec))
  maps = []
  for name, spec in zip(leaf_names(specs), leaves):
    parts = name.split(".")
    if name == "embed":
      maps.append(TensorMap(name, ("model.embed_tokens.weight",), spec.shape, _identity, _identity))
      continue
    if name == "final_norm":
      maps.append(TensorMap(name, ("model.norm.weight",), spec.shape, _identity, _identity))
      continue
    if name == "lm_head":
      maps.append(TensorMap(name, ("lm_head.weight",), spec.shape[::-1], _transpose, _transpose))
      continue
    i, rest = int(parts[1]), ".".join(parts[2:])
    pre = f"model.layers.{i}."
    heads = {"q": h, "k": k, "v": k}
    if rest in ("attn_norm", "mlp_norm"):
      hf = "input_layernorm" if rest == "attn_norm" else "post_attention_layernorm"
      maps.append(TensorMap(name, (pre + hf + ".weight",), spec.shape, _identity, _identity))
    elif rest in ("attn.q", "attn.k", "attn.v"):
      n = heads[rest[-1]]
      maps.append(TensorMap(name, (pre + f"self_attn.{rest[-1]}_proj.weight",), (n * dh, d),
                            lambda w, n=n: w.T.reshape(d, n, dh), lambda x, n=n: x.reshape(d, n * dh).T))
    elif rest in ("attn.q_bias", "attn.k_bias", "attn.v_bias"):
      n = heads[rest[5]]
      maps.append(TensorMap(name, (pre + f"self_attn.{rest[5]}_proj.bias",), (n * dh,),
                            lambda w, n=n: w.reshape(n, dh), lambda x, n=n: x.reshape(n * dh)))
    elif rest == "attn.o":
      maps.append(TensorMap(name, (pre + "self_attn.o_proj.weight",), (d, h * dh),
                            lambda w: w.T.reshape(h, dh, d), lambda x: x.reshape(h * dh, d).T))
    elif rest == "attn.o_bias":
      maps.append(TensorMap(name, (pre + "self_attn.o_proj.bias",), (d,), _identity, _identity))
    elif rest in ("attn.q_norm", "attn.k_norm"):
      maps.append(TensorMap(name, (pre + f"self_attn.{rest[5]}_norm.weight",), (dh,), _identity, _identity))
    elif rest == "attn.sinks":
      maps.append(TensorMap(name, (pre + "self_attn.sinks",), (h,), _identity, _identity))
    elif cfg.model_type == "gpt_oss" and rest.startswith("mlp."):
      maps.append(_gpt_oss_expert_map(name, pre, rest, spec.shape))
    elif rest == "mlp.router":
      maps.append(TensorMap(name, (pre + "mlp.gate.weight",), spec.shape[::-1], _transpose, _transpose))
    elif cfg.is_moe_layer(i) and rest in ("mlp.gate", "mlp.up", "mlp.down"):
      proj = rest.split(".")[1] + "_proj"
      names = tuple(pre + f"mlp.experts.{e}.{proj}.weight" for e in range(cfg.num_experts))
      maps.append(TensorMap(name, names, spec.shape[1:][::-1], _transpose, _transpose))
    elif rest in ("mlp.gate", "mlp.up", "mlp.down"):
      proj = rest.split(".")[1] + "_proj"
      maps.append(TensorMap(name, (pre + f"mlp.{proj}.weight",), spec.shape[::-1], _transpose, _transpose))
    else:
      raise AssertionError(f"no HF mapping for leaf {name}")
  return maps


def _gpt_oss_expert_map(name: str, pre: str, rest: str, shape: tuple[int, ...]) -> TensorMap:
  """GPT-OSS's router and fused experts: gate_up_proj [E, D, 2F] (gate at even, up at odd columns) with bias
  [E, 2F], down_proj [E, F, D] with bias [E, D], router.weight [E, D] with bias [E]."""
  if rest == "mlp.router":
    return TensorMap(name, (pre + "mlp.router.weight",), shape[::-1], _transpose, _transpose)
  if rest == "mlp.router_bias":
    return TensorMap(name, (pre + "mlp.router.bias",), shape, _identity, _identity)
  experts = pre + "mlp.experts."
  suffix = "_bias" if rest.endswith("_bias") else ""
  if rest in ("mlp.down", "mlp.down_bias"):
    return TensorMap(name, (experts + "down_proj" + suffix,), shape, _identity, _identity, fused_experts=True)
  part = {"mlp.gate": 0, "mlp.gate_bias": 0, "mlp.up": 1, "mlp.up_bias": 1}[rest]
  return TensorMap(name, (experts + "gate_up_proj" + suffix,), (*shape[:-1], 2 * shape[-1]),
                   lambda w: w[..., part::2], _identity, fused_experts=True, part=(part, 2))


# -- import ----------------------------------------------------------------------------------------


class _SafetensorsDir:
  """The tensors of an HF directory: name -> (file, shape, dtype), validated before anything is read."""

  def __init__(self, path: str):
    self.path = path
    index_path = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index_path):
      try:
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a valid safetensors index ({e!r})") from e
      files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
      files = ["model.safetensors"]
    else:
      raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json found")
    self.files = files
    self.tensors: dict[str, tuple[str, tuple[int, ...], str]] = {}
    self._handles = {}
    for name in files:
      file_path = os.path.join(path, name)
      if not os.path.exists(file_path):
        raise CheckpointError(f"{file_path}: listed in the safetensors index but missing")
      size = os.path.getsize(file_path)
      try:
        handle = safe_open(file_path, framework="numpy")
        keys = list(handle.keys())
      except Exception as e:  # safetensors raises its own error types for bad headers.
        raise CheckpointError(f"{file_path}: unreadable safetensors file ({e})") from e
      end = 0
      for key in keys:
        sl = handle.get_slice(key)
        self.tensors[key] = (name, tuple(sl.get_shape()), sl.get_dtype())
      # Data offsets are checked against the file size so a truncated download fails here, not mid-load.
      with open(file_path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
      for key, meta in header.items():
        if key != "__metadata__":
          end = max(end, meta["data_offsets"][1])
      if 8 + header_len + end > size:
        raise CheckpointError(f"{file_path}: truncated: header needs {8 + header_len + end} bytes, file has {size}")
      self._handles[name] = handle

  def _mxfp4(self, name: str) -> bool:
    """Whether `name` is stored as MXFP4 `name_blocks` + `name_scales` instead of itself."""
    return (name not in self.tensors and name + mxfp4.BLOCKS_SUFFIX in self.tensors
            and name + mxfp4.SCALES_SUFFIX in self.tensors)

  def file_of(self, name: str) -> str:
    return self.tensors[name + mxfp4.BLOCKS_SUFFIX if self._mxfp4(name) else name][0]

  def check(self, name: str, expected: tuple[int, ...], leaf: str):
    if self._mxfp4(name):
      blocks, scales = (self.tensors[name + suffix] for suffix in (mxfp4.BLOCKS_SUFFIX, mxfp4.SCALES_SUFFIX))
      if blocks[2] != "U8" or scales[2] != "U8":
        raise CheckpointError(f"{self.path}: MXFP4 tensors of {name!r} have dtypes {blocks[2]} / {scales[2]}; "
                              "expected U8 blocks and scales")
      try:
        shape = mxfp4.dequantized_shape(blocks[1], scales[1], f"{self.path}: {name!r}")
      except ValueError as e:
        raise CheckpointError(str(e)) from e
      where = f"(MXFP4, in {blocks[0]})"
    elif name in self.tensors:
      shape, where = self.tensors[name][1], f"in {self.tensors[name][0]}"
    else:
      raise CheckpointError(f"{self.path}: missing tensor {name!r} (needed for {leaf}, expected shape {expected})")
    if shape != tuple(expected):
      raise CheckpointError(f"{self.path}: tensor {name!r} {where} has shape {shape}, expected {tuple(expected)}")

  def read(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
    """The tensor (MXFP4 dequantized to float32), or only its entries rows[0]:rows[1] along axis 0."""
    if self._mxfp4(name):
      blocks, scales = (self.read(name + suffix, rows) for suffix in (mxfp4.BLOCKS_SUFFIX, mxfp4.SCALES_SUFFIX))
      return mxfp4.dequantize(blocks, scales)
    handle = self._handles[self.tensors[name][0]]
    if rows is None:
      return handle.get_tensor(name)
    return handle.get_slice(name)[rows[0]:rows[1]]


def _place(m: TensorMap, reader: _SafetensorsDir, shape, dtype, sharding) -> jax.Array:
  """Builds one leaf on its sharding, reading only what this host's devices hold."""
  if not m.stacked and not m.fused_experts:
    host = m.to_ours(reader.read(m.hf_names[0])).astype(dtype)
    return jax.make_array_from_callback(shape, sharding, lambda idx: host[idx])
  cache: dict[tuple[int, int], np.ndarray] = {}

  def read_experts(start: int, stop: int) -> np.ndarray:
    if m.fused_experts:
      return m.to_ours(reader.read(m.hf_names[0], rows=(start, stop))).astype(dtype)
    return np.stack([m.to_ours(reader.read(m.hf_names[e])).astype(dtype) for e in range(start, stop)])

  def experts(idx):
    start, stop, _ = idx[0].indices(shape[0])
    if (start, stop) not in cache:
      cache[(start, stop)] = read_experts(start, stop)
    return cache[(start, stop)][(slice(None),) + tuple(idx[1:])]

  return jax.make_array_from_callback(shape, sharding, experts)


def load_hf(path: str, *, mesh: Mesh | None = None, rules: ShardingRules | None = None,
            param_dtype: str = "bfloat16", compute_dtype: str | None = None, **config_overrides
            ) -> tuple[ModelConfig, Params]:
  """Loads an HF Llama-3 / Qwen3 / Qwen3-MoE / GPT-OSS directory (single file or sharded) onto the mesh."""
  cfg = ModelConfig.from_hf_dir(path, param_dtype=param_dtype, compute_dtype=compute_dtype or param_dtype,
                                **config_overrides)
  reader = _SafetensorsDir(path)
  specs = param_specs(cfg)
  spec_leaves, treedef = jax.tree.flatten(specs, is_leaf=lambda x: isinstance(x, ParamSpec))
  maps = tensor_maps(cfg)
  for m in maps:  # every shape is checked before a single tensor is read
    for name in m.hf_names:
      reader.check(name, m.hf_shape, m.leaf)
  single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  order = sorted(range(len(maps)), key=lambda i: (reader.file_of(maps[i].hf_names[0]), i))
  out: list[jax.Array | None] = [None] * len(maps)
  for i in order:
    spec = spec_leaves[i]
    sharding = rules.sharding(mesh, spec.logical, spec.shape) if mesh is not None else single
    out[i] = _place(maps[i], reader, spec.shape, cfg.dtype, sharding)
  return cfg, jax.tree.unflatten(treedef, out)


# -- export ----------------------------------------------------------------------------------------


def _to_host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def hf_tensors(params: Params, cfg: ModelConfig, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, host array) one tensor at a time, in checkpoint order."""
  leaves = jax.tree.leaves(params)
  maps = tensor_maps(cfg)
  if len(leaves) != len(maps):
    raise CheckpointError(f"params have {len(leaves)} leaves, config {cfg.model_type} expects {len(maps)}")
  parts: dict[str, dict[int, np.ndarray]] = {}  # interleaved parts of one HF tensor, until all are there
  for m, x in zip(maps, leaves):
    host = _to_host(x)
    if dtype is not None:
      host = host.astype(dtype)
    if m.stacked:
      for e, name in enumerate(m.hf_names):
        yield name, np.ascontiguousarray(m.to_hf(host[e]))
    elif m.part[1] > 1:
      name, (index, count) = m.hf_names[0], m.part
      got = parts.setdefault(name, {})
      got[index] = m.to_hf(host)
      if len(got) == count:
        merged = np.empty((*host.shape[:-1], count * host.shape[-1]), host.dtype)
        for i, piece in parts.pop(name).items():
          merged[..., i::count] = piece
        yield name, merged
    else:
      yield m.hf_names[0], np.ascontiguousarray(m.to_hf(host))


def export_hf(params: Params, cfg: ModelConfig, out_dir: str, *, tokenizer_dir: str | None = None,
              extra_files: Sequence[str] = (), dtype: str | None = None, max_shard_bytes: int = 5 * 2**30,
              overwrite: bool = False) -> str:
  """Writes an HF directory that transformers loads unchanged; returns out_dir.

  Refuses to touch an existing non-empty out_dir unless overwrite=True. Everything is written into a
  sibling temporary directory that replaces out_dir only once complete, so a crash leaves no
  half-written checkpoint. On several processes all take part in gathering; process 0 writes.
  """
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir}: exists and is not empty; pass overwrite=True to replace it")
  writer = is_coordinator()
  np_dtype = np.dtype(jax.numpy.dtype(dtype)) if dtype else None
  tmp = None
  if writer:
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=os.path.dirname(out_dir))
  try:
    shards: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    total = 0
    for name, arr in hf_tensors(params, cfg, np_dtype):
      if sizes[-1] and sizes[-1] + arr.nbytes > max_shard_bytes:
        if writer:
          _write_shard(tmp, len(shards), shards[-1])
        shards[-1] = {k: None for k in shards[-1]}  # keep names for the index, drop the data
        shards.append({})
        sizes.append(0)
      shards[-1][name] = arr
      sizes[-1] += arr.nbytes
      total += arr.nbytes
    if writer:
      _write_shard(tmp, len(shards), shards[-1])
      n = len(shards)
      if n == 1:
        os.replace(os.path.join(tmp, _shard_name(1, 0)), os.path.join(tmp, "model.safetensors"))
      else:
        for j in range(1, n + 1):
          os.replace(os.path.join(tmp, _shard_name(j, 0)), os.path.join(tmp, _shard_name(j, n)))
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: _shard_name(j + 1, n) for j, s in enumerate(shards) for k in s}}
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
          json.dump(index, f, indent=2)
      hf_config = cfg.to_hf_dict()
      if dtype:
        hf_config["torch_dtype"] = hf_config["dtype"] = str(jax.numpy.dtype(dtype))
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
      sources = [os.path.join(tokenizer_dir, n) for n in TOKENIZER_FILES] if tokenizer_dir else []
      for src in [*sources, *extra_files]:
        if os.path.exists(src):
          shutil.copy2(src, os.path.join(tmp, os.path.basename(src)))
      if not os.path.exists(os.path.join(tmp, "generation_config.json")) and cfg.eos_token_ids:
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
          json.dump({"bos_token_id": cfg.bos_token_id, "eos_token_id": list(cfg.eos_token_ids),
                     "pad_token_id": cfg.pad_token_id}, f, indent=2)
      if os.path.exists(out_dir):
        old = out_dir + ".old"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
      else:
        os.replace(tmp, out_dir)
      tmp = None
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  barrier(f"ssd_jax.models.hf.export_hf:{out_dir}")  # process 0 may write for a long while (a 30B model)
  return out_dir


def _shard_name(i: int, n: int) -> str:
  return f"model-{i:05d}-of-{n:05d}.safetensors" if n else f"model-{i:05d}.safetensors.part"


def _write_shard(tmp: str, i: int, tensors: dict[str, np.ndarray]):
  save_file(tensors, os.path.join(tmp, _shard_name(i, 0)), metadata={"format": "pt"})

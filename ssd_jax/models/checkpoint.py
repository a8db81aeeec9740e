"""orbax save/restore of params (+ the ModelConfig beside them) for fast sharded restarts.

Restore targets the abstract param tree built from the same sharding rules as init and HF import, so a
checkpoint written on one mesh restores directly onto another (different device count or axis sizes).
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ssd_jax.files import write_atomic
from ssd_jax.models.config import ModelConfig
from ssd_jax.models.sharding import ShardingRules
from ssd_jax.models.transformer import Params, abstract_params

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_params(path: str, params: Params, cfg: ModelConfig, *, overwrite: bool = False) -> str:
  """Writes `path/params` (orbax, sharded) and `path/model_config.json`; returns path.

  orbax writes to a temporary directory and renames it on success, so an interrupted save never
  leaves a checkpoint that looks complete. An existing checkpoint is only replaced with overwrite=True.
  """
  path = os.path.abspath(path)
  target = os.path.join(path, PARAMS_DIR)
  if os.path.exists(target) and not overwrite:
    raise FileExistsError(f"{target}: a checkpoint is already there; pass overwrite=True to replace it")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, params, force=overwrite)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:
    write_atomic(os.path.join(path, CONFIG_FILE), json.dumps(cfg.to_dict(), indent=2))
  return path


def load_config(path: str, **overrides) -> ModelConfig:
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path}: not found; expected a directory written by save_params")
  with open(config_path) as f:
    return ModelConfig.from_dict({**json.load(f), **overrides})


def restore_params(path: str, *, mesh: Mesh | None = None, rules: ShardingRules | None = None,
                   **config_overrides) -> tuple[ModelConfig, Params]:
  """Restores params onto `mesh` by `rules` (or the default device); dtype overrides cast on restore."""
  cfg = load_config(path, **config_overrides)
  target = abstract_params(cfg, mesh, rules or (ShardingRules() if mesh is not None else None))
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), target)
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(os.path.abspath(path), PARAMS_DIR), target)
  return cfg, params

"""Training metrics to JSONL and to TensorBoard event files (tensorboardX, which needs no TensorFlow)."""

from __future__ import annotations

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricsLogger:
  """One JSON object per record in `<workdir>/metrics.jsonl`, and the same scalars as TensorBoard events."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._f = open(self.path, "a", encoding="utf-8")
    # tensorboardX names a file by second and host and opens it with "wb": the pid suffix keeps a launch from
    # truncating one that started in the same second, and tells which launch wrote which file.
    self._tb = (SummaryWriter(os.path.join(workdir, "tensorboard"), filename_suffix=f".{os.getpid()}")
                if tensorboard else None)

  def write(self, step: int, values: Mapping[str, float]) -> None:
    self._f.write(json.dumps({"step": step, **values}) + "\n")
    self._f.flush()
    if self._tb is not None:
      for tag, value in values.items():
        self._tb.add_scalar(tag, value, step)

  def close(self) -> None:
    self._f.close()
    if self._tb is not None:
      self._tb.close()

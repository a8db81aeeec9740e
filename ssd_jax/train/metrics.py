"""Training metrics to JSONL and to TensorBoard event files, with no TensorFlow or tensorboard install.

Neither `tensorboardX` nor `flax.metrics.tensorboard` (which needs TensorFlow) imports in this environment, so
`EventWriter` writes scalar summaries itself: an `events.out.tfevents.*` file is a TFRecord stream (length,
masked CRC-32C of the length, payload, masked CRC-32C of the payload) of `tensorflow.Event` protos, which take
four hand-encoded fields here. TensorBoard reads them like any other event file.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Mapping


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum TFRecord uses."""
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
  c = crc32c(data)
  return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    byte = n & 0x7F
    n >>= 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
  return _varint(num << 3 | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
  return _field(num, 2, _varint(len(data)) + data)


def _event(step: int, *, file_version: str | None = None, scalars: Mapping[str, float] | None = None) -> bytes:
  """tensorflow.Event{wall_time=1 double, step=2 int64, file_version=3 string, summary=5 Summary}."""
  msg = _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(step))
  if file_version is not None:
    msg += _bytes_field(3, file_version.encode())
  if scalars:
    # Summary{value=1 repeated Value{tag=1 string, simple_value=2 float}}
    values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(v))))
                      for tag, v in scalars.items())
    msg += _bytes_field(5, values)
  return msg


class EventWriter:
  """Appends scalar summaries to one TensorBoard event file in `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._write(_event(0, file_version="brain.Event:2"))

  def _write(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._f.write(header + _masked_crc(header) + data + _masked_crc(data))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    self._write(_event(step, scalars=values))
    self._f.flush()

  def close(self) -> None:
    self._f.close()


def read_events(path: str) -> list[tuple[int, dict[str, float]]]:
  """(step, {tag: value}) of every summary event in a file written by `EventWriter`; checks the CRCs."""
  out = []
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (n,) = struct.unpack("<Q", header)
    if data[pos + 8:pos + 12] != _masked_crc(header):
      raise ValueError(f"{path}: bad length CRC at byte {pos}")
    payload = data[pos + 12:pos + 12 + n]
    if data[pos + 12 + n:pos + 16 + n] != _masked_crc(payload):
      raise ValueError(f"{path}: bad payload CRC at byte {pos}")
    pos += 16 + n
    parsed = _parse(payload)
    if 5 in parsed:
      values = {}
      for v in _parse_all(parsed[5][-1], 1):
        fields = _parse(v)
        values[fields[1][-1].decode()] = struct.unpack("<f", fields[2][-1])[0]
      out.append((parsed.get(2, [0])[-1], values))
  return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  shift = result = 0
  while True:
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return result, pos


def _parse(buf: bytes) -> dict[int, list]:
  """A proto message -> {field number: [values]} (varints as int, fixed and length-delimited as bytes)."""
  out: dict[int, list] = {}
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    num, wire = key >> 3, key & 7
    if wire == 0:
      val, pos = _read_varint(buf, pos)
    elif wire == 1:
      val, pos = buf[pos:pos + 8], pos + 8
    elif wire == 5:
      val, pos = buf[pos:pos + 4], pos + 4
    elif wire == 2:
      n, pos = _read_varint(buf, pos)
      val, pos = buf[pos:pos + n], pos + n
    else:
      raise ValueError(f"unsupported wire type {wire}")
    out.setdefault(num, []).append(val)
  return out


def _parse_all(buf: bytes, num: int) -> list:
  return _parse(buf).get(num, [])


class MetricsLogger:
  """One JSON object per record in `<workdir>/metrics.jsonl`, and the same scalars as TensorBoard events."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._f = open(self.path, "a", encoding="utf-8")
    self._tb = EventWriter(os.path.join(workdir, "tensorboard")) if tensorboard else None

  def write(self, step: int, values: Mapping[str, float]) -> None:
    self._f.write(json.dumps({"step": step, **values}) + "\n")
    self._f.flush()
    if self._tb is not None:
      self._tb.scalars(step, values)

  def close(self) -> None:
    self._f.close()
    if self._tb is not None:
      self._tb.close()

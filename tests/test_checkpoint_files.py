"""flyp_jax.checkpoint_files: tensors read back from files torch writes, and unsafe or broken files refused.

torch is used only to WRITE fixtures and as the reference for values; the reader itself must not import it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import torch
from torch import nn  # noqa: E402

from flyp_jax.checkpoint_files import CheckpointError, UnsafeCheckpointError, read_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# torch 2.13 deprecates the TorchScript API these fixtures need (OpenAI's files are TorchScript archives).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning", "ignore::torch.jit.TracerWarning")


def as_numpy(t: "torch.Tensor") -> np.ndarray:
  """The exact values of a torch tensor (bfloat16 through its bits, since torch cannot hand it to numpy)."""
  t = t.detach()
  if t.dtype == torch.bfloat16:
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def assert_same(arrays: dict, tensors: dict):
  assert list(arrays) == list(tensors)
  for name, t in tensors.items():
    expected = as_numpy(t)
    assert arrays[name].dtype == expected.dtype, name
    assert arrays[name].shape == expected.shape, name
    np.testing.assert_array_equal(arrays[name], expected, err_msg=name)


def tensor_zoo() -> dict:
  g = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=g)
  param = nn.Parameter(torch.randn(3, generator=g))
  param_with_attr = nn.Parameter(torch.randn(2, generator=g))
  param_with_attr.note = "attributes make torch pickle it with _rebuild_parameter_with_state"
  with_attr = torch.randn(2, generator=g)
  with_attr.note = "and a plain tensor with _rebuild_from_type_v2"
  return OrderedDict([
      ("fp32", base),
      ("rows", base[1:3]),  # a view with a storage offset, sharing base's storage
      ("column", base[:, 2]),  # strided view of the same storage
      ("transposed", base.t()),  # non-contiguous
      ("fp16", torch.randn(2, 3, generator=g).half()),
      ("bf16", torch.randn(5, generator=g).bfloat16()),
      ("f64", torch.randn(2, generator=g).double()),
      ("int64", torch.arange(-3, 7)),
      ("int32", torch.arange(4, dtype=torch.int32).view(2, 2)),
      ("uint8", torch.arange(250, 256, dtype=torch.uint8)),
      ("uint16", torch.tensor([0, 1, 65535], dtype=torch.uint16)),  # no storage class: _rebuild_tensor_v3
      ("bool", torch.tensor([True, False, True])),
      ("scalar", torch.tensor(2.5)),
      ("empty", torch.zeros(0, 3)),
      ("channels_last", torch.randn(1, 3, 2, 2, generator=g).to(memory_format=torch.channels_last)),
      ("param", param),
      ("param_with_attr", param_with_attr),
      ("tensor_with_attr", with_attr),
  ])


# --------------------------------------------------------------------------------------------- torch.save
def test_torch_save_state_dict_round_trips(tmp_path):
  tensors = tensor_zoo()
  torch.save(tensors, tmp_path / "sd.pt")
  arrays = read_state_dict(tmp_path / "sd.pt")
  assert_same(arrays, tensors)
  # Views keep sharing their storage (read-only, so sharing cannot surprise a caller).
  assert np.shares_memory(arrays["fp32"], arrays["rows"]) and np.shares_memory(arrays["fp32"], arrays["transposed"])
  assert not arrays["transposed"].flags.c_contiguous
  assert not any(a.flags.writeable for a in arrays.values() if a.size)


def test_hf_pytorch_model_bin(tmp_path):
  # HF `pytorch_model.bin` is a plain torch.save of a module state dict, under another name.
  model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
  torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
  assert_same(read_state_dict(str(tmp_path / "pytorch_model.bin")), model.state_dict())


@pytest.mark.parametrize("key", ["state_dict", "model", "params"])
def test_training_checkpoint_uses_state_dict_and_strips_module_prefix(tmp_path, key):
  model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
  opt = torch.optim.AdamW(model.parameters())
  model(torch.ones(3)).sum().backward()
  opt.step()  # the optimizer state holds tensors too: they must not leak into the result
  sd = model.state_dict()
  torch.save({"epoch": 3, "name": "run-1", key: {f"module.{k}": v for k, v in sd.items()},
              "optimizer": opt.state_dict()}, tmp_path / "epoch_3.pt")
  assert_same(read_state_dict(tmp_path / "epoch_3.pt"), sd)


def test_big_endian_archive_is_byteswapped(tmp_path):
  tensors = OrderedDict(a=torch.randn(3, 4), b=None, c=torch.randn(5))
  tensors["b"] = tensors["a"][1:].t()
  torch.save(tensors, tmp_path / "little.pt")
  with zipfile.ZipFile(tmp_path / "little.pt") as src, zipfile.ZipFile(tmp_path / "big.pt", "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      if info.filename.endswith("/byteorder"):
        data = b"big"
      elif "/data/" in info.filename and not info.filename.endswith("serialization_id"):
        data = np.frombuffer(data, "<f4").astype(">f4").tobytes()  # every storage here is float32
      dst.writestr(info, data)
  assert_same(read_state_dict(tmp_path / "big.pt"), tensors)


# --------------------------------------------------------------------------------------------- safetensors
def test_safetensors_round_trip_and_truncation(tmp_path):
  from safetensors.torch import save_file

  g = torch.Generator().manual_seed(1)
  tensors = {"w": torch.randn(64, 32, generator=g), "h": torch.randn(3, generator=g).half(),
             "bf": torch.randn(4, 2, generator=g).bfloat16(), "ids": torch.arange(5),
             "mask": torch.tensor([True, False]),
             "i8": torch.tensor([-1, 2], dtype=torch.int8), "scalar": torch.tensor(1.5), "empty": torch.zeros(2, 0)}
  save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
  arrays = read_state_dict(tmp_path / "m.safetensors")
  assert_same({k: arrays[k] for k in tensors}, tensors)
  assert set(arrays) == set(tensors)  # __metadata__ is not a tensor

  raw = (tmp_path / "m.safetensors").read_bytes()
  header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
  data_start = 8 + int.from_bytes(raw[:8], "little")
  cut = raw[:-10]
  overrun = {k for k, v in header.items() if k != "__metadata__" and data_start + v["data_offsets"][1] > len(cut)}
  (tmp_path / "cut.safetensors").write_bytes(cut)
  with pytest.raises(CheckpointError, match=r"tensor '(\w+)' .*truncated") as err:
    read_state_dict(tmp_path / "cut.safetensors")
  assert re.search(r"tensor '(\w+)'", str(err.value)).group(1) in overrun
  (tmp_path / "header.safetensors").write_bytes(raw[:40])
  with pytest.raises(CheckpointError, match="header .* does not fit"):
    read_state_dict(tmp_path / "header.safetensors")


# --------------------------------------------------------------------------------------------- TorchScript
class Tiny(nn.Module):
  """A CLIP-shaped toy: a conv stem, nested Sequentials, MultiheadAttention, a scalar Parameter, a buffer."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 4, 2, bias=False)
    self.resblocks = nn.Sequential(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)), nn.Linear(4, 4))
    self.attn = nn.MultiheadAttention(4, 2)
    self.logit_scale = nn.Parameter(torch.tensor(4.6052))
    self.register_buffer("position_ids", torch.arange(3).view(1, 3))
    self.input_resolution = 224  # ints and bools (`training`) are module attributes, not tensors

  def forward(self, x):
    y, _ = self.attn(x, x, x)
    return self.resblocks(y) * self.logit_scale.exp()


@pytest.fixture(scope="module")
def tiny():
  torch.manual_seed(0)
  return Tiny().eval()


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive_gives_state_dict_names(tmp_path, tiny, how):
  module = torch.jit.script(tiny) if how == "script" else torch.jit.trace(tiny, torch.randn(3, 1, 4))
  torch.jit.save(module, tmp_path / "ViT-T.pt")
  assert_same(read_state_dict(tmp_path / "ViT-T.pt"), tiny.state_dict())


def test_half_precision_torchscript_stays_float16(tmp_path, tiny):
  half = Tiny().half().eval()
  torch.jit.save(torch.jit.script(half), tmp_path / "half.pt")
  arrays = read_state_dict(tmp_path / "half.pt")
  assert arrays["attn.in_proj_weight"].dtype == np.float16 and arrays["position_ids"].dtype == np.int64
  assert_same(arrays, half.state_dict())


def test_scripted_plain_tensor_attribute_is_not_a_state_dict_entry(tmp_path):
  class WithMask(nn.Module):
    def __init__(self):
      super().__init__()
      self.proj = nn.Linear(2, 2)
      self.attn_mask = torch.ones(2)  # a plain attribute, as OpenAI's ResidualAttentionBlock has

    def forward(self, x):
      return self.proj(x) + self.attn_mask

  torch.jit.save(torch.jit.script(WithMask()), tmp_path / "m.pt")
  expected = torch.jit.load(tmp_path / "m.pt").state_dict()
  assert list(expected) == ["proj.weight", "proj.bias"]
  assert_same(read_state_dict(tmp_path / "m.pt"), expected)


# --------------------------------------------------------------------------------------------- unsafe pickles
def write_archive(path: Path, data_pkl: bytes, storages: dict | None = None, prefix: str = "archive"):
  """A zip laid out as torch.save lays it out, around a data.pkl written by hand."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(f"{prefix}/data.pkl", data_pkl)
    z.writestr(f"{prefix}/byteorder", "little")
    for key, data in (storages or {}).items():
      z.writestr(f"{prefix}/data/{key}", data)
    z.writestr(f"{prefix}/version", "3\n")


class _Payload:
  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return self.func, (self.arg,)


@pytest.mark.parametrize("func, global_name", [(os.system, f"{os.system.__module__}.system"),
                                               (eval, "builtins.eval")])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, func, global_name):
  marker = tmp_path / "pwned"
  command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
  data = pickle.dumps({"weight": _Payload(func, command)}, protocol=2)
  write_archive(tmp_path / "evil.pt", data)
  with pytest.raises(UnsafeCheckpointError, match="not loaded") as err:
    read_state_dict(tmp_path / "evil.pt")
  assert f"'{global_name}'" in str(err.value) and str(tmp_path / "evil.pt") in str(err.value)
  assert not marker.exists()
  pickle.loads(data)  # the payload is live: plain pickle does run it
  assert marker.exists()


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
  # Many training scripts save their argparse.Namespace next to the weights: not data we can rebuild.
  torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {"w": torch.ones(2)}}, tmp_path / "ck.pt")
  with pytest.raises(UnsafeCheckpointError, match=r"'argparse\.Namespace'"):
    read_state_dict(tmp_path / "ck.pt")


def _crafted_tensor_archive(path: Path, size, stride, storage_bytes: bytes, numel: int, state=None):
  """data.pkl = {'w': _rebuild_tensor_v2(storage '0', 0, size, stride, ...)} with geometry chosen by the test
  (and, with `state`, a BUILD opcode that tries to set attributes of the rebuilt tensor)."""
  class Ref:
    pass

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Ref) else None

  class Tensor:
    def __reduce__(self):
      reduced = (torch._utils._rebuild_tensor_v2, (Ref(), 0, size, stride, False, OrderedDict()))
      return reduced if state is None else (*reduced, state)

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump({"w": Tensor()})
  write_archive(path, buf.getvalue(), {"0": storage_bytes})


def test_tensor_overrunning_its_storage_is_refused(tmp_path):
  _crafted_tensor_archive(tmp_path / "ok.pt", (2, 2), (2, 1), np.arange(4, dtype="<f4").tobytes(), 4)
  np.testing.assert_array_equal(read_state_dict(tmp_path / "ok.pt")["w"], [[0, 1], [2, 3]])
  _crafted_tensor_archive(tmp_path / "over.pt", (2, 2), (1000, 1), np.arange(4, dtype="<f4").tobytes(), 4)
  with pytest.raises(CheckpointError, match="overruns"):
    read_state_dict(tmp_path / "over.pt")
  _crafted_tensor_archive(tmp_path / "short.pt", (4,), (1,), b"\0" * 8, 4)
  with pytest.raises(CheckpointError, match="fewer than its 4 elements"):
    read_state_dict(tmp_path / "short.pt")
  # BUILD may not rewrite what the unpickler built (e.g. point a tensor at a bigger size after the check).
  _crafted_tensor_archive(tmp_path / "build.pt", (2,), (1,), b"\0" * 16, 4, state=(None, {"size": (1000,)}))
  with pytest.raises(CheckpointError, match="set the state"):
    read_state_dict(tmp_path / "build.pt")


# --------------------------------------------------------------------------------------------- broken files
def test_refused_and_broken_files_say_why(tmp_path):
  sd = {"w": torch.randn(64, 64)}
  cases = {}
  with open(tmp_path / "bare.pkl", "wb") as f:
    pickle.dump({"w": np.ones(2)}, f, protocol=4)
  cases["bare.pkl"] = ["bare pickle", "not a zip archive", "torch.save(state_dict, path)", "safetensors"]
  torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
  cases["legacy.pt"] = ["legacy (pre-1.6)", "not a zip archive", "torch.save(state_dict, path)"]
  (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(500))
  cases["photo.jpg"] = ["not a checkpoint"]
  (tmp_path / "notes.txt").write_text("these are not the weights you are looking for\n" * 20)
  cases["notes.txt"] = ["not a checkpoint"]
  (tmp_path / "empty.pt").write_bytes(b"")
  cases["empty.pt"] = ["empty"]
  (tmp_path / "folder").mkdir()
  cases["folder"] = ["directory"]
  cases["missing.pt"] = ["no such file"]
  torch.save(sd, tmp_path / "whole.pt")
  whole = (tmp_path / "whole.pt").read_bytes()
  (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
  cases["cut.pt"] = ["zip archive is truncated or damaged"]
  with zipfile.ZipFile(tmp_path / "whole.pt") as src, zipfile.ZipFile(tmp_path / "nostorage.pt", "w") as dst:
    for info in src.infolist():
      if not info.filename.endswith("/data/0"):
        dst.writestr(info, src.read(info))
  cases["nostorage.pt"] = ["storage 'whole/data/0'", "missing"]
  with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
    z.writestr("readme.txt", "hello")
  cases["other.zip"] = ["without <prefix>/data.pkl"]
  torch.save({"epoch": 1, "name": "no weights"}, tmp_path / "meta.pt")
  cases["meta.pt"] = ["holds no tensors"]

  for name, fragments in cases.items():
    with pytest.raises(CheckpointError) as err:
      read_state_dict(tmp_path / name)
    assert not isinstance(err.value, UnsafeCheckpointError), name
    message = str(err.value)
    assert str(tmp_path / name) in message, message
    for fragment in fragments:
      assert fragment in message, (name, message)


# --------------------------------------------------------------------------------------------- no torch
def test_reading_never_imports_torch(tmp_path, tiny):
  torch.save(tensor_zoo(), tmp_path / "sd.pt")
  torch.jit.save(torch.jit.trace(tiny, torch.randn(3, 1, 4)), tmp_path / "jit.pt")
  from safetensors.torch import save_file
  save_file({"w": torch.ones(2, 2).bfloat16()}, tmp_path / "w.safetensors")
  script = (
      "import sys\n"
      "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
      "from flyp_jax.checkpoint_files import read_state_dict\n"
      "print(sum(len(read_state_dict(p)) for p in sys.argv[1:]))\n")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sd.pt"), str(tmp_path / "jit.pt"),
                        str(tmp_path / "w.safetensors")], capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert int(out.stdout) == len(tensor_zoo()) + len(tiny.state_dict()) + 1


# --------------------------------------------------------------------------------------------- OpenAI's layout
def test_traced_fp16_openai_clip_archive(tmp_path):
  """A tiny CLIP from OpenAI's own model.py, traced and half-converted as OpenAI's released `.pt` files are."""
  from tests import references

  clip_model = references.load_openai_clip_module("model")
  torch.manual_seed(0)
  model = clip_model.CLIP(embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                          context_length=8, vocab_size=100, transformer_width=32, transformer_heads=2,
                          transformer_layers=2).eval()
  traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), torch.randint(0, 100, (1, 8))), check_trace=False)
  clip_model.convert_weights(model)  # in place, on the parameters the traced module shares
  torch.jit.save(traced, tmp_path / "ViT-tiny.pt")
  arrays = read_state_dict(tmp_path / "ViT-tiny.pt")
  assert_same(arrays, model.state_dict())
  assert arrays["visual.transformer.resblocks.1.attn.in_proj_weight"].dtype == np.float16
  assert "visual.conv1.weight" in arrays and "logit_scale" in arrays
  assert not any(k.endswith(("attn_mask", "input_resolution")) for k in arrays)

"""Tensors from checkpoint files, read as data: no pickle code is run and torch is never imported.

`read_state_dict(path)` returns {dotted name: np.ndarray} from
  * safetensors files, parsed here (8-byte little-endian header size, JSON header, raw little-endian bytes);
  * PyTorch zip archives written by `torch.save` (>= 1.6: open_clip `.pt`/`.bin`, HF `pytorch_model.bin`),
    including open_clip training checkpoints ({'epoch', 'state_dict', 'optimizer', ...});
  * TorchScript archives written by `torch.jit.save` (OpenAI's released CLIP `.pt` files).
The zip archives hold a pickle (`<prefix>/data.pkl`) whose globals are looked up in a short allowlist and
replaced by inert functions of this module; any other global raises `UnsafeCheckpointError` before anything
runs. Legacy (pre-1.6) torch files and bare pickles are refused: they cannot be read without that risk.

Arrays keep the stored dtype (bfloat16 via ml_dtypes) and are read-only views: of a memory map of the file for
safetensors, of each storage's bytes (read once) for torch archives, so tensors that shared a storage in torch
share memory here too, with the stored offsets and strides; nothing is copied twice. (Zero-size tensors and
big-endian archives give new arrays.) Tensors are built only after unpickling, from checked geometry.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
import zlib
from collections import OrderedDict

import ml_dtypes
import numpy as np

from flyp_jax import errors

_DTYPES = {n: np.dtype(n) for n in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                                    "uint16", "uint32", "uint64", "bool", "complex64", "complex128")}
_DTYPES.update(bfloat16=np.dtype(ml_dtypes.bfloat16), float8_e4m3fn=np.dtype(ml_dtypes.float8_e4m3fn),
               float8_e5m2=np.dtype(ml_dtypes.float8_e5m2))
# torch.save names a storage by its legacy typed-storage class (torch.FloatStorage, ...).
_STORAGE_DTYPES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
                   "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                   "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                   "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
                   "UntypedStorage": "uint8"}  # untyped: bytes, the tensor's dtype comes with _rebuild_tensor_v3
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                       "U64": "uint64", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # first object of a pre-1.6 torch.save


class CheckpointError(errors.UserError, ValueError):
  """The file is not a checkpoint this module can read; the message names the path and the problem."""


class UnsafeCheckpointError(CheckpointError):
  """The file's pickle references a global outside the allowlist; nothing was executed."""


def read_state_dict(path) -> dict[str, np.ndarray]:
  """{dotted name: array} from a safetensors file or a torch.save / torch.jit.save zip archive.

  Shapes and dtypes are the stored ones. A training checkpoint's 'state_dict' (or 'model' / 'params') entry is
  used and a `module.` prefix common to all names (DistributedDataParallel) is removed. Raises CheckpointError
  (UnsafeCheckpointError for pickles that reference non-allowlisted globals).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise _error(path, "no such file")
  if os.path.isdir(path):
    raise _error(path, "it is a directory, not a checkpoint file")
  with open(path, "rb") as f:
    head = f.read(16)
  if not head:
    raise _error(path, "the file is empty")
  if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first local header, or an empty zip
    return _read_torch_zip(path)
  if head[8:9] == b"{" or path.endswith(".safetensors"):
    return _read_safetensors(path)
  if head[:1] == b"\x80":  # pickle protocol >= 2
    kind = "a legacy (pre-1.6) torch.save file" if _LEGACY_TORCH_MAGIC in head else "a bare pickle"
    raise _error(path, f"it is {kind}, not a zip archive, and is refused because unpickling it could execute "
                       f"code; re-save it with a current torch (torch.save(state_dict, path)) or as safetensors")
  raise _error(path, "not a checkpoint (expected a safetensors file or a torch.save / torch.jit.save zip archive)")


def _error(path: str, problem: str) -> CheckpointError:
  return CheckpointError(f"cannot read checkpoint {path}: {problem}")


# ----------------------------------------------------------------------------------------------- safetensors
def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    header_size = int.from_bytes(f.read(8), "little")
    if size < 8 or 8 + header_size > size:
      raise _error(path, f"safetensors header of {header_size} bytes does not fit in the {size}-byte file "
                         f"(truncated?)")
    try:
      header = json.loads(f.read(header_size))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise _error(path, f"the safetensors header is not valid JSON ({e})") from None
  if not isinstance(header, dict):
    raise _error(path, "the safetensors header is not a JSON object")
  # One read-only map of the whole file: tensors are views into it, pages are read only when touched.
  mapped = np.memmap(path, dtype=np.uint8, mode="r")
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype, shape, (begin, end) = _DTYPES[_SAFETENSORS_DTYPES[info["dtype"]]], info["shape"], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
      raise _error(path, f"tensor {name!r} has an unsupported dtype or a malformed header entry {info!r}") from None
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
            and isinstance(begin, int) and isinstance(end, int)
            and 0 <= begin <= end and end - begin == int(np.prod(shape, dtype=np.int64)) * dtype.itemsize):
      raise _error(path, f"tensor {name!r} has offsets {begin}..{end} that do not match its shape {shape}")
    if 8 + header_size + end > size:
      raise _error(path, f"tensor {name!r} ends at byte {8 + header_size + end} but the file has only {size} "
                         f"bytes (truncated?)")
    out[name] = mapped[8 + header_size + begin: 8 + header_size + end].view(dtype).reshape(shape)
  if not out:
    raise _error(path, "the safetensors file holds no tensors")
  return out


# ----------------------------------------------------------------------------------------------- torch zips
class _Inert:
  """Base of the objects the unpickler hands out: pickle's BUILD opcode cannot set their attributes."""
  __slots__ = ()

  def __setstate__(self, state):
    raise pickle.UnpicklingError(f"the pickle tries to set the state of a {type(self).__name__}")


class _Marker(_Inert):
  """Stands for a torch global that is only a name: a storage class, a dtype, torch.Tensor, Parameter."""
  __slots__ = ("name",)

  def __init__(self, name: str):
    self.name = name


class _Storage(_Inert):
  """One `<prefix>/data/<key>` entry: raw bytes, read once, viewed by every tensor that shares it."""
  __slots__ = ("data", "dtype", "big_endian", "views")

  def __init__(self, data: bytes, dtype: np.dtype, big_endian: bool):
    self.data, self.dtype, self.big_endian, self.views = data, dtype, big_endian, {}

  def as_array(self, dtype: np.dtype) -> np.ndarray:
    """The whole storage as a read-only 1-D array of `dtype` (byteswapped once if written big-endian)."""
    if dtype not in self.views:
      flat = np.frombuffer(self.data, dtype=dtype, count=len(self.data) // dtype.itemsize)
      if self.big_endian and dtype.itemsize > 1:  # swap each scalar (each half of a complex) via unsigned ints
        flat = flat.view(f"u{dtype.itemsize // 2 if dtype.kind == 'c' else dtype.itemsize}").byteswap().view(dtype)
        flat.flags.writeable = False
      self.views[dtype] = flat
    return self.views[dtype]


class _Tensor(_Inert):
  """A tensor as the pickle describes it; made an array only after unpickling, from checked geometry."""
  __slots__ = ("storage", "offset", "size", "stride", "dtype", "metadata")

  def __init__(self, storage, offset, size, stride, dtype, metadata):
    if not isinstance(storage, _Storage):
      raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not from a storage")
    offset, size, stride = int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # element index of the last element
    if (len(size) != len(stride) or offset < 0 or min(stride, default=0) < 0
        or 0 not in size and last >= len(storage.data) // dtype.itemsize):  # as_strided does not check bounds
      raise pickle.UnpicklingError(f"a tensor of size {size}, stride {stride} at offset {offset} overruns its "
                                   f"{len(storage.data) // dtype.itemsize}-element storage")
    self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype
    self.metadata = dict(metadata or {})

  def to_array(self) -> np.ndarray:
    """A read-only view of the storage (offset and strides as stored), or a new array for the rare cases below."""
    if 0 in self.size:
      return np.zeros(self.size, self.dtype)
    arr = np.lib.stride_tricks.as_strided(self.storage.as_array(self.dtype)[self.offset:], self.size,
                                          [s * self.dtype.itemsize for s in self.stride], writeable=False)
    if self.metadata.get("neg"):  # torch.save keeps lazy negation / conjugation as metadata bits
      arr = -arr
    return arr.conj() if self.metadata.get("conj") else arr


class _ScriptObject:
  """Inert stand-in for a TorchScript class `__torch__.<...>`: keeps the pickled attributes in `state`."""
  module = name = ""

  def __setstate__(self, state):  # explicit, so that pickle's BUILD never calls setattr with pickled names
    self.state = state


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
  """torch._utils._rebuild_tensor(_v2): `size` elements `stride` elements apart from `offset`, in storage units."""
  return _Tensor(storage, offset, size, stride, getattr(storage, "dtype", None), metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
  # Dtypes without a legacy storage class (uint16, float8, ...) come with an untyped (byte) storage.
  if not isinstance(dtype, _Marker) or dtype.name not in _DTYPES:
    raise pickle.UnpicklingError(f"unsupported tensor dtype {getattr(dtype, 'name', dtype)!r}")
  return _Tensor(storage, offset, size, stride, _DTYPES[dtype.name], metadata)


def _rebuild_from_type_v2(func, new_type, args, state):
  return func(*args)  # a tensor subclass or a tensor with Python attributes: keep the tensor; `func` is allowlisted


def _identity(value, *_):
  return value  # also torch._utils._rebuild_parameter(data, ...): a Parameter is its data here


def _encode(text, encoding="latin1"):
  # How protocol-2 pickles store `bytes`; only the codec pickle itself uses is accepted.
  if encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"unexpected codec {encoding!r}")
  return text.encode("latin1")


_ALLOWED = {  # (module, name) -> harmless replacement; the real objects are never imported
    ("collections", "OrderedDict"): OrderedDict,  # state dicts and every tensor's (empty) backward_hooks
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,  # tensors, oldest zip archives
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,  # tensors (the usual one)
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,  # tensors of dtypes with no storage class
    ("torch._utils", "_rebuild_parameter"): _identity,  # nn.Parameter saved as such
    ("torch._utils", "_rebuild_parameter_with_state"): _identity,  # nn.Parameter with Python attributes
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # tensors with Python attributes
    ("torch", "Size"): tuple,  # shapes stored next to tensors
    ("torch", "device"): str,  # devices stored next to tensors
    ("_codecs", "encode"): _encode,  # bytes values in protocol-2 pickles
    # TorchScript's list builders and type tags, for module attributes (torch.jit._pickle: all identities).
    **{("torch.jit._pickle", n): _identity for n in ("build_intlist", "build_doublelist", "build_boollist",
                                                     "build_tensorlist", "restore_type_tag")},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves globals only through `_ALLOWED`, torch's dtype/storage names, and inert `__torch__` classes."""

  def __init__(self, file, path: str, archive: zipfile.ZipFile, prefix: str, big_endian: bool):
    super().__init__(file)
    self.path, self.archive, self.prefix, self.big_endian = path, archive, prefix, big_endian
    self.storages: dict[str, _Storage] = {}
    self.script_classes: dict[tuple[str, str], type] = {}

  def find_class(self, module: str, name: str):
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # protocol-2 spellings
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if (module == "torch" and (name in _STORAGE_DTYPES or name in _DTYPES or name == "Tensor")
        or (module, name) in {("torch.storage", "UntypedStorage"), ("torch.nn.parameter", "Parameter")}):
      return _Marker(name)
    if module == "__torch__" or module.startswith("__torch__."):  # TorchScript module classes (saved modules)
      key = (module, name)
      if key not in self.script_classes:
        self.script_classes[key] = type(name, (_ScriptObject,), {"module": module, "name": name})
      return self.script_classes[key]
    raise UnsafeCheckpointError(
        f"refusing to load {self.path}: its pickle references the global '{module}.{name}', which is not needed "
        f"to rebuild tensors; the file was not loaded and nothing in it was executed")

  def persistent_load(self, pid):
    """('storage', storage class, key, location, numel) -> the `_Storage` read from `<prefix>/data/<key>`."""
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Marker)
            and pid[1].name in _STORAGE_DTYPES):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    _, kind, key, _location, numel = pid  # location ('cpu', 'cuda:0') is ignored: arrays live in host memory
    if key not in self.storages:
      entry = f"{self.prefix}/data/{key}"
      try:
        data = self.archive.read(entry)
      except KeyError:
        raise _error(self.path, f"storage {entry!r} referenced by data.pkl is missing from the archive") from None
      dtype = _DTYPES[_STORAGE_DTYPES[kind.name]]
      if len(data) < numel * dtype.itemsize:
        raise _error(self.path, f"storage {entry!r} has {len(data)} bytes, fewer than its {numel} elements need")
      self.storages[key] = _Storage(data, dtype, self.big_endian)
    return self.storages[key]


def _read_torch_zip(path: str) -> dict[str, np.ndarray]:
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
      if not pickles:
        raise _error(path, "a zip archive without <prefix>/data.pkl is not a torch.save or torch.jit.save file")
      prefix = pickles[0].split("/")[0]
      names = set(archive.namelist())
      byteorder = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
      if byteorder not in ("little", "big"):
        raise _error(path, f"unknown byteorder {byteorder!r}")
      with archive.open(pickles[0]) as f:
        top = _RestrictedUnpickler(f, path, archive, prefix, byteorder == "big").load()
      if isinstance(top, _ScriptObject):
        return _flatten_script_module(top, archive, prefix, path)
      return _select_tensors(top, path)
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
    raise _error(path, f"the zip archive is truncated or damaged ({e})") from None
  except Exception as e:  # malformed pickle: a clear error instead of an arbitrary traceback
    raise _error(path, f"data.pkl could not be read as a tensor pickle ({type(e).__name__}: {e})") from None


def _select_tensors(top, path: str) -> dict[str, np.ndarray]:
  """A state dict, or the 'state_dict' / 'model' / 'params' entry of a training checkpoint; `module.` removed."""
  if isinstance(top, dict):
    for key in ("state_dict", "model", "params"):
      if isinstance(top.get(key), dict) and any(isinstance(v, _Tensor) for v in top[key].values()):
        top = top[key]
        break
  tensors = {str(k): v.to_array() for k, v in top.items() if isinstance(v, _Tensor)} if isinstance(top, dict) else {}
  if not tensors:
    raise _error(path, f"the pickled {type(top).__name__} holds no tensors (expected a state dict)")
  if all(k.startswith("module.") for k in tensors):  # saved from a DistributedDataParallel wrapper
    tensors = {k[len("module."):]: v for k, v in tensors.items()}
  return tensors


def _flatten_script_module(root: _ScriptObject, archive: zipfile.ZipFile, prefix: str, path: str):
  """A TorchScript module tree -> {'visual.conv1.weight': array, ...} in `module.state_dict()` order."""
  out: dict[str, np.ndarray] = {}

  def visit(obj: _ScriptObject, name_prefix: str):
    state = obj.state if isinstance(getattr(obj, "state", None), dict) else {}
    keep = _declared_parameters_and_buffers(archive, prefix, type(obj))
    for name, value in state.items():  # own tensors first, then submodules, as state_dict() orders them
      if isinstance(value, _Tensor) and (keep is None or name in keep):
        out[name_prefix + name] = value.to_array()
    for name, value in state.items():
      if isinstance(value, _ScriptObject):
        visit(value, f"{name_prefix}{name}.")

  visit(root, "")
  if not out:
    raise _error(path, "the TorchScript archive holds no parameters or buffers")
  return out


def _declared_parameters_and_buffers(archive, prefix: str, cls: type):
  """Names in the class's `__parameters__`/`__buffers__` lines of its code/ file (read as text, never run).

  A scripted module may also hold plain tensor attributes, which `state_dict()` leaves out; None (keep every
  tensor) when the declarations cannot be found.
  """
  source = f"{prefix}/code/{cls.module.replace('.', '/')}.py"
  try:
    text = archive.read(source).decode("utf-8")
  except (KeyError, UnicodeDecodeError):
    return None
  match = re.search(rf"^class {re.escape(cls.name)}\(Module\):\n\s+__parameters__ = \[(.*)\]\n\s+__buffers__ = "
                    rf"\[(.*)\]", text, re.M)
  return None if match is None else set(re.findall(r'"([^"]*)"', match.group(1) + match.group(2)))

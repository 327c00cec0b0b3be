"""Reference implementations (open_clip, OpenAI CLIP) loaded file by file.

Both packages are installed without their full dependencies: `import open_clip` and `import clip` fail
because their `__init__` pulls in torchvision. The single files the tests compare against only need
torch/ftfy/regex, so they are loaded by path instead. A missing package raises ModuleNotFoundError, which
fails the test that needs it: the references are part of the test extra, so a missing one is an install
error, never a reason to skip.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_file(package: str, filename: str) -> ModuleType:
  # find_spec on a top-level name locates the package without executing its __init__.
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(f"reference package {package!r} is not installed; the tests need it: "
                              "pip install -e '.[test]' && pip install --no-deps open_clip_torch==3.3.0")
  path = Path(list(spec.submodule_search_locations)[0]) / filename
  if not path.is_file():
    raise ModuleNotFoundError(f"reference file {path} is missing")
  # A private module name keeps these copies from shadowing a real `open_clip`/`clip` import.
  name = f"_reference_{package}_{path.stem}"
  file_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(file_spec)
  sys.modules[name] = module  # dataclasses and pickling look modules up by name
  try:
    file_spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[name]
    raise
  return module


@functools.lru_cache(maxsize=None)
def load_open_clip_tokenizer_module() -> ModuleType:
  """open_clip's `tokenizer.py` (SimpleTokenizer, module-level `tokenize` returning torch.LongTensor)."""
  return _load_file("open_clip", "tokenizer.py")


@functools.lru_cache(maxsize=None)
def load_open_clip_zero_shot_metadata() -> ModuleType:
  """open_clip's `zero_shot_metadata.py`: IMAGENET_CLASSNAMES (1000) and OPENAI_IMAGENET_TEMPLATES (80)."""
  return _load_file("open_clip", "zero_shot_metadata.py")


@functools.lru_cache(maxsize=None)
def load_openai_clip_module(name: str) -> ModuleType:
  """OpenAI CLIP's `clip/<name>.py`, where name is 'simple_tokenizer' or 'model'."""
  if name not in ("simple_tokenizer", "model"):
    raise ValueError(f"name must be 'simple_tokenizer' or 'model', got {name!r}")
  return _load_file("clip", f"{name}.py")


@functools.lru_cache(maxsize=None)
def load_open_clip_loss_module() -> ModuleType:
  """open_clip's `loss.py` (ClipLoss, ...); it needs only torch (distributed/horovod are optional)."""
  return _load_file("open_clip", "loss.py")


def mae_vit_class():
  """A torch ViT written from facebookresearch/mae `models_vit.py` (VisionTransformer with `global_pool`) and
  timm's `vision_transformer.py` (`PatchEmbed`, `Block`, `Attention`, `Mlp`), as the attention-transfer code's
  `models_dual_vit.py` runs them: state-dict names as theirs, `forward(x, return_attention=True)` also returns
  every layer's pre-softmax scores (`Attention.forward`'s `attn_logits`). Written here, not imported: timm's
  package pulls in torchvision."""
  import torch
  from torch import nn

  class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True):
      super().__init__()
      self.heads, self.scale = heads, (dim // heads) ** -0.5
      self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
      self.proj = nn.Linear(dim, dim)

    def forward(self, x):
      b, n, c = x.shape
      q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
      logits = (q @ k.transpose(-2, -1)) * self.scale
      x = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
      return self.proj(x), logits

  class Mlp(nn.Module):
    def __init__(self, dim, hidden):
      super().__init__()
      self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
      return self.fc2(self.act(self.fc1(x)))

  class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias):
      super().__init__()
      self.norm1 = nn.LayerNorm(dim, eps=1e-6)
      self.attn = Attention(dim, heads, qkv_bias)
      self.norm2 = nn.LayerNorm(dim, eps=1e-6)
      self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
      y, logits = self.attn(self.norm1(x))
      x = x + y
      return x + self.mlp(self.norm2(x)), logits

  class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
      super().__init__()
      self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
      return self.proj(x).flatten(2).transpose(1, 2)

  class VisionTransformer(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio=4.0, qkv_bias=True,
                 global_pool=True, num_classes=0):
      super().__init__()
      self.patch_embed = PatchEmbed(patch_size, embed_dim)
      self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
      self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch_size) ** 2 + 1, embed_dim))
      self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)])
      self.global_pool = global_pool
      if global_pool:
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
      else:
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
      self.head = nn.Linear(embed_dim, num_classes) if num_classes else None

    def forward(self, x):
      """x [B, 3, S, S] -> (pooled [B, dim] (before the head), [pre-softmax scores [B, H, T, T] per layer])."""
      x = self.patch_embed(x)
      x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
      scores = []
      for blk in self.blocks:
        x, s = blk(x)
        scores.append(s)
      if self.global_pool:
        return self.fc_norm(x[:, 1:].mean(dim=1)), scores
      return self.norm(x)[:, 0], scores

  return VisionTransformer


def attention_distillation_reference(teacher_logits, student_logits):
  """attention-transfer `models_dual_vit.py` `DualVisionTransformer.forward`, mode 'distill': summed over the
  distilled layers, -(teacher_map.softmax(-1) * log_softmax(student_map, -1)).sum(-1).mean(), both maps the
  layers' pre-softmax scores (torch tensors)."""
  import torch
  total = 0
  for t, s in zip(teacher_logits, student_logits):
    total = total + -(t.softmax(dim=-1) * torch.log_softmax(s, dim=-1)).sum(dim=-1).mean()
  return total

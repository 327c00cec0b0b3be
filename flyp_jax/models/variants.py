"""CLIP architecture descriptions and the named variants ("ViT-B/16", "ViT-L/14@336", ...)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from flyp_jax import errors

ACTIVATIONS = ("quick_gelu", "gelu")


class ShapeFields:
  """What a model shape's dataclass (CLIPConfig, vit.ViTConfig) shares: its patch count and a dict form that
  refuses unknown fields by name."""
  image_size: int
  patch_size: int

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise errors.BadValue(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class CLIPConfig(ShapeFields):
  """Shape of a CLIP model with a ViT image tower and a causal text transformer.

  Widths are channels; `image_size` and `patch_size` are pixels. Attention heads are 64 channels wide in
  every released CLIP, which is why the head counts default to width // 64 when inferred from weights.
  """
  embed_dim: int
  image_size: int
  patch_size: int
  vision_width: int
  vision_layers: int
  vision_heads: int
  text_width: int
  text_layers: int
  text_heads: int
  context_length: int = 77
  vocab_size: int = 49408
  mlp_ratio: float = 4.0
  activation: str = "quick_gelu"  # OpenAI checkpoints; open_clip's LAION models use "gelu".
  layer_norm_eps: float = 1e-5

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise errors.BadValue(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.image_size % self.patch_size:
      raise errors.BadValue(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
    for tower, width, heads in (("vision", self.vision_width, self.vision_heads),
                                ("text", self.text_width, self.text_heads)):
      if width % heads:
        raise errors.BadValue(f"{tower} width {width} is not divisible by its {heads} heads")


# Tower sizes by the letter in the variant name: (embed, vision width, layers, text width, text layers).
# "T" is a tiny size for tests (two heads per tower, so multi-head code paths are exercised).
_SIZES = {
    "T": (64, 128, 2, 128, 2),
    "S": (384, 384, 12, 384, 12),
    "B": (512, 768, 12, 512, 12),
    "L": (768, 1024, 24, 768, 12),
    "H": (1024, 1280, 32, 1024, 24),
}
_DEFAULT_IMAGE_SIZE = {"T": 32}
_NAME = re.compile(r"^ViT-(?P<size>[TSBLH])[/-](?P<patch>\d+)(?:@(?P<res>\d+))?(?P<gelu>-gelu)?$")


def get_config(variant: str, **overrides) -> CLIPConfig:
  """Config for a variant name such as "ViT-B/32", "ViT-B-16", "ViT-L/14@336" or "ViT-T/8".

  A "-gelu" suffix selects exact GELU (open_clip's LAION models); OpenAI's use QuickGELU.
  Keyword overrides replace fields, e.g. `get_config("ViT-T/8", context_length=16)`.
  """
  m = _NAME.match(variant)
  if not m:
    raise errors.BadValue(f"unknown CLIP variant {variant!r}; expected e.g. 'ViT-B/32', 'ViT-B/16', 'ViT-L/14', "
                     f"'ViT-L/14@336', 'ViT-T/8' (sizes {'/'.join(_SIZES)}, optional '@<image size>', '-gelu')")
  size, patch = m["size"], int(m["patch"])
  embed, vw, vl, tw, tl = _SIZES[size]
  fields = dict(embed_dim=embed, image_size=int(m["res"] or _DEFAULT_IMAGE_SIZE.get(size, 224)),
                patch_size=patch, vision_width=vw, vision_layers=vl, vision_heads=vw // 64,
                text_width=tw, text_layers=tl, text_heads=tw // 64,
                activation="gelu" if m["gelu"] else "quick_gelu")
  fields.update(overrides)
  return CLIPConfig(**fields)


def describe(config: CLIPConfig) -> str:
  """The variant name a config matches ("ViT-B/16"), or its shape in words."""
  for name in ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336", "ViT-H/14", "ViT-T/8"):
    ref = get_config(name)
    if ref == CLIPConfig(**{**config.to_dict(), "activation": ref.activation}):
      return f"{name} ({config.activation})"
  c = config
  return (f"custom ViT (image {c.image_size}px, patch {c.patch_size}, vision {c.vision_width}x{c.vision_layers}, "
          f"text {c.text_width}x{c.text_layers}, embed {c.embed_dim}, {c.activation})")

"""Parity: our loader + model against independent PyTorch implementations on the same random weights.

References: `transformers.CLIPModel` (Hugging Face layout) and OpenAI's own `clip/model.py` (OpenAI and
open_clip layouts, TorchScript archives). Tolerance: 1e-4 of the reference's largest magnitude, float32.
"""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import torch
import transformers

from flyp_jax import models  # noqa: E402
from flyp_jax.models.variants import describe  # noqa: E402
from flyp_jax.checkpoint_files import CheckpointError  # noqa: E402
from flyp_jax.tokenizer import tokenize  # noqa: E402
from tests.references import load_openai_clip_module  # noqa: E402

TEXTS = ["a photo of a cat.", "a blurry photo of a dog", "itap of a goldfish", "a sketch of a hammerhead shark"]


def close(ours, ref, tol=1e-4):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape
  err = np.abs(ours - ref).max() / np.abs(ref).max()
  assert err < tol, f"relative error {err:.2e}"


def inputs(image_size, seed=0):
  images = np.random.default_rng(seed).normal(size=(len(TEXTS), image_size, image_size, 3)).astype(np.float32)
  return images, tokenize(TEXTS)


def ours(path, images, tokens, **kwargs):
  model, params = models.load_pretrained(path, **kwargs)
  img = model.apply({"params": params}, images, method=model.encode_image)
  txt = model.apply({"params": params}, tokens, method=model.encode_text)
  logits, _ = model.apply({"params": params}, images, tokens)
  return model, img, txt, logits


# ------------------------------------------------------------------------------------- Hugging Face
def hf_model(act, heads=4):
  torch.manual_seed(0)
  cfg = transformers.CLIPConfig(
      text_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=heads,
                       max_position_embeddings=77, vocab_size=49408, hidden_act=act),
      vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=heads,
                         image_size=32, patch_size=8, hidden_act=act),
      projection_dim=48)
  m = transformers.CLIPModel(cfg).eval()
  with torch.no_grad():  # random init leaves biases and norms at 0/1; make every tensor matter
    for p in m.parameters():
      p.add_(0.02 * torch.randn_like(p))
  return m


def assert_matches_hf(ref, images, tokens, img, txt, logits):
  """Our image and text features and logits against the HF model's on the same inputs."""
  with torch.no_grad():
    pixel = torch.from_numpy(images.transpose(0, 3, 1, 2))
    ids = torch.from_numpy(tokens.astype(np.int64))
    close(img, tensor_out(ref.get_image_features(pixel_values=pixel)))
    close(txt, tensor_out(ref.get_text_features(input_ids=ids)))
    close(logits, ref(input_ids=ids, pixel_values=pixel).logits_per_image.numpy())


def tensor_out(x):
  return (x if isinstance(x, torch.Tensor) else x.pooler_output).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("act,heads", [("quick_gelu", 4), ("gelu", 2)])
def test_hugging_face_directory(tmp_path, act, heads):
  ref = hf_model(act, heads)
  ref.save_pretrained(tmp_path)
  images, tokens = inputs(32)
  model, img, txt, logits = ours(tmp_path, images, tokens)
  assert model.config.activation == act and model.config.vision_heads == heads
  assert_matches_hf(ref, images, tokens, img, txt, logits)


@pytest.mark.slow
def test_hugging_face_pytorch_bin_and_sharded_safetensors(tmp_path):
  ref = hf_model("quick_gelu")
  images, tokens = inputs(32)
  ref.save_pretrained(tmp_path / "st")
  ref.save_pretrained(tmp_path / "bin")  # the layout older transformers wrote: config.json + pytorch_model.bin
  (tmp_path / "bin" / "model.safetensors").unlink()
  torch.save(ref.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  ref.save_pretrained(tmp_path / "sharded", max_shard_size="2MB")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
  expected = ours(tmp_path / "st", images, tokens)[3]
  for d in ("bin", "sharded"):
    close(ours(tmp_path / d, images, tokens)[3], expected, tol=1e-6)


# ------------------------------------------------------------------------------ OpenAI and open_clip
@pytest.fixture(scope="module")
def openai_reference():
  clip_model = load_openai_clip_module("model")
  torch.manual_seed(0)
  # embed, image size, vision layers, vision width, patch, context, vocab, text width, text heads, text layers
  m = clip_model.CLIP(48, 32, 2, 128, 8, 77, 49408, 128, 2, 2).eval()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.02 * torch.randn_like(p))
  images, tokens = inputs(32, seed=1)
  with torch.no_grad():
    pixel, ids = torch.from_numpy(images.transpose(0, 3, 1, 2)), torch.from_numpy(tokens.astype(np.int64))
    expected = (m.encode_image(pixel).numpy(), m.encode_text(ids).numpy(), m(pixel, ids)[0].numpy())
  return m, images, tokens, expected


def check_openai(path, openai_reference, **kwargs):
  _, images, tokens, expected = openai_reference
  model, *got = ours(path, images, tokens, **kwargs)
  assert model.config.activation == "quick_gelu" and model.config.vision_layers == 2
  for g, e in zip(got, expected):
    close(g, e)


def save_torchscript(m, path, half=False):
  """A traced TorchScript archive, as OpenAI released its CLIPs (their files hold fp16 weights)."""
  traced = torch.jit.trace_module(m, {"encode_image": torch.zeros(1, 3, 32, 32),
                                      "encode_text": torch.from_numpy(tokenize(TEXTS[:1]).astype(np.int64))})
  torch.jit.save(traced.half() if half else traced, path)


def test_openai_torchscript_archive(tmp_path, openai_reference):
  save_torchscript(openai_reference[0], tmp_path / "ViT-T-8.pt")
  check_openai(tmp_path / "ViT-T-8.pt", openai_reference)


def test_openai_fp16_torchscript_archive(tmp_path, openai_reference):
  # fp16 weights are upcast to float32 exactly.
  m = openai_reference[0]
  save_torchscript(copy.deepcopy(m), tmp_path / "half.pt", half=True)
  model, params = models.load_pretrained(tmp_path / "half.pt")
  expected = m.state_dict()["visual.transformer.resblocks.0.attn.in_proj_weight"].half().float().numpy()
  got = params["visual"]["transformer"]["resblocks_0"]["attn"]["query"]["kernel"]
  np.testing.assert_array_equal(got.reshape(128, 128).T, expected[:128])
  assert model.config.activation == "quick_gelu"


def test_openai_plain_state_dict_pt(tmp_path, openai_reference):
  torch.save(openai_reference[0].state_dict(), tmp_path / "sd.pt")
  check_openai(tmp_path / "sd.pt", openai_reference, activation="quick_gelu")


def test_open_clip_safetensors_and_training_checkpoint(tmp_path, openai_reference):
  from safetensors.torch import save_file
  sd = openai_reference[0].state_dict()
  save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "open_clip_model.safetensors")
  check_openai(tmp_path / "open_clip_model.safetensors", openai_reference, activation="quick_gelu")
  torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}},
             tmp_path / "epoch_3.pt")
  check_openai(tmp_path / "epoch_3.pt", openai_reference, activation="quick_gelu")


def test_open_clip_sidecar_config_sets_activation(tmp_path, openai_reference):
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in openai_reference[0].state_dict().items()},
            tmp_path / "open_clip_model.safetensors")
  (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
  check_openai(tmp_path / "open_clip_model.safetensors", openai_reference)
  (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))  # open_clip's default: GELU
  assert models.load_pretrained(tmp_path / "open_clip_model.safetensors")[0].config.activation == "gelu"
  (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"text_cfg": {"pool_type": "last"}}}))
  with pytest.raises(CheckpointError, match="pool_type='last' are not supported"):
    models.load_pretrained(tmp_path / "open_clip_model.safetensors")


# --------------------------------------------------------------------------------- convert round trip
@pytest.mark.slow
def test_convert_command_round_trip(tmp_path, openai_reference):
  save_torchscript(openai_reference[0], tmp_path / "model.pt")
  dst = tmp_path / "converted"
  run = subprocess.run([sys.executable, "-m", "flyp_jax.convert", str(tmp_path / "model.pt"), str(dst)],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 0, run.stderr
  assert "parameters written" in run.stdout
  check_openai(dst, openai_reference)
  again = subprocess.run([sys.executable, "-m", "flyp_jax.convert", str(tmp_path / "model.pt"), str(dst)],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert again.returncode == 2 and "exists and is not empty" in again.stderr


# ------------------------------------------------------------------------------------------ bad files
def test_bad_checkpoints_name_the_problem(tmp_path, openai_reference):
  sd = {k: v.clone() for k, v in openai_reference[0].state_dict().items()}
  cases = {}
  torch.save({k: v for k, v in sd.items() if "resblocks.1.mlp" not in k}, tmp_path / "missing.pt")
  cases["missing.pt"] = "missing .*visual.transformer.resblocks.1.mlp.c_fc.bias"
  torch.save({**sd, "visual.extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
  cases["extra.pt"] = "unexpected visual.extra.weight"
  bad_shape = dict(sd)
  bad_shape["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(256, 128)
  torch.save(bad_shape, tmp_path / "shape.pt")
  cases["shape.pt"] = r"text/transformer/resblocks_1/mlp/c_fc.*\(128, 256\) vs model \(128, 512\)"
  torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
  cases["other.pt"] = "not a CLIP checkpoint"
  torch.save({"visual.conv1.weight": torch.zeros(64, 3, 7, 7), "visual.layer1.0.conv1.weight": torch.zeros(1)},
             tmp_path / "rn50.pt")
  cases["rn50.pt"] = "ResNet image towers"
  (tmp_path / "notes.txt").write_text("not a checkpoint")
  cases["notes.txt"] = "not a checkpoint"
  good = tmp_path / "good.pt"
  torch.save(sd, good)
  (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
  cases["truncated.pt"] = "truncated|corrupt|not a valid zip"
  for name, pattern in cases.items():
    with pytest.raises(CheckpointError, match=pattern):
      models.load_pretrained(tmp_path / name, activation="quick_gelu")
  (tmp_path / "emptydir").mkdir()
  with pytest.raises(CheckpointError, match="neither a Hugging Face CLIPModel"):
    models.load_pretrained(tmp_path / "emptydir")


def test_convert_command_reports_bad_file_in_one_line(tmp_path):
  (tmp_path / "x.pt").write_bytes(os.urandom(1000))
  run = subprocess.run([sys.executable, "-m", "flyp_jax.convert", str(tmp_path / "x.pt"), str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert run.returncode == 2
  assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_b16_sized_checkpoint_matches_hugging_face(tmp_path):
  """A full ViT-B/16-shaped HF checkpoint (random weights, perturbed so every tensor matters) loads and gives
  HF's image and text features and logits within 1e-4, at the real size (224 px, 12 layers, 77 tokens)."""
  torch.manual_seed(0)
  cfg = transformers.CLIPConfig(text_config=dict(hidden_act="quick_gelu"),
                                vision_config=dict(patch_size=16, hidden_act="quick_gelu"), projection_dim=512)
  ref = transformers.CLIPModel(cfg).eval()
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.02 * torch.randn_like(p))
  ref.save_pretrained(tmp_path)
  images, tokens = inputs(224)
  model, img, txt, logits = ours(tmp_path, images, tokens)
  assert describe(model.config) == "ViT-B/16 (quick_gelu)"
  assert_matches_hf(ref, images, tokens, img, txt, logits)

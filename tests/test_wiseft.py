"""WiSE-FT: weight interpolation, the alpha sweep and its choice, and the written table / plot / JSON."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flyp_jax.commands import wiseft


def _params(value, proj_shape=(4, 3)):
  """A small CLIP-like params tree, every leaf filled with `value`."""
  return {"visual": {"proj": jnp.full(proj_shape, value, jnp.float32),
                     "ln": {"scale": jnp.full((3,), value, jnp.bfloat16)}},
          "text": {"embed": np.full((5, 2), value, np.float32)},
          "logit_scale": jnp.float32(value)}


def test_interpolate_values_and_dtypes():
  z, f = _params(1.0), _params(3.0)
  for alpha, want in ((0.0, 1.0), (1.0, 3.0), (0.5, 2.0), (0.25, 1.5)):  # (1 - a) * 1 + a * 3
    out = wiseft.interpolate(z, f, alpha)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(z)
    for leaf, ref in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(z)):
      assert leaf.dtype == ref.dtype and leaf.shape == ref.shape
      np.testing.assert_array_equal(np.asarray(leaf, np.float32), want)
  # numpy leaves stay numpy (on the host); the endpoints are the inputs bit for bit.
  assert isinstance(wiseft.interpolate(z, f, 0.5)["text"]["embed"], np.ndarray)
  rng = np.random.default_rng(0)
  z2, f2 = ({"w": rng.normal(size=(7,)).astype(np.float32)} for _ in range(2))
  np.testing.assert_array_equal(wiseft.interpolate(z2, f2, 0.0)["w"], z2["w"])
  np.testing.assert_array_equal(wiseft.interpolate(z2, f2, 1.0)["w"], f2["w"])


def test_interpolate_mismatches_name_paths():
  z = _params(1.0)
  with pytest.raises(ValueError, match=r"visual/proj: \(4, 3\) vs \(4, 2\)"):
    wiseft.interpolate(z, _params(2.0, proj_shape=(4, 2)), 0.5)
  f = _params(2.0)
  del f["text"]
  f["head"] = jnp.zeros((3,))
  with pytest.raises(ValueError) as e:
    wiseft.interpolate(z, f, 0.5)
  assert "text/embed: missing from finetuned" in str(e.value) and "head: only in finetuned" in str(e.value)
  f = _params(2.0)
  f["visual"]["ln"]["scale"] = f["visual"]["ln"]["scale"].astype(jnp.float32)
  with pytest.raises(ValueError, match="visual/ln/scale: bfloat16 vs float32"):
    wiseft.interpolate(z, f, 0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_interpolate_alpha_range(alpha):
  with pytest.raises(ValueError, match="alpha"):
    wiseft.interpolate(_params(0.0), _params(1.0), alpha)


def test_interpolate_traced_alpha_compiles_once():
  z, f = _params(1.0), _params(3.0)
  fn = jax.jit(wiseft.interpolate)
  for alpha in (0.0, 0.5, 0.75):
    out = fn(z, f, jnp.float32(alpha))
    np.testing.assert_allclose(np.asarray(out["visual"]["proj"]), 1 + 2 * alpha)
    assert out["visual"]["ln"]["scale"].dtype == jnp.bfloat16
  assert fn._cache_size() == 1


def _fake_evaluate(params):
  """Accuracies as known functions of alpha (read back from the interpolated logit_scale = alpha)."""
  a = float(params["logit_scale"])
  return {"avg_id/top1": 0.7 + 0.2 * a - 0.15 * a * a,  # maximum at alpha = 2/3: 0.7 on the 0.1 grid
          "avg_ood/top1": 0.5 + 0.2 * a - 0.25 * a * a, "imagenet/top1": 0.0}


def _sweep():
  return wiseft.sweep(_fake_evaluate, _params(0.0), _params(1.0))


def test_sweep_and_pick():
  results = _sweep()
  assert [r["alpha"] for r in results] == pytest.approx([i / 10 for i in range(11)])
  assert set(results[0]) == {"alpha", "avg_id/top1", "avg_ood/top1", "imagenet/top1"}
  assert wiseft.pick(results)["alpha"] == pytest.approx(0.7)
  assert wiseft.pick(results, key="avg_ood/top1")["alpha"] == pytest.approx(0.4)  # maximum at 0.4
  tied = [{"alpha": a, "avg_id/top1": 0.5} for a in (0.0, 0.3, 0.6)]
  assert wiseft.pick(tied)["alpha"] == 0.0
  with pytest.raises(KeyError, match="avg_ood/top1"):
    wiseft.pick(tied, key="avg_ood/top1")


def test_table_plot_and_write(tmp_path):
  results = _sweep()
  md = wiseft.table(results)
  rows = [l for l in md.splitlines() if l.startswith("|")]
  assert len(rows) == 2 + len(results)  # header, separator, one row per alpha
  assert "| **0.70** | 0.7665 | 0.5175 |" in md  # the picked alpha in bold

  png = wiseft.plot(results, str(tmp_path / "sub" / "p.png"), title="test", extra={"FLYP": (0.8, 0.56)})
  with open(png, "rb") as f:
    data = f.read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

  best = wiseft.write(results, str(tmp_path / "w"))
  assert best["alpha"] == pytest.approx(0.7)
  assert sorted(os.listdir(tmp_path / "w")) == ["wiseft.json", "wiseft.md", "wiseft.png"]
  saved = json.loads((tmp_path / "w" / "wiseft.json").read_text())
  assert saved["picked_alpha"] == pytest.approx(0.7) and len(saved["results"]) == 11


def test_a_damaged_fine_tuned_run_is_moved_aside_and_named_in_one_paragraph(tmp_path, capsys):
  """WiSE-FT reads the fine-tuned run's final/ as the loop does: one that does not load is moved aside (kept),
  and without a config to remake the run the error names the run and what to do."""
  from flyp_jax import configs_lib, errors
  from flyp_jax.models import converted
  config = configs_lib.load("configs/wiseft.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.wiseft.update(finetuned=str(tmp_path / "ft"), finetuned_config="")
  final = tmp_path / "ft" / "final"
  final.mkdir(parents=True)
  (final / converted.MARKER).write_text("{not json")  # a bad copy: the marker is there, the rest is not
  with pytest.raises(errors.NotFound, match=r"holds no finished fine-tuning run .*its own command writes a damaged"):
    wiseft.run(config, str(tmp_path / "wiseft"))
  assert not final.exists() and len(list((tmp_path / "ft").glob("final.corrupt-*"))) == 1
  assert "moved aside" in capsys.readouterr().out

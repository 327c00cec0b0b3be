"""One base for paths to other runs: the parent of the run's workdir (flyp_jax/run_paths.py). (That the
comparison's shared settings reach the runs it starts is tested in tests/test_compare.py.)"""

import os

import pytest

from flyp_jax import configs_lib, methods, run_paths


def test_relative_paths_are_beside_the_workdir():
  assert run_paths.resolve("/runs/mine/wiseft", "ft_demo") == "/runs/mine/ft_demo"
  assert run_paths.resolve("/runs/mine/wiseft/", "ft_demo") == "/runs/mine/ft_demo"
  assert run_paths.resolve("gs://b/runs/wiseft", "ft_demo") == "gs://b/runs/ft_demo"
  assert run_paths.resolve("/runs/mine/wiseft", "/elsewhere/ft") == "/elsewhere/ft"
  assert run_paths.resolve("/runs/mine/wiseft", "gs://b/ft") == "gs://b/ft"
  assert run_paths.resolve("/runs/mine/wiseft", "") == ""
  assert run_paths.resolve("workdirs/wiseft_demo", "ft_demo") == os.path.abspath("workdirs/ft_demo")


@pytest.mark.parametrize("spec,field,made_by", [
    ("configs/wiseft.py:demo", "wiseft.finetuned", "wiseft.finetuned_config"),
    ("configs/wiseft.py:flyp", "wiseft.finetuned", "wiseft.finetuned_config"),
    ("configs/lpft.py:demo", "ft.lp_workdir", "configs/lp.py:demo"),
    ("configs/attention_transfer.py:demo", "at.ensemble.path", "at.ensemble.config"),
])
def test_default_paths_find_the_runs_the_other_commands_make(spec, field, made_by):
  """With default workdirs (workdirs/<name>), a config's path to another run is that run's default workdir."""
  config = configs_lib.load(spec)
  get = lambda c, key: c[key] if "." not in key else get(c[key.split(".")[0]], key.split(".", 1)[1])
  other_spec = made_by if made_by.startswith("configs/") else get(config, made_by)
  other = configs_lib.load(other_spec)
  workdir = os.path.join("workdirs", config.name)
  assert run_paths.resolve(workdir, get(config, field)) == os.path.abspath(os.path.join("workdirs", other.name))
  # The loop hands a training method these paths made absolute by the same rule: the fields the method names.
  if config.method in methods.NAMES:
    assert methods.get(config.method).run_paths == (field,)
  absolute = run_paths.absolute(config, "/custom/place/mine", (field,))
  assert get(absolute, field) == f"/custom/place/{other.name}"

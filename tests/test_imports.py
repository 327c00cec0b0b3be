"""The package's import graph: no circle, and the project's own modules imported at the top of a module.

Read from the source (ast), so it needs no import: every `import flyp_jax...` / `from flyp_jax... import ...`, at
the top of a module or inside a function. A package's `__init__` importing its own submodules is how packages are
built and is no circle; a submodule importing its package's `__init__` back is one. `python -m pytest
tests/test_imports.py` runs the check.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "flyp_jax")

# Function-local imports of the project's own modules, each for a reason said beside it in the code.
LOCAL_IMPORTS = {
    # every config imports demo_model for its PATH, before a command needs JAX, orbax or TensorFlow
    ("flyp_jax.demo_model", "flyp_jax.models"), ("flyp_jax.demo_model", "flyp_jax.models.converted"),
    ("flyp_jax.demo_model", "flyp_jax.data.classnames"), ("flyp_jax.demo_model", "flyp_jax.data.pipeline"),
    ("flyp_jax.demo_model", "flyp_jax.data.templates"), ("flyp_jax.demo_model", "flyp_jax.tokenizer"),
    ("flyp_jax.demo_model", "flyp_jax.files"), ("flyp_jax.demo_model", "flyp_jax.run_paths"),
    ("flyp_jax.demo_model", "flyp_jax.data.builders.domain_shapes"),
    # TensorFlow: the class names, k-shot sampling and config checks are read without it until data is read
    ("flyp_jax.data.classnames", "flyp_jax.data.pipeline"), ("flyp_jax.data.kshot", "flyp_jax.data.pipeline"),
    ("flyp_jax.config_checks", "flyp_jax.data.pipeline"), ("flyp_jax.config_checks", "flyp_jax.data.rand_augment"),
    # the builders register themselves with TFDS on import (TensorFlow), only when a dataset is built or read
    ("flyp_jax.data.pipeline", "flyp_jax.data.builders"), ("flyp_jax.data.pipeline", "flyp_jax.data.builders._manual"),
}


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def modules() -> dict[str, str]:
  out = {}
  for directory, _, names in os.walk(PACKAGE):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        out[module_name(path)] = path
  return out


def imports(path: str, known: set) -> list[tuple[str, bool]]:
  """(imported project module, whether inside a function) for each import of the project in `path`."""
  tree = ast.parse(open(path).read())
  local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
           for n in ast.walk(f) if n is not f}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from P import name`: the submodule P.name when there is one, else P itself
      targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
    else:
      continue
    out += [(t, id(node) in local) for t in targets if t.split(".")[0] == "flyp_jax"]
  return out


def graph() -> tuple[dict[str, set], set]:
  known = modules()
  edges, local = {m: set() for m in known}, set()
  for name, path in known.items():
    for target, inside in imports(path, set(known)):
      if target.startswith(name + "."):  # a package importing its own submodule
        continue
      edges[name].add(target)
      if inside:
        local.add((name, target))
  return edges, local


def cycles(edges: dict[str, set]) -> list[list[str]]:
  found, state = [], {}

  def visit(node, trail):
    state[node] = "open"
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == "open":
        found.append(trail[trail.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, trail + [nxt])
    state[node] = "done"

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])
  return found


def test_the_package_has_no_import_circle():
  edges, _ = graph()
  assert cycles(edges) == []


def test_the_check_finds_a_circle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_modules_import_the_project_at_the_top_except_where_a_heavy_import_waits():
  _, local = graph()
  assert sorted(local - LOCAL_IMPORTS) == []


def test_training_methods_do_not_import_the_loop_that_loads_them():
  # train.py finds a method by name (`methods.get`, importlib): a method importing train would close a circle that
  # the static graph does not show. Commands stand above the loop and may import it.
  edges, _ = graph()
  assert {m for m, targets in edges.items() if m.startswith("flyp_jax.methods") and "flyp_jax.train" in targets} == set()

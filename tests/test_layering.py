"""The package's imports go one way: low modules never import higher ones (read from the source)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ae_jax")


def _imports() -> dict[str, set[str]]:
  """{module: the ae_jax modules it imports}, modules named relative to ae_jax ('losses.sparsity')."""
  graph = {}
  for folder, _, files in os.walk(PACKAGE):
    for file in files:
      if not file.endswith(".py") or file == "__init__.py":
        continue
      path = os.path.join(folder, file)
      name = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
      deps = set()
      for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ae_jax":
          base = node.module[len("ae_jax."):] if node.module != "ae_jax" else ""
          deps.update(f"{base}.{a.name}".strip(".") if not base else base for a in node.names)
        elif isinstance(node, ast.Import):
          deps.update(a.name[len("ae_jax."):] for a in node.names if a.name.startswith("ae_jax."))
      graph[name] = deps
  return graph


def _third_party(module: str) -> set[str]:
  tree = ast.parse(open(os.path.join(PACKAGE, *module.split(".")) + ".py", encoding="utf-8").read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module.split(".")[0])
  return names


def test_the_import_graph_has_no_cycle():
  graph, done, path = _imports(), set(), []

  def visit(module):
    assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + [module])}"
    if module in done or module not in graph:
      return
    path.append(module)
    for dep in graph[module]:
      visit(dep)
    path.pop()
    done.add(module)

  for module in graph:
    visit(module)


def test_losses_and_models_import_neither_each_other_nor_anything_above():
  graph = _imports()
  for module, deps in graph.items():
    if module.startswith("losses."):
      assert deps <= {"activations"}, (module, deps)
  assert not {d for d in graph["models"] if d.startswith("losses")}, graph["models"]


def test_the_bottom_modules_import_no_jax_and_nothing_above_them():
  graph = _imports()
  for module in ("hparams", "errors", "checks", "workdir", "search_space", "sweep_spec"):
    # hparams imports nothing of ours; sweep_spec reads a user term's weight key from it.
    assert graph[module] <= {"errors", "search_space", "hparams"} - {module}, (module, graph[module])
    assert not _third_party(module) & {"jax", "flax", "optax", "tensorflow"}, module


def test_only_program_assembles_a_run():
  # The step, the initializer and the feeds are wired together in program.py alone.
  for module in _imports():
    text = open(os.path.join(PACKAGE, *module.split(".")) + ".py", encoding="utf-8").read()
    if module not in ("program", "step", "feeds"):
      for call in ("make_train_step(", "make_init(", "DeviceFeed(", "HostFeed("):
        assert call not in text, (module, call)

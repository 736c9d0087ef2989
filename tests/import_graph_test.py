"""The package's import graph: every module's oipgraph imports, including those inside functions, form no cycle."""

import ast
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where each package's files live (oipgraph.export is mapped to export/ by pyproject.toml).
PACKAGE_DIRS = {"oipgraph": "oipgraph", "oipgraph.export": "export"}


def module_files() -> dict[str, str]:
    """Module name -> file path for every module of oipgraph (a package is its __init__.py)."""
    modules = {}
    for package, directory in PACKAGE_DIRS.items():
        top = os.path.join(ROOT, directory)
        for folder, _, names in os.walk(top):
            if "__pycache__" in folder:
                continue
            relative = os.path.relpath(folder, top)
            prefix = package if relative == "." else package + "." + relative.replace(os.sep, ".")
            for name in names:
                if name.endswith(".py"):
                    stem = name[:-3]
                    modules[prefix if stem == "__init__" else f"{prefix}.{stem}"] = os.path.join(folder, name)
    return modules


def imports_of(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The oipgraph modules that `name` imports anywhere in its file (top level or inside functions)."""
    with open(path) as file:
        tree = ast.parse(file.read())
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import module` imports that module; `from module import name`, the module.
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    return {module for module in found if module in modules and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done.
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                return path[path.index(imported) :] + [imported]
            if imported not in state:
                cycle = visit(imported)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


class ImportGraphTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.modules = module_files()
        self.graph = {name: imports_of(name, path, self.modules) for name, path in self.modules.items()}

    def test_no_import_cycle(self):
        self.assertGreater(len(self.modules), 40)
        self.assertIsNone(find_cycle(self.graph), "an import cycle")

    def test_a_module_does_not_import_its_own_package(self):
        # A module that imports its package's __init__ would close a cycle through it.
        for name, imported in self.graph.items():
            package = name.rsplit(".", 1)[0]
            if package in self.modules and not self.modules[name].endswith("__init__.py"):
                self.assertNotIn(package, imported, f"{name} imports its own package {package}")

    def test_the_finder_sees_cycles_and_imports_inside_functions(self):
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))
        path = os.path.join(self.get_temp_dir(), "late.py")
        with open(path, "w") as file:
            file.write(
                "def f():\n"
                "    from oipgraph.strategies import auto\n"  # a submodule: that module
                "    from oipgraph.ascent import OIPAscent\n"  # a name: the package's __init__
                "    import oipgraph.core.errors\n"
            )
        self.assertEqual(
            imports_of("oipgraph.late", path, self.modules),
            {"oipgraph.strategies.auto", "oipgraph.ascent", "oipgraph.core.errors"},
        )


if __name__ == "__main__":
    tf.test.main()

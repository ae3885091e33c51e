"""The package's seams (issue 28): modules talk through public names, and nothing inside the
package imports the package itself (``import cprl_fast`` from a submodule is an import cycle,
lazy or not)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package folder -> where it lives (pyproject.toml's package-dir: the Triton kernels are at the
#: top of the repository, installed as cprl_fast.kernels)
FOLDERS = {"cprl_fast": ROOT / "cprl_fast", "cprl_fast.kernels": ROOT / "kernels",
           "cprl_fast_cli": ROOT / "cprl_fast_cli"}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((package, *parts))] = path
    return out


def _imports():
    """(module, the module it imports from, the names) for every ``from cprl_fast... import``
    and ``import cprl_fast...`` in the package."""
    for name, path in sorted(_modules().items()):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cprl_fast"):
                yield name, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "cprl_fast":
                        yield name, a.name, []


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


#: The modules that import the extension: the package, which loads it once (registering
#: torch.ops.cprl_fast), the backend table, which serves ca_activation with its entry point, and
#: the installation's report, which reads what the build says of itself.
EXTENSION_USERS = ("cprl_fast", "cprl_fast.ops._backend", "cprl_fast.installation")


def test_no_module_imports_another_modules_private_name():
    modules = _modules()
    bad = []
    for importer, source, names in _imports():
        for n in names:
            target = f"{source}.{n}"
            if not n.startswith("_") or n.startswith("__"):
                continue
            # a private submodule of the importer's own package is its own business
            if target in modules and source == _package(importer, modules[importer]):
                continue
            if target == "cprl_fast._C" and importer in EXTENSION_USERS:
                continue
            bad.append(f"{importer} imports {target}")
    assert bad == [], "\n".join(bad)


def test_no_module_imports_the_package_itself():
    bad = [f"{importer} imports {source} {names}" for importer, source, names in _imports()
           if importer != "cprl_fast" and source == "cprl_fast"
           and not all(f"cprl_fast.{n}" in _modules()
                       or (n == "_C" and importer in EXTENSION_USERS) for n in names)]  # fmt: skip
    assert bad == [], "\n".join(bad)

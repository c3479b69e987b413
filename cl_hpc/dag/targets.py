"""Check that a task's target can be imported, without importing it.

The launcher runs on login nodes and must not pay for torch or lightning (DESIGN.md), so the check
finds the module with importlib and reads its top-level names from the source's syntax tree. Only
compiled modules, or modules that build names dynamically, are really imported.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from pathlib import Path


def target_problem(target: str) -> str | None:
    """None if ``target`` names an importable callable; otherwise what is wrong and how to fix it."""
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        return f"target {target!r} is not a dotted path; write it as 'package.module.function'"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:  # a parent package is missing or broken
        return (f"target {target!r}: cannot import module {module_name!r} ({exc}); is the package "
                f"installed, or is the launch directory on PYTHONPATH?")
    if spec is None:
        return f"target {target!r}: no module named {module_name!r}{_module_hint(module_name)}"
    names = _top_level_names(spec.origin)
    if names is None or "__getattr__" in names or "*" in names:
        return _import_and_check(target, module_name, attr)
    if attr not in names:
        close = difflib.get_close_matches(attr, sorted(n for n in names if not n.startswith("_")), n=1)
        hint = f"; did you mean {module_name}.{close[0]}?" if close else ""
        return f"target {target!r}: module {module_name!r} ({spec.origin}) defines no {attr!r}{hint}"
    return None


def _top_level_names(origin: str | None) -> set[str] | None:
    if not origin or not origin.endswith(".py"):
        return None
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _import_and_check(target: str, module_name: str, attr: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the user's to see
        return f"target {target!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
    if not callable(getattr(module, attr, None)):
        return f"target {target!r}: {module_name!r} has no callable {attr!r}"
    return None


def _module_hint(module_name: str) -> str:
    parent, _, leaf = module_name.rpartition(".")
    if not parent:
        return " (is the package installed, or is the launch directory on PYTHONPATH?)"
    try:
        spec = importlib.util.find_spec(parent)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return ""
    siblings = [p.stem for loc in spec.submodule_search_locations for p in Path(loc).glob("*.py")]
    close = difflib.get_close_matches(leaf, [s for s in siblings if s != "__init__"], n=1)
    return f"; did you mean {parent}.{close[0]}?" if close else ""

"""Find classes in Python source without running it: modules by importlib's finders, names by syntax tree.

The launcher checks a workload's classes on the login node, before anything is submitted, and must
not pay for torch or Lightning (DESIGN.md), nor run a user's module (it may import them). So a module
is located without executing even its parent packages (the top-level package's finder, then each
package's search path), and its names are read from the source: ``from x import Y`` re-exports and
base classes are followed through other pure-Python modules. Where the source cannot say (a compiled
module, a name bound under ``if``/``try``, a module ``__getattr__``, too many hops), the answer is
:class:`Unknown`, and callers then stay silent: the runtime check after import covers it.
"""

from __future__ import annotations

import ast
import builtins
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Union

# Not read: heavy to parse and already known (what their classes provide is in cl_hpc/dag/classes.py),
# or the standard library, whose classes a contract check needs only by name.
OUTSIDE = frozenset({"torch", "pytorch_lightning", "lightning", "lightning_fabric"}) | frozenset(
    sys.stdlib_module_names)
_MAX_HOPS = 8  # re-exports followed from one name before giving up (also breaks import cycles)
_MAX_BASES = 12  # depth of a class hierarchy read before giving up


@dataclass(frozen=True)
class Unknown:
    """The source cannot say (compiled, dynamic, too deep): check nothing that depends on it."""

    why: str


@dataclass(frozen=True)
class External:
    """A name in a module that is not read (torch, Lightning, the standard library)."""

    path: str

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


@dataclass(frozen=True)
class ModuleRef:
    name: str


@dataclass(frozen=True)
class NotClass:
    """A name bound to something that is certainly not a class."""

    kind: str  # "a function", "a variable (list)", ...
    where: str  # file:line


@dataclass(frozen=True)
class _Import:
    module: str
    attr: str | None  # None: the module itself (import a.b as c)


_Binding = Union[ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.expr, _Import]


@dataclass(eq=False)
class Module:
    """One parsed module: its last definite top-level binding of each name."""

    name: str
    origin: str
    is_package: bool
    bindings: dict[str, _Binding] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)  # bound under if/try/for/with: unknown without running it
    stars: list[str] = field(default_factory=list)  # modules of `from x import *`

    def where(self, node: ast.AST) -> str:
        return f"{self.origin}:{getattr(node, 'lineno', '?')}"


@dataclass(eq=False)
class ClassRef:
    module: Module
    node: ast.ClassDef

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def where(self) -> str:
        return self.module.where(self.node)


Symbol = Union[ClassRef, ModuleRef, External, NotClass, Unknown, None]  # None: the name is not there
Entry = Union[ClassRef, External, Unknown]  # one class of a method resolution order


class Sources:
    """Parsed modules and class hierarchies, cached for one check (one launch)."""

    def __init__(self) -> None:
        self._specs: dict[str, ModuleSpec | None] = {}
        self._modules: dict[str, Module | Unknown | None] = {}
        self._mros: dict[int, list[Entry]] = {}

    def find(self, name: str) -> ModuleSpec | None:
        """The module's spec without executing any package on the way; None when there is none.
        Raises ImportError or ValueError for a broken parent (what importlib itself would raise)."""
        if name not in self._specs:
            parent, _, _ = name.rpartition(".")
            if not parent:
                spec = importlib.util.find_spec(name)  # a top-level name: finders only, no code runs
            else:
                up = self.find(parent)
                locations = list(up.submodule_search_locations or ()) if up else []
                spec = importlib.machinery.PathFinder.find_spec(name, locations) if locations else None
            self._specs[name] = spec
        return self._specs[name]

    def module(self, name: str) -> Module | Unknown | None:
        if name not in self._modules:
            self._modules[name] = self._load(name)
        return self._modules[name]

    def _load(self, name: str) -> Module | Unknown | None:
        try:
            spec = self.find(name)
        except (ImportError, ValueError) as exc:
            return Unknown(f"cannot locate {name}: {exc}")
        if spec is None:
            return None
        origin = spec.origin or ""
        if not origin.endswith(".py"):
            return Unknown(f"{name} has no Python source ({origin or 'a namespace package'})")
        try:
            tree = ast.parse(Path(origin).read_bytes(), filename=origin)
        except (OSError, SyntaxError, ValueError) as exc:
            return Unknown(f"cannot read {origin}: {exc}")
        module = Module(name, origin, spec.submodule_search_locations is not None)
        _index(module, tree.body)
        return module

    def attr(self, module_name: str, name: str, hops: int = 0) -> Symbol:
        """What ``module_name.name`` is."""
        if module_name.partition(".")[0] in OUTSIDE:
            return External(f"{module_name}.{name}")
        module = self.module(module_name)
        if module is None or isinstance(module, Unknown):
            return module if module else Unknown(f"module {module_name} not found")
        return self.lookup(module, name, hops)

    def lookup(self, module: Module, name: str, hops: int = 0) -> Symbol:
        """What top-level ``name`` of ``module`` is bound to."""
        if hops > _MAX_HOPS:
            return Unknown(f"{name}: more than {_MAX_HOPS} re-exports")
        if name in module.bindings:
            return self._binding(module, module.bindings[name], hops)
        if name in module.dynamic:
            return Unknown(f"{name} is bound conditionally in {module.origin}")
        for star in module.stars:
            found = self.attr(star, name, hops + 1)
            if found is not None:
                return found
        if "__getattr__" in module.bindings or "__getattr__" in module.dynamic:
            return Unknown(f"{module.name} builds names at run time (__getattr__)")
        return self._submodule(module.name, name) if module.is_package else None

    def _submodule(self, package: str, name: str) -> ModuleRef | None:
        try:
            return ModuleRef(f"{package}.{name}") if self.find(f"{package}.{name}") else None
        except (ImportError, ValueError):
            return None

    def _binding(self, module: Module, binding: _Binding, hops: int) -> Symbol:
        if isinstance(binding, ast.ClassDef):
            return ClassRef(module, binding)
        if isinstance(binding, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return NotClass("a function", module.where(binding))
        if isinstance(binding, _Import):
            if binding.attr is None:
                return ModuleRef(binding.module)
            found = self.attr(binding.module, binding.attr, hops + 1)
            if found is None and binding.module.partition(".")[0] not in OUTSIDE:
                return self._submodule(binding.module, binding.attr)
            return found
        return self.expr(module, binding, hops + 1)

    def expr(self, module: Module, node: ast.expr, hops: int = 0) -> Symbol:
        """What an expression of names and attributes (a base class, an alias) refers to."""
        if isinstance(node, ast.Name):
            found = self.lookup(module, node.id, hops)
            if found is None and hasattr(builtins, node.id):
                return External(f"builtins.{node.id}")
            return found if found is not None else Unknown(f"{node.id} is not defined in {module.origin}")
        if isinstance(node, ast.Attribute):
            return self._member(self.expr(module, node.value, hops), node.attr, hops)
        if isinstance(node, ast.Subscript):  # Generic[T], Base[int]
            return self.expr(module, node.value, hops)
        if isinstance(node, (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.JoinedStr)):
            kind = type(node.value).__name__ if isinstance(node, ast.Constant) else type(node).__name__.lower()
            return NotClass(f"a variable (a {'str' if kind == 'joinedstr' else kind})", module.where(node))
        return Unknown(f"{ast.unparse(node)} is computed at run time ({module.where(node)})")

    def _member(self, owner: Symbol, name: str, hops: int) -> Symbol:
        if isinstance(owner, ModuleRef):
            return self.attr(owner.name, name, hops + 1)
        if isinstance(owner, External):
            return External(f"{owner.path}.{name}")
        return Unknown(f"attribute {name} of {owner}")

    def mro(self, cls: ClassRef, depth: int = 0) -> list[Entry]:
        """The class's method resolution order (C3, as Python's), with unread classes as they are."""
        if id(cls.node) not in self._mros:
            if depth > _MAX_BASES:
                return [cls, Unknown(f"more than {_MAX_BASES} levels of base classes")]
            parents: list[list[Entry]] = []
            for base in cls.node.bases:
                found = self.expr(cls.module, base)
                if isinstance(found, ClassRef):
                    parents.append(self.mro(found, depth + 1))
                else:
                    parents.append([found if isinstance(found, (External, Unknown)) else Unknown(f"base {found}")])
            heads = [p[0] for p in parents]
            self._mros[id(cls.node)] = [cls, *_c3([*parents, heads])]
        return self._mros[id(cls.node)]


def _index(module: Module, body: list[ast.stmt]) -> None:
    """Record top-level bindings in order: a later one replaces an earlier one."""
    for stmt in body:
        bound: dict[str, _Binding] = {}
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            bound[stmt.name] = stmt
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                bound[alias.asname or alias.name.partition(".")[0]] = _Import(
                    alias.name if alias.asname else alias.name.partition(".")[0], None)
        elif isinstance(stmt, ast.ImportFrom):
            source = _absolute(module, stmt)
            for alias in stmt.names:
                if alias.name == "*":
                    module.stars.append(source)
                else:
                    bound[alias.asname or alias.name] = _Import(source, alias.name)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            bound[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            bound[stmt.target.id] = stmt.value
        else:
            for name in bound_names(stmt):
                module.bindings.pop(name, None)
                module.dynamic.add(name)
        for name, binding in bound.items():
            module.dynamic.discard(name)
            module.bindings[name] = binding


def bound_names(stmt: ast.stmt) -> set[str]:
    """Every name a statement (and anything nested in it, not inside a def or class) may bind."""
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).partition(".")[0] for a in node.names)
    return names


def _absolute(module: Module, stmt: ast.ImportFrom) -> str:
    if not stmt.level:
        return stmt.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (stmt.level - 1)])
    return f"{base}.{stmt.module}" if stmt.module else base


def _key(entry: Entry) -> object:
    if isinstance(entry, ClassRef):
        return id(entry.node)
    return entry.path if isinstance(entry, External) else id(entry)


def _c3(sequences: list[list[Entry]]) -> list[Entry]:
    """C3 merge; an inconsistent hierarchy (Python would refuse it) ends in Unknown."""
    seqs = [list(s) for s in sequences if s]
    out: list[Entry] = []
    while seqs:
        for seq in seqs:
            head = _key(seq[0])
            if not any(head in map(_key, other[1:]) for other in seqs):
                break
        else:
            return [*out, Unknown("no consistent method resolution order")]
        out.append(seq[0])
        seqs = [s[1:] if _key(s[0]) == head else s for s in seqs]
        seqs = [s for s in seqs if s]
    return out

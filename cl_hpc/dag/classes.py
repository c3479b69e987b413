"""Check a workload's classes (``model:`` and ``datamodule:`` ``_target_`` configs) before anything is submitted.

The runtime check (cl_hpc/learn/workload.py) imports the classes inside the train task; this one runs
on the login node, so it reads their source instead (cl_hpc/dag/pysource.py) and never imports torch,
Lightning or the user's module. For every task whose params hold a ``_target_`` mapping under
``model`` or ``datamodule`` it reports: a class path that does not import or names no class; contract
methods that no class in the hierarchy implements (a body that only raises NotImplementedError is a
stub, not an implementation); init arguments ``__init__`` does not take; and a gate metric the model
does not report. Whatever the source cannot decide (a compiled base, a dynamic class) is left to the
runtime check: this one never raises a false alarm.
"""

from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from cl_hpc.dag.model import TaskSpec
from cl_hpc.dag.pysource import ClassRef, External, Module, ModuleRef, NotClass, Sources, bound_names

_CONTRACT = "cl_hpc.learn.contract"
# role -> (the contract's list of methods, what the key takes, the base class with documented defaults)
_ROLES = {"model": ("MODEL_METHODS", "a LightningModule class", "cl_hpc.learn.base.LoopModule"),
          "datamodule": ("DATA_METHODS", "a LightningDataModule class", "cl_hpc.learn.base.LoopDataModule")}
# What classes outside the read source provide of the contract's methods (by class name); any other one
# is unknown. Lightning's training_step, configure_optimizers and train_dataloader are placeholders that
# warn or raise, so LightningModule provides none of the model's methods.
_PROVIDED = {name: frozenset({"state_dict", "load_state_dict"})
             for name in ("LightningModule", "LightningDataModule", "Module")} | {
    name: frozenset() for name in ("HyperparametersMixin", "object", "Generic", "ABC", "Protocol")}

Found = tuple[str, str]  # (the key under the role with its value, e.g. "hiddn=3"; what is wrong there)


def workload_problems(tasks: Iterable[TaskSpec], where: str) -> list[str]:
    """Every problem of every task's model and data module classes, one line each; a problem shared by
    several tasks (train and evaluate carry the same ``${model}``) is reported once, naming them all."""
    specs, sources = list(tasks), Sources()
    problems: dict[tuple[str, str], list[str]] = {}  # (key=value, problem) -> the tasks it was found in
    models: dict[str, ClassRef] = {}
    for spec in specs:
        for role in _ROLES:
            conf = spec.params.get(role)
            if isinstance(conf, Mapping) and "_target_" in conf:
                cls, found = _check_target(sources, role, conf)
                models.update({spec.name: cls} if cls and role == "model" else {})
                for key, text in found:
                    problems.setdefault((f"{role}.{key}", text), []).append(spec.name)
    for spec in specs:
        for key, text in _gate_problems(sources, spec, models):
            problems.setdefault((key, text), []).append(spec.name)
    return [f"{where}.{names[0]}.params.{key}{_also(names)}: {text}" for (key, text), names in problems.items()]


def _also(names: list[str]) -> str:
    return f" (also in task{'s' if len(names) > 2 else ''} {', '.join(names[1:])})" if len(names) > 1 else ""


def _check_target(sources: Sources, role: str, conf: Mapping[str, Any]) -> tuple[Optional[ClassRef], list[Found]]:
    path = conf.get("_target_")
    _, takes, _ = _ROLES[role]
    if not isinstance(path, str) or not all(path.strip().split(".")) or "." not in path.strip():
        return None, [(f"_target_={_fmt(path)}", f"not a dotted class path; {role} takes {takes}, "
                       f"e.g. _target_: my_pkg.models.MyModule (see {_contract(sources, 'CONTRACT_DOC')})")]
    path = path.strip()
    cls, problem = _resolve(sources, role, path)
    if problem:
        return None, [(f"_target_={path}", problem)]
    if cls is None:  # outside the read source (a compiled module, a dynamic name): the runtime check covers it
        return None, []
    found = [(f"_target_={path}", text) for text in _method_problems(sources, role, cls)]
    return cls, found + _arg_problems(sources, cls, conf)


def _resolve(sources: Sources, role: str, path: str) -> tuple[Optional[ClassRef], Optional[str]]:
    """(the class, None), (None, what is wrong) or (None, None) when the source cannot tell."""
    module_name, _, name = path.rpartition(".")
    valid = f"{role} takes {_ROLES[role][1]} that meets the model contract (see {_contract(sources, 'CONTRACT_DOC')})"
    try:
        spec = sources.find(module_name)
    except (ImportError, ValueError) as exc:  # a parent package is missing or broken
        return None, f"cannot import module {module_name!r} ({exc}); {valid}"
    if spec is None:
        return None, f"no module named {module_name!r}{_module_hint(sources, module_name)}; {valid}"
    symbol = sources.attr(module_name, name)
    if symbol is None:
        module = sources.module(module_name)
        return None, (f"module {module_name!r} ({spec.origin}) defines no {name!r}"
                      f"{_name_hint(module, name) if isinstance(module, Module) else ''}; {valid}")
    if isinstance(symbol, NotClass):
        return None, f"{path!r} is {symbol.kind} ({symbol.where}), not a class; {valid}"
    if isinstance(symbol, ModuleRef):
        return None, f"{path!r} is a module, not a class; {valid}"
    return (symbol, None) if isinstance(symbol, ClassRef) else (None, None)


def _method_problems(sources: Sources, role: str, cls: ClassRef) -> list[str]:
    missing = [m for m in (_lacking(sources, cls, name) for name in _contract(sources, _ROLES[role][0])) if m]
    if not missing:
        return []
    return [f"class {cls.name} ({cls.where}) lacks what the loop needs: {', '.join(missing)}; define "
            f"{'it' if len(missing) == 1 else 'them'} (see {_contract(sources, 'CONTRACT_DOC')}; "
            f"{_ROLES[role][2]} documents each)"]


def _lacking(sources: Sources, cls: ClassRef, name: str) -> Optional[str]:
    """How ``cls`` lacks the method: ``name``, or ``name (Base's only raises NotImplementedError)``;
    None when the first definition in its MRO implements it, or an unread base may."""
    for entry in sources.mro(cls):
        if isinstance(entry, ClassRef):
            member = class_member(entry.node, name)
            if member is not None:
                why = _stub(member)
                return f"{name} ({entry.name}'s {why})" if why else None
        elif not isinstance(entry, External) or entry.name not in _PROVIDED or name in _PROVIDED[entry.name]:
            return None  # provided by Lightning/torch, or by a base the source cannot show
    return name


def class_member(node: ast.ClassDef, name: str) -> Optional[ast.stmt]:
    """The last statement of the class body that binds ``name`` (a def, an assignment, or a block)."""
    found: Optional[ast.stmt] = None
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = stmt if stmt.name == name else found
        elif name in bound_names(stmt):
            found = stmt
    return found


def _stub(member: ast.stmt) -> Optional[str]:
    """Why a method is a stub, not an implementation: its body only raises NotImplementedError (after a
    docstring), or it is abstract; None for anything else."""
    if not isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    if any(_leaf(d) == "abstractmethod" for d in member.decorator_list):
        return "is abstract"
    body = member.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
            body[0].value.value, str):
        body = body[1:]
    if len(body) == 1 and isinstance(body[0], ast.Raise) and _leaf(body[0].exc) == "NotImplementedError":
        return "only raises NotImplementedError"
    return None


def _leaf(node: Optional[ast.expr]) -> Optional[str]:
    if isinstance(node, ast.Call):
        return _leaf(node.func)
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _arg_problems(sources: Sources, cls: ClassRef, conf: Mapping[str, Any]) -> list[Found]:
    """Config keys the first ``__init__`` in the class's MRO does not take (missing ones are not
    reported: the data module supplies some at run time)."""
    accepted = _init_names(sources, cls)
    if accepted is None:
        return []
    found = []
    for key, value in conf.items():
        if str(key).startswith("_") or str(key) in accepted:
            continue
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hint = f"did you mean {close[0]}?" if close else "remove it, or add it to __init__'s parameters"
        found.append((f"{key}={_fmt(value)}", f"{cls.name}.__init__ takes ({', '.join(accepted)}); {hint}"))
    return found


def _init_names(sources: Sources, cls: ClassRef) -> Optional[list[str]]:
    """The keyword arguments ``cls(...)`` takes; None when it takes **kwargs or the source cannot tell
    (an unread base, a decorator or metaclass that may write __init__)."""
    for entry in sources.mro(cls):
        if not isinstance(entry, ClassRef) or entry.node.decorator_list or entry.node.keywords:
            return None
        member = class_member(entry.node, "__init__")
        if member is None:
            continue
        if not isinstance(member, ast.FunctionDef) or member.decorator_list or member.args.kwarg:
            return None
        args = member.args
        return [a.arg for a in args.args[0 if args.posonlyargs else 1:]] + [a.arg for a in args.kwonlyargs]
    return None


def _gate_problems(sources: Sources, spec: TaskSpec, models: Mapping[str, ClassRef]) -> list[Found]:
    """A gate metric (params.gate.metric) that the model's literal ``metrics`` attribute does not name;
    the task's own model, or else every model in the pipeline."""
    gate = spec.params.get("gate")
    metric = gate.get("metric") if isinstance(gate, Mapping) else None
    if not isinstance(metric, str):
        return []
    owners = [models[spec.name]] if spec.name in models else list({id(c.node): c for c in models.values()}.values())
    found = []
    for cls in owners:
        names = metric_names(sources, cls)
        if names and metric not in names:
            close = difflib.get_close_matches(metric, names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            found.append((f"gate.metric={metric}", f"a metric the model does not report: {cls.name} reports "
                          f"{', '.join(names)} (its `metrics` class attribute, {cls.where}); {hint}(null: its "
                          f"primary metric, {names[0]})"))
    return found


def metric_names(sources: Sources, cls: ClassRef) -> Optional[list[str]]:
    """The keys of the class's ``metrics`` attribute when it is a literal dict with string keys; None
    (not checked) otherwise, or when it is empty (an instance may set it in __init__)."""
    for entry in sources.mro(cls):
        if not isinstance(entry, ClassRef):
            return None
        member = class_member(entry.node, "metrics")
        if member is None:
            continue
        value = member.value if isinstance(member, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                               for k in value.keys):
            return [str(k.value) for k in value.keys if isinstance(k, ast.Constant)] or None
        if isinstance(value, ast.Call) and _leaf(value.func) == "dict" and not value.args:
            names = [kw.arg for kw in value.keywords]
            return None if None in names else [n for n in names if n] or None
        return None
    return None


def _contract(sources: Sources, name: str) -> Any:
    """A constant of cl_hpc/learn/contract.py, read from its source: importing it loads numpy, which
    the launcher does not otherwise need."""
    module = sources.module(_CONTRACT)
    value = module.bindings.get(name) if isinstance(module, Module) else None
    if isinstance(value, ast.expr):
        try:
            return ast.literal_eval(value)
        except ValueError:
            pass
    import importlib

    return getattr(importlib.import_module(_CONTRACT), name)


def _name_hint(module: Module, name: str) -> str:
    public = sorted(n for n in module.bindings if not n.startswith("_"))
    close = difflib.get_close_matches(name, public, n=1)
    if close:
        return f" (did you mean {module.name}.{close[0]}?)"
    classes = [n for n in public if isinstance(module.bindings[n], ast.ClassDef)]
    return f" (classes defined there: {', '.join(classes)})" if classes else ""


def _module_hint(sources: Sources, module_name: str) -> str:
    parent, _, leaf = module_name.rpartition(".")
    try:
        spec = sources.find(parent) if parent else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return " (is the package installed, or is the launch directory on PYTHONPATH?)"
    siblings = {p.stem for loc in spec.submodule_search_locations for p in Path(loc).iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    close = difflib.get_close_matches(leaf, sorted(siblings), n=1)
    return f" (did you mean {parent}.{close[0]}?)" if close else ""


def _fmt(value: Any) -> str:
    """A config value as it is written on the command line (3, true, x, [1,2])."""
    return value if isinstance(value, str) else json.dumps(value, default=str)

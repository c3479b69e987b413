"""Compose the config the way every entry point does, and explain Hydra's errors to a person.

Hydra reports a value of the wrong type as "Error merging override cluster.cpus=two" and keeps
the useful part (the key, the expected type, the schema class) in the exception's cause. The
launcher, the watch and the backtest all compose through :func:`compose_config`, so each says
what was wrong, what is valid and where to look in the same words.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from cl_hpc.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: Sequence[str], where: str) -> DictConfig:
    """The root config composed from ``overrides`` (Hydra's syntax); a ConfigError explains a bad one.

    ``where``: the entry point's own line on where its keys are documented, appended to errors.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cl_hpc.config.schema import register

    register()  # the typed schemas that the yaml files name in their defaults lists
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"{explain(exc, overrides)}\n{where}") from exc


def explain(exc: BaseException, overrides: Sequence[str] = ()) -> str:
    """What was wrong, in one or two lines: the override, the key, the type it takes, and its doc."""
    cause = _schema_cause(exc)
    if cause is None:
        return str(exc)
    full_key = str(cause.full_key)
    given = _override_for(full_key, overrides)
    owner = getattr(cause, "object_type", None)
    key = str(cause.key)
    if type(cause).__name__ == "ConfigAttributeError" or "not in" in str(cause.msg):
        return _unknown_key(full_key, key, owner, given, getattr(cause, "parent_node", None))
    first = str(cause.msg).splitlines()[0]
    head = f"{given or full_key}: {first}"
    field_doc = describe_field(owner, key)
    return head + (f"\n  {full_key} takes {field_doc}" if field_doc else "")


def describe_field(owner: Any, key: str) -> Optional[str]:
    """E.g. ``"an integer (CPU cores per process); see Resources.cpus in cl_hpc/config/resources.py"``."""
    if not (inspect.isclass(owner) and dataclasses.is_dataclass(owner)):
        return None
    try:
        hint = typing.get_type_hints(owner).get(key)
    except Exception:  # a hint that does not resolve here: say what is known without it
        hint = None
    where = f"see {owner.__name__}.{key} in {_relative(inspect.getsourcefile(owner))}"
    comment = _field_comment(owner, key)
    kind = _type_words(hint) if hint is not None else "a value"
    return f"{kind} ({comment}); {where}" if comment else f"{kind}; {where}"


def _schema_cause(exc: BaseException) -> Any:
    """The innermost OmegaConf error that names a key, or None."""
    found: Any = None
    seen: Optional[BaseException] = exc
    while seen is not None:
        if getattr(seen, "full_key", None):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _override_for(full_key: str, overrides: Sequence[str]) -> Optional[str]:
    for text in overrides:
        if text.lstrip("+~").split("=", 1)[0] == full_key:
            return text
    return None


def _unknown_key(full_key: str, key: str, owner: Any, given: Optional[str], parent_node: Any) -> str:
    parent = full_key.rpartition(".")[0]
    if inspect.isclass(owner) and dataclasses.is_dataclass(owner):
        valid, name = [f.name for f in dataclasses.fields(owner)], owner.__name__
    else:  # a mapping such as pipeline.tasks: its keys are the valid ones
        valid = [str(k) for k in (parent_node.keys() if hasattr(parent_node, "keys") else ())]
        name = parent or "the root"
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {'.'.join(filter(None, (parent, close[0])))}?" if close else ""
    listing = f"\n  {parent or 'the root'} holds: {', '.join(valid)}" if valid else ""
    return f"{given or full_key}: {name} has no key {key!r}{hint}{listing}"


def _type_words(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return f"{_type_words(args[0])} or null"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in words:
        return words[hint]
    origin = typing.get_origin(hint)
    if origin in (list, typing.List):
        return "a list, e.g. [a,b]"
    if origin in (dict, typing.Dict):
        return "a mapping, e.g. {k: v}"
    return getattr(hint, "__name__", str(hint))


def _field_comment(owner: type, key: str) -> Optional[str]:
    """The ``# comment`` on the field's line in the dataclass source: the project documents every
    field there (one comment per field), so the error can quote it."""
    try:
        source = inspect.getsource(owner)
    except (OSError, TypeError):
        return None
    match = re.search(rf"^\s+{re.escape(key)}\s*:[^#\n]*#\s*(.+)$", source, re.MULTILINE)
    return match.group(1).strip() if match else None


def _relative(path: Optional[str]) -> str:
    if not path:
        return "cl_hpc/config/"
    root = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path

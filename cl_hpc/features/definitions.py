"""Feature views as config: ``conf/features/*.yaml``, one view per file, loaded into a checked catalog.

A view names its entity key(s), its source (a landing zone), the importable transformation that turns
source rows into feature rows, and each feature's dtype and description, plus an owner, tags and a TTL.

Its identity is the pair (``version``, ``digest``): ``version`` is the number its owner declares, and
``digest`` a sha256 over every setting that changes the values (entities, source, transform, params,
lookback, features and their dtypes) plus the transformation function's own source code. The
documentary fields (description, owner, tags) stay out of it, so fixing a typo in a description never
forces a rematerialization. A definition whose digest changed while its version stayed must be refused
(:func:`check_bump` against the digest recorded when that version was first materialized): values computed
by the old code would otherwise be served as if the new code had made them.

Light: no pandas import at module load (the login node lists the catalog).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from cl_hpc.errors import ConfigError

DTYPES = ("float64", "int64", "bool")
# Where the bundled views live; a user's own catalog is any folder of such files (feature_store.catalog).
BUNDLED = Path(__file__).resolve().parent.parent / "conf" / "features"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = {"name", "version", "description", "owner", "tags", "entities", "source", "transform", "params",
         "lookback", "features", "ttl"}
_SOURCE_KEYS = {"landing_dir", "timestamp_col", "created_col"}
_FEATURE_KEYS = {"dtype", "description", "default"}
# Fields that do not change a value: left out of the digest.
_DOCUMENTARY = ("description", "owner", "tags")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # float64 | int64 | bool
    description: str
    default: Any = None  # the value a model gets when the entity has none (None: a missing value is an error)


@dataclass(frozen=True)
class Source:
    landing_dir: str  # the landing zone the view is computed from (relative: to the cwd)
    timestamp_col: str = "ts"  # the rows' event time
    # a column holding when each row arrived (late data, backfills); None: rows arrive at their event time
    created_col: Optional[str] = None


@dataclass(frozen=True)
class FeatureView:
    """One documented view of the catalog."""

    name: str
    version: int
    entities: tuple[str, ...]
    source: Source
    transform: str  # "package.module.function": (frame: pandas.DataFrame, **params) -> pandas.DataFrame
    features: tuple[Feature, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    lookback: str = "0s"  # history before a partition that its rows' features need (the longest window)
    ttl: Optional[str] = None  # a value older than this is missing, not stale; None: it never expires
    description: str = ""
    owner: str = ""
    tags: tuple[str, ...] = ()
    path: str = ""  # the file it was defined in

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def function(self) -> Callable[..., Any]:
        return import_transform(self.transform, self.path)

    def definition(self) -> dict[str, Any]:
        """Every setting that changes the values, as plain JSON-able data."""
        return {"name": self.name, "version": self.version, "entities": list(self.entities),
                "source": vars(self.source), "transform": self.transform, "params": dict(self.params),
                "lookback": self.lookback, "ttl": self.ttl,
                "features": [{"name": f.name, "dtype": f.dtype, "default": f.default} for f in self.features]}

    @property
    def digest(self) -> str:
        """sha256 of the definition plus the transformation's source code."""
        text = json.dumps(self.definition(), sort_keys=True, default=str)
        code = inspect.getsource(self.function())
        return hashlib.sha256(f"{text}\n{code}".encode()).hexdigest()

    @property
    def ident(self) -> str:
        """The version as the store names it: ``v<version>-<digest[:12]>``."""
        return f"v{self.version}-{self.digest[:12]}"


@dataclass(frozen=True)
class Catalog:
    views: Mapping[str, FeatureView]
    root: str

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise ConfigError(f"no feature view {name!r} in the catalog {self.root}; views: {sorted(self.views)} "
                              f"(python -m cl_hpc.features list)")
        return self.views[name]

    def owner_of(self, feature: str) -> FeatureView:
        """The view that defines ``feature`` (a bare name or ``view:feature``)."""
        view_name, _, name = feature.rpartition(":")
        views = [self.view(view_name)] if view_name else list(self.views.values())
        for view in views:
            if name in view.feature_names:
                return view
        known = sorted(f"{v.name}:{n}" for v in views for n in v.feature_names)
        raise ConfigError(f"unknown feature {feature!r}; the catalog {self.root} defines {known}")


@dataclass(frozen=True)
class FeatureBinding:
    """What a model version trained on catalog features records (its registry config's ``features``), so a
    server fetches the same features, of the same view versions, from the same store: the training set
    task writes it, promote records it, the server reads it (cl_hpc/serve/features.py)."""

    features: tuple[str, ...]  # in the model's input order
    views: Mapping[str, str]  # view name -> the ident it was trained on (v<version>-<digest12>)
    entities: tuple[tuple[str, str], ...]  # (key column, numpy dtype) as the training rows held them
    store: str  # the feature store's folder, absolute
    catalog: Optional[str] = None  # the catalog folder; None = the bundled conf/features

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "views": dict(self.views),
                "entities": [list(e) for e in self.entities], "store": self.store, "catalog": self.catalog}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureBinding":
        try:
            return cls(tuple(data["features"]), dict(data["views"]),
                       tuple((str(k), str(d)) for k, d in data["entities"]), str(data["store"]), data.get("catalog"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"a version's recorded features {dict(data)} are malformed ({exc!r}): it needs "
                              f"features, views, entities and store") from exc

    def changed_views(self, catalog: Catalog) -> list[str]:
        """The views whose catalog definition is no longer the one trained on, one line each."""
        lines = []
        for name, ident in sorted(self.views.items()):
            now = catalog.views.get(name)
            if now is None:
                lines.append(f"view {name!r} ({ident}) is gone from the catalog {catalog.root}")
            elif now.ident != ident:
                lines.append(f"view {name!r} was {ident} at training, the catalog {catalog.root} defines {now.ident}")
        return lines


def load_catalog(root: Path | str | None = None) -> Catalog:
    """Every ``*.yaml`` view in ``root`` (default: the bundled catalog), checked as a whole."""
    folder = Path(root).expanduser().resolve() if root else BUNDLED
    if not folder.is_dir():
        raise ConfigError(f"feature catalog {folder} does not exist (feature_store.catalog names a folder of "
                          f"view files, like {BUNDLED})")
    views = [load_view(path) for path in sorted(folder.glob("*.yaml"))]
    _check_unique(views, folder)
    return Catalog({v.name: v for v in views}, str(folder))


def load_view(path: Path) -> FeatureView:
    """One view file, every field checked; errors name the file and the key."""
    from omegaconf import OmegaConf  # light, and already what the configs are read with

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a feature view is a mapping of {sorted(_KEYS)}")
    raw = {str(k): v for k, v in loaded.items()}
    _only(raw, _KEYS, str(path))
    view = FeatureView(
        name=_name(raw.get("name", path.stem), f"{path}: name"), version=_version(raw.get("version"), path),
        entities=_entities(raw.get("entities"), path), source=_source(raw.get("source"), path),
        transform=_required(raw, "transform", path), features=_features(raw.get("features"), path),
        params=dict(raw.get("params") or {}), lookback=_duration(raw.get("lookback", "0s"), f"{path}: lookback"),
        ttl=None if raw.get("ttl") is None else _duration(raw["ttl"], f"{path}: ttl"),
        description=str(raw.get("description") or ""), owner=str(raw.get("owner") or ""),
        tags=tuple(str(t) for t in raw.get("tags") or ()), path=str(path))
    clash = set(view.entities) & set(view.feature_names)
    if clash:
        raise ConfigError(f"{path}: {sorted(clash)} are both entity keys and features; rename the features")
    view.function()  # an unimportable transformation fails here, not on a compute node
    return view


def import_transform(target: str, where: str) -> Callable[..., Any]:
    module_name, _, attr = target.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attr) if module_name else None
    except ImportError as exc:
        raise ConfigError(f"{where}: transform {target!r} cannot be imported ({exc}); give "
                          f"'package.module.function' importable from the cwd or PYTHONPATH") from exc
    except AttributeError:
        function = None
    if not callable(function):
        raise ConfigError(f"{where}: transform {target!r} is not a function of an importable module; give "
                          f"'package.module.function', e.g. cl_hpc.features.transforms.windowed_aggregates")
    return function


def _check_unique(views: list[FeatureView], folder: Path) -> None:
    seen_views: dict[str, str] = {}
    seen_features: dict[str, str] = {}
    for view in views:
        if view.name in seen_views:
            raise ConfigError(f"feature view {view.name!r} is defined twice: {seen_views[view.name]} and {view.path}")
        seen_views[view.name] = view.path
        for name in view.feature_names:
            if name in seen_features:
                raise ConfigError(f"feature {name!r} is defined by two views in {folder}: {seen_features[name]} and "
                                  f"{view.name} ({view.path}); feature names are unique across the catalog, so a "
                                  f"training set or a server never has to guess: rename one")
            seen_features[name] = view.name


def _only(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(allowed)}")


def _required(raw: Mapping[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: {key} is required (a non-empty string)")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{where}={value!r} must be an identifier (letters, digits, _; not starting with a digit)")
    return value


def _version(value: Any, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{path}: version={value!r} must be an integer >= 1; bump it whenever the values change")
    return value


def _entities(value: Any, path: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: entities must list the entity key column(s), e.g. [user_id]")
    return tuple(_name(v, f"{path}: entities") for v in value)


def _source(value: Any, path: Path) -> Source:
    if not isinstance(value, dict) or not value.get("landing_dir"):
        raise ConfigError(f"{path}: source needs landing_dir (a landing zone of Parquet partitions), e.g. "
                          f"source: {{landing_dir: data/landing/users, timestamp_col: ts}}")
    _only(value, _SOURCE_KEYS, f"{path}: source")
    return Source(str(value["landing_dir"]), str(value.get("timestamp_col", "ts")), value.get("created_col"))


def _features(value: Any, path: Path) -> tuple[Feature, ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: features maps each feature name to {{dtype, description, default}}")
    out = []
    for name, spec in value.items():
        where = f"{path}: features.{name}"
        spec = {"dtype": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping of {sorted(_FEATURE_KEYS)}")
        _only(spec, _FEATURE_KEYS, where)
        if spec.get("dtype") not in DTYPES:
            raise ConfigError(f"{where}.dtype={spec.get('dtype')!r}; valid: {list(DTYPES)}")
        out.append(Feature(_name(name, where), spec["dtype"], str(spec.get("description") or ""), spec.get("default")))
    return tuple(out)


def _duration(value: Any, where: str) -> str:
    import pandas as pd  # only when a view is loaded, never at import

    try:
        step = pd.Timedelta(str(value))
    except ValueError as exc:
        raise ConfigError(f"{where}={value!r} is not a duration; use e.g. '1h', '24h', '7D'") from exc
    if step < pd.Timedelta(0):
        raise ConfigError(f"{where}={value!r} must not be negative")
    return str(value)


def check_bump(view: FeatureView, recorded_digest: Optional[str]) -> None:
    """Refuse a view whose values changed (its digest) under a version already recorded with other values."""
    if recorded_digest is not None and recorded_digest != view.digest:
        raise ConfigError(f"feature view {view.name!r} ({view.path}) changed since version {view.version} was "
                          f"materialized (digest {recorded_digest[:12]} -> {view.digest[:12]}: its settings or its "
                          f"transform's code), but its version is still {view.version}; set version: "
                          f"{view.version + 1} so the old values are never served as the new code's")

"""Versions trained on catalog features: a request names entities, the server fetches their features.

A version built from a feature-store training set (pipeline=features_train) records its
:class:`~cl_hpc.features.definitions.FeatureBinding`: the feature names in the model's input order, the
view versions it trained on, the entity keys and the store. Serving it, a request carries only the
entity keys (``{"inputs": [{"user_id": 17}]}``); the server reads the features from the online store
through :func:`cl_hpc.features.retrieval.online_values` and :func:`~cl_hpc.features.retrieval.fill_values`,
beside the code the training set was built with, so training and serving never disagree on which view, TTL or
default a feature has.

The binding is checked when the version loads, off the request path: a catalog whose view is no longer
the version trained on (another digest: its code or definition changed) or a store that was never
materialized make the version unservable, with the reason in readiness; a request never finds out.

The prediction log gets the entity keys, the feature values served and each view's event time of those
values (``<view>.event_ts``, NaT when the entity had none), so ``python -m cl_hpc.features check`` can
replay them against an offline recomputation and tell a value served from an older materialization
(lag) from one computed differently (skew).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from cl_hpc.features.definitions import Catalog, FeatureBinding, load_catalog
from cl_hpc.features.materialize import online_path
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.retrieval import by_view, defaults, fill_values, online_values
from cl_hpc.learn.contract import ContractError, Signature, Spec
from cl_hpc.serve.inputs import RequestError, input_columns

_SHOWN_ROWS = 3  # rows named in a missing-feature error


@dataclass(frozen=True)
class FeaturePaths:
    """The server's overrides of where a version's features live (serve.feature_store, serve.feature_catalog);
    None: where the version was trained from."""

    store: Optional[str] = None
    catalog: Optional[str] = None


@dataclass(frozen=True)
class ServedFeatures:
    """One loaded version's features: the catalog, the online store, and the request's key columns."""

    binding: FeatureBinding
    catalog: Catalog
    store: OnlineStore
    keys: Signature  # what a request carries: the entity keys (the model's outputs unchanged)
    dtypes: Mapping[str, str]  # feature -> its declared dtype, the training set's, in the model's order
    defaults: Mapping[str, Any]  # feature -> its declared default (None: none)

    def lookup(self, rows: pd.DataFrame, at: Any = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """(the model's input rows, the columns to log: keys, features and each view's event time) for the
        request's entity rows, as of ``at`` (default: now); a 404 naming the rows and features when an entity
        has no value for a feature that has no default (never materialized, or older than the view's TTL)."""
        keys = {k: rows[k].to_numpy() for k in rows.columns}
        found = online_values(self.catalog, self.store, keys, self.binding.features, at=at, events=True)
        names = list(self.dtypes)
        for name in names:
            found[name] = fill_values(found[name], self.defaults[name])
        missing = {n: [v is None for v in found[n]] for n in names}
        if any(any(m) for m in missing.values()):
            raise self._missing(rows, pd.DataFrame(missing))
        columns = {n: np.asarray(found[n], dtype=self.dtypes[n]) for n in names}
        model = pd.DataFrame(columns, index=rows.index, copy=False)
        return model, {**keys, **columns, **{k: v for k, v in found.items() if k not in columns}}

    def _missing(self, rows: pd.DataFrame, missing: pd.DataFrame) -> RequestError:
        bad = np.flatnonzero(missing.to_numpy().any(axis=1))
        shown = "; ".join(
            f"inputs[{i}] ({', '.join(f'{k}={_plain(rows[k].iloc[i])!r}' for k in rows.columns)}): "
            f"{', '.join(missing.columns[missing.iloc[i].to_numpy()])}" for i in bad[:_SHOWN_ROWS])
        more = f" (and {len(bad) - _SHOWN_ROWS} more rows)" if len(bad) > _SHOWN_ROWS else ""
        views = by_view(self.catalog, list(missing.columns)).values()
        ttls = ", ".join(f"{v.name}: {v.ttl or 'never'}" for v, _ in views)
        return RequestError(f"no feature values for {shown}{more}: the entity was never materialized, or its values "
                            f"are older than the view's TTL ({ttls}), and these features declare no default; "
                            f"python -m cl_hpc.features get shows what the online store holds", "inputs", 404)


def served_features(recorded: Optional[Mapping[str, Any]], signature: Signature, label: str,
                    paths: FeaturePaths = FeaturePaths(),
                    catalog: Optional[Catalog] = None) -> Optional[ServedFeatures]:
    """The version's features (None: it takes its inputs in the request); a ContractError when it cannot be
    served as it was trained: its views changed, or its store has no online values. ``catalog``: one already
    loaded (default: the one the paths or the binding name)."""
    if not recorded:
        return None
    binding = FeatureBinding.from_dict(recorded)
    inputs = [s.name for s in signature.inputs]
    if list(binding.features) != inputs:
        raise ContractError(f"{label} records catalog features {list(binding.features)} but its model takes "
                            f"{inputs}: the registry record and the checkpoint disagree; retrain")
    catalog = catalog or load_catalog(paths.catalog or binding.catalog)
    changed = binding.changed_views(catalog)
    if changed:
        raise ContractError(f"{label} was trained on other feature code than the catalog's now ({'; '.join(changed)}): "
                            f"serving it would feed it features computed differently; retrain it on the catalog "
                            f"(pipeline=features_train), or serve with the catalog it was trained with "
                            f"(serve.feature_catalog)")
    root = Path(paths.store or binding.store).expanduser().resolve()
    if not online_path(root).is_file():
        raise ContractError(f"{label} reads its features from {online_path(root)}, which does not exist: materialize "
                            f"the views (python -m cl_hpc.features materialize --store {root}), or point "
                            f"serve.feature_store at the store it was trained from ({binding.store})")
    by_name = {f.name: f.dtype for v in catalog.views.values() for f in v.features}
    keys = Signature(tuple(Spec(k, d) for k, d in binding.entities), signature.outputs)
    dtypes = {n.rpartition(":")[2]: by_name[n.rpartition(":")[2]] for n in binding.features}
    return ServedFeatures(binding, catalog, OnlineStore(online_path(root)), keys, dtypes,
                          defaults(catalog, binding.features))


def model_inputs(features: Optional[ServedFeatures], rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(the model's rows, the logged columns) of a request: its own rows, or its entities' features."""
    return (rows, input_columns(rows)) if features is None else features.lookup(rows)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

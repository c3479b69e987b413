"""Terminal views of the registry (rich): version list, one version, a diff, the alias log."""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cl_hpc.registry.diff import flatten
from cl_hpc.registry.records import AliasEvent, ModelVersion
from cl_hpc.registry.versions import Version

# Shown first in the list's metrics summary when a version has them.
_HEADLINE = ("accuracy", "roc_auc", "macro_f1", "log_loss")
_SUMMARY_METRICS = 3


def versions_table(name: str, records: list[ModelVersion], aliases: Mapping[str, Version]) -> Table:
    table = Table(title=f"model {name}", title_justify="left")
    for column in ("version", "aliases", "strategy", "parent", "metrics", "tags", "created", "trust"):
        table.add_column(column)
    for record in records:
        pointing = [alias for alias, version in aliases.items() if version == record.version]
        trust = Text("quarantined", style="bold red") if record.quarantined else Text("ok", style="green")
        table.add_row(str(record.version), Text(", ".join(pointing), style="bold cyan"), record.strategy,
                      str(record.parent or "-"), metrics_summary(record.metrics), ", ".join(record.tags),
                      when(record.created), trust)
    return table


def metrics_summary(metrics: Mapping[str, Any]) -> str:
    numeric = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys = [k for k in _HEADLINE if k in numeric] + sorted(k for k in numeric if k not in _HEADLINE)
    return " ".join(f"{k}={fmt(numeric[k])}" for k in keys[:_SUMMARY_METRICS])


def version_table(record: ModelVersion, aliases: Mapping[str, Version], events: list[AliasEvent]) -> Table:
    table = Table(title=f"model {record.label}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    pointing = [alias for alias, version in aliases.items() if version == record.version]
    rows: list[tuple[str, str]] = [
        ("aliases", ", ".join(pointing) or "-"),
        ("model", record.model_class or "cl_hpc.learn.tabular.TabularClassifier (first checkpoint format)"),
        ("init args", ", ".join(f"{k}={v!r}" for k, v in record.init_args.items()) or "-"),
        ("data module", record.datamodule_class or "-"), ("signature", _signature(record.signature)),
        ("strategy", record.strategy),
        ("parent", str(record.parent or "-")), ("created", when(record.created)),
        ("trust", f"QUARANTINED: {record.quarantined}" if record.quarantined else "ok (promotable)"),
        ("checkpoint", record.checkpoint_path), ("sha256", record.checkpoint_sha256),
        ("run", f"{record.run_id or '-'} / {record.task_key or '-'}"),
        ("code", f"{record.git_commit or 'not a git checkout'}{' (dirty)' if record.git_dirty else ''}"),
        ("python", record.python or "-"), ("window digest", record.window_digest or "-"),
        ("window", ", ".join(record.window_partitions) or "-"), ("tags", ", ".join(record.tags) or "-"),
    ]
    rows += [(f"metric {k}", fmt(v)) for k, v in flatten(record.metrics).items()]
    rows += [(f"config {k}", fmt(v)) for k, v in flatten(record.config).items()]
    rows += [(f"package {k}", v) for k, v in record.packages.items()]
    rows += [(f"event #{e.id}", event_line(e)) for e in events if record.version in (e.from_version, e.to_version)]
    for field, value in rows:
        table.add_row(field, value)
    return table


def _signature(recorded: Mapping[str, Any]) -> str:
    if not recorded:
        return "-"
    from cl_hpc.learn.contract import Signature

    return Signature.from_dict(recorded).describe()


def events_table(name: str, events: list[AliasEvent]) -> Table:
    table = Table(title=f"alias log of model {name}", title_justify="left")
    for column in ("#", "when", "alias", "action", "from", "to", "reason", "by"):
        table.add_column(column)
    for e in events:
        table.add_row(str(e.id), when(e.at), e.alias, e.action, str(e.from_version or "(new)"), str(e.to_version),
                      e.reason, e.run_id or e.actor or "-")
    return table


def event_line(e: AliasEvent) -> str:
    return (f"{when(e.at)} {e.alias}: {e.action} {e.from_version or '(new)'} -> {e.to_version} "
            f"by {e.run_id or e.actor or '-'}: {e.reason}")


def print_diff(console: Console, diff: Mapping[str, Any]) -> None:
    console.print(f"model {diff['name']}: {diff['a']} -> {diff['b']}", style="bold", highlight=False)
    for section in ("lineage", "model", "config", "code", "deps"):
        console.print(f"{section}:" + ("" if diff[section] else " same"), style="bold", highlight=False)
        for c in diff[section]:
            console.print(f"  {c['key']}: {_side(c, 'old')} -> {_side(c, 'new')}", highlight=False)
    console.print("metrics:" + ("" if diff["metrics"] else " none"), style="bold", highlight=False)
    for m in diff["metrics"]:
        delta = f"  ({m['delta']:+.4g})" if m["delta"] is not None else ""
        console.print(f"  {m['key']}: {fmt(m['old'])} -> {fmt(m['new'])}{delta}", highlight=False)
    _print_window(console, diff["window"])


def _print_window(console: Console, window: Mapping[str, Any]) -> None:
    same = "same data" if window["same_data"] else f"{window['digest']['old']} -> {window['digest']['new']}"
    console.print(f"window: {same}; {window['partitions_kept']} partitions kept", style="bold", highlight=False)
    for key in ("partitions_added", "partitions_removed"):
        if window[key]:
            console.print(f"  {key.split('_')[1]}: {', '.join(window[key])}", highlight=False)


def _side(change: Mapping[str, Any], side: str) -> str:
    absent = (change["change"] == "added" and side == "old") or (change["change"] == "removed" and side == "new")
    return "(absent)" if absent else fmt(change[side])


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))

"""A registry model's HTML page: its X.Y lineage as a tree, the alias log as a timeline, its metrics
across versions, the watch's triggers and the backtest's freshness curve; one self-contained file.

Built read-only from the registry's own API (versions, aliases, events), the watch's JSON-lines log
(the records :class:`cl_hpc.watch.check.Journal` appends: ``state``, one ``trigger`` per verdict,
then ``idle``, ``launch``/``launched``, ``skipped`` or ``stale-lock``; ``experiment`` for the
controller's looks; all of one check share its ``check`` id) and the report
``python -m cl_hpc.backtest --out OUT`` writes (OUT/backtest.json). The backtest replays a config,
not a registered model, so nothing ties it to one: the caller names it (``--backtest``), and the page
says when it replayed another model class than the versions'. Anything absent (no alias ever set, no
watch log, no backtest) is said on the page; an unknown model or a backtest file that cannot be read
is an error naming what is valid.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from cl_hpc.errors import DataError
from cl_hpc.registry.diff import flatten
from cl_hpc.registry.records import AliasEvent, ModelVersion
from cl_hpc.registry.store import ModelRegistry
from cl_hpc.registry.versions import STRATEGIES, RegistryError
from cl_hpc.store.db import DB_NAME

WATCH_LOG = "watch.log.jsonl"  # the watch's default log under the run root (cl_hpc/watch/check.py)
BACKTEST_JSON = "backtest.json"  # cl_hpc.backtest.report.RESULTS: what --backtest names, or its folder
LISTED_CHECKS = 200  # checks listed in the triggers table (newest first); the chart shows every one
# Counts the promote task records beside the scores: neither a model metric nor drawn as one.
_BOOKKEEPING = ("train_rows", "train_labels", "eval_rows", "rows")


class Kind(enum.Enum):
    """How a version was made: X.0 retrains from scratch, X.(Y+1) fine-tunes X.Y."""

    STATELESS = "stateless"
    STATEFUL = "stateful"


class CheckOutcome(enum.Enum):
    """How one check of the watch ended, from its last journal record."""

    IDLE = "idle"  # no trigger fired
    LAUNCHED = "launched"  # a run was launched and its launcher returned
    LAUNCHING = "launching"  # a launch was journalled, not its end: still going, or the watch died
    SKIPPED = "skipped"  # a run the watch launched was still going
    UNFINISHED = "unfinished"  # no verdict recorded after the state (a dry run writes nothing at all)


@dataclass(frozen=True)
class VersionNode:
    """One registered version, as the lineage tree and the metrics table show it."""

    major: int
    minor: int
    strategy: str  # as registered: stateless, stateful, hybrid-stateless, hybrid-stateful
    kind: Kind
    parent: Optional[str]  # "X.Y": the fine-tuned version, or the one a retrain recorded
    created: float  # epoch seconds
    tags: list[str] = field(default_factory=list)  # rejected, stale-gate, anything tagged by hand
    quarantined: Optional[str] = None  # why its checkpoint is no longer trusted
    aliases: list[str] = field(default_factory=list)  # the aliases that point at it now
    metrics: dict[str, float] = field(default_factory=dict)  # numeric ones, flattened; champion_* at the gate
    gate_metric: Optional[str] = None  # what the gate compared (the promote task's record)
    gate_passed: Optional[bool] = None
    run_id: Optional[str] = None
    strategy_reason: Optional[str] = None
    model_class: Optional[str] = None  # the recorded LightningModule (None: the first checkpoint format)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def gate_value(self) -> Optional[float]:
        return self.metrics.get(self.gate_metric) if self.gate_metric else None

    @property
    def champion_at_gate(self) -> Optional[float]:
        return self.metrics.get(f"champion_{self.gate_metric}") if self.gate_metric else None

    @property
    def marks(self) -> list[str]:
        """Tags, and ``quarantined`` when it is: what the tree writes under a version."""
        return [*self.tags, *(["quarantined"] if self.quarantined else [])]


@dataclass(frozen=True)
class AliasMove:
    """One record of the registry's append-only alias log."""

    id: int
    at: float
    alias: str
    action: str  # promote | rollback | rollback-to
    from_version: Optional[str]  # None: the alias was new
    to_version: str
    reason: str
    by: Optional[str]  # the run that moved it, else who


@dataclass(frozen=True)
class TriggerVerdict:
    """One ``trigger`` record: cl_hpc.learn.triggers.TriggerResult as the watch journals it."""

    name: str
    value: Optional[float]
    threshold: Optional[float]
    fired: bool
    detail: str
    severe: bool = False

    @property
    def ratio(self) -> Optional[float]:
        """value / threshold: a trigger fires at 1."""
        if self.value is None or not self.threshold:
            return None
        return self.value / self.threshold


@dataclass
class WatchCheck:
    """One check of the watch (its records share the ``check`` id)."""

    check: str
    at: float  # epoch seconds of its first record
    champion: Optional[str] = None  # "name X.Y" as the watch saw it
    new_rows: Optional[int] = None
    triggers: list[TriggerVerdict] = field(default_factory=list)
    outcome: CheckOutcome = CheckOutcome.UNFINISHED
    run_id: Optional[str] = None
    reason: Optional[str] = None  # why it launched, or why it skipped
    exit_code: Optional[int] = None
    run_state: Optional[str] = None
    notes: list[str] = field(default_factory=list)  # the state's notes, experiment decisions, stale locks

    @property
    def fired(self) -> list[TriggerVerdict]:
        return [t for t in self.triggers if t.fired]


@dataclass(frozen=True)
class WatchLog:
    path: str
    checks: list[WatchCheck]  # oldest first
    unreadable: int = 0  # lines that were not a JSON record


@dataclass(frozen=True)
class FreshnessPoint:
    strategy: str  # stateless | stateful | hybrid | all
    staleness: int  # windows since the model's last training
    mean: float  # the backtest's metric, mean over the windows
    windows: int


@dataclass(frozen=True)
class Backtest:
    """The parts of OUT/backtest.json the page draws (cl_hpc/backtest/report.py)."""

    path: str
    metric: str
    direction: str  # higher | lower is better
    freshness: list[FreshnessPoint]
    cells: list[dict[str, Any]]  # the per-cell summaries
    recommended: Optional[str]  # the recommended cell's name
    why: str
    model_class: Optional[str]  # the replayed model's _target_


@dataclass(frozen=True)
class ModelReport:
    name: str
    store: str  # the store's database file
    as_of: float  # open alias intervals end here
    versions: list[VersionNode]  # by major, then minor
    aliases: dict[str, str]  # where each alias points now
    events: list[AliasMove]  # oldest first
    watch: Optional[WatchLog]
    watch_note: str  # why there is no watch log (or where it was read)
    backtest: Optional[Backtest]
    backtest_note: str
    problems: list[str] = field(default_factory=list)

    def version(self, text: str) -> Optional[VersionNode]:
        return next((v for v in self.versions if v.version == text), None)


# ---- building it ------------------------------------------------------------------------------------


def model_report(store_root: Path, name: str, run_root: Optional[Path], backtest: Optional[Path],
                 now: Optional[float] = None, *, watch_log: Optional[Path] = None) -> ModelReport:
    """The page's data for model ``name`` in the store under ``store_root``; read-only.

    ``run_root``: where the watch's log is (<run_root>/watch.log.jsonl; ``watch_log`` names another
    file, as ``watch --log`` does). ``backtest``: the folder ``python -m cl_hpc.backtest --out`` wrote,
    or its backtest.json. A RegistryError for a missing store or an unknown model (listing the models),
    a DataError for a backtest that cannot be read."""
    versions, aliases, events, db = _registry(store_root, name)
    problems: list[str] = []
    log_path = watch_log or (run_root / WATCH_LOG if run_root is not None else None)
    watch, watch_note = _watch(log_path, name)
    if watch is not None and watch.unreadable:
        problems.append(f"{watch.unreadable} line(s) of {watch.path} are not JSON records; skipped")
    curve, backtest_note = _backtest(backtest)
    if curve is not None:
        problems.extend(_other_model(curve, versions))
    return ModelReport(name=name, store=db, as_of=time.time() if now is None else now, versions=versions,
                       aliases=aliases, events=events, watch=watch, watch_note=watch_note, backtest=curve,
                       backtest_note=backtest_note, problems=problems)


def _registry(store_root: Path, name: str) -> tuple[list[VersionNode], dict[str, str], list[AliasMove], str]:
    db = Path(store_root) / DB_NAME
    if not db.is_file():  # opening would create an empty store: say where none is instead
        raise RegistryError(f"no store at {db}: pass --store-root, the folder of {DB_NAME} (the registry's; "
                            f"created by the first registration)")
    with ModelRegistry.open(store_root) as registry:
        registry.require_model(name)  # else a RegistryError listing the models there are
        aliases = {alias: str(v) for alias, v in registry.aliases(name).items()}
        versions = [_node(record, aliases) for record in registry.versions(name)]
        events = [_move(e) for e in registry.events(name)]
    return versions, aliases, events, str(db)


def _node(record: ModelVersion, aliases: Mapping[str, str]) -> VersionNode:
    metrics = record.metrics
    gate = metrics.get("gate_metric")
    passed = metrics.get("gate_passed")
    reason = metrics.get("strategy_reason")
    kind = STRATEGIES.get(record.strategy, "stateful" if record.version.minor else "stateless")
    return VersionNode(
        major=record.version.major, minor=record.version.minor, strategy=record.strategy, kind=Kind(kind),
        parent=str(record.parent) if record.parent else None, created=record.created, tags=list(record.tags),
        quarantined=record.quarantined, aliases=[a for a, v in aliases.items() if v == str(record.version)],
        metrics=_numeric(metrics), gate_metric=gate if isinstance(gate, str) else None,
        gate_passed=passed if isinstance(passed, bool) else None, run_id=record.run_id,
        strategy_reason=reason if isinstance(reason, str) else None, model_class=record.model_class)


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _move(e: AliasEvent) -> AliasMove:
    return AliasMove(id=e.id, at=e.at, alias=e.alias, action=e.action,
                     from_version=str(e.from_version) if e.from_version else None, to_version=str(e.to_version),
                     reason=e.reason, by=e.run_id or e.actor)


def model_metrics(versions: list[VersionNode]) -> list[str]:
    """The metrics worth a chart, gate metrics first: those the gate scored for both sides (a
    ``champion_`` twin somewhere), else every numeric one but the promote task's counts."""
    keys = {k for v in versions for k in v.metrics}
    gates = list(dict.fromkeys(v.gate_metric for v in versions if v.gate_metric and v.gate_metric in keys))
    scored = sorted(k for k in keys if f"champion_{k}" in keys and k not in gates)
    if gates or scored:
        return gates + scored
    return sorted(k for k in keys if not k.startswith("champion_") and k not in _BOOKKEEPING)


def metric_columns(versions: list[VersionNode]) -> list[str]:
    """Every numeric metric of any version, charted ones first, each champion_ value beside its own."""
    first = model_metrics(versions)
    rest = sorted({k for v in versions for k in v.metrics} - set(first) - {f"champion_{k}" for k in first})
    return [c for k in first for c in (k, f"champion_{k}")] + rest


# ---- the watch log ----------------------------------------------------------------------------------


def _watch(path: Optional[Path], name: str) -> tuple[Optional[WatchLog], str]:
    if path is None:
        return None, "no run root given, so no watch log was read (pass --run-root, where the watch runs)"
    if not path.is_file():
        return None, (f"no watch log at {path}: python -m cl_hpc.watch (without --dry-run) appends one there, "
                      f"or pass the run root it used")
    checks, bad = read_watch_log(path, name)
    if not checks:
        return None, f"the watch log {path} has no check of model {name!r}"
    return WatchLog(str(path), checks, bad), f"read from {path}"


def read_watch_log(path: Path, name: str) -> tuple[list[WatchCheck], int]:
    """The checks of model ``name`` in a watch log (oldest first), and how many lines were unreadable."""
    checks: dict[str, WatchCheck] = {}
    bad = 0
    for record, at in _records(path):
        if record is None:
            bad += 1
        elif record.get("model") == name and isinstance(record.get("check"), str):
            check = checks.get(record["check"])
            if check is None:
                check = checks[record["check"]] = WatchCheck(record["check"], at)
            _apply(check, record)
    return list(checks.values()), bad


def _records(path: Path) -> Iterator[tuple[Optional[dict[str, Any]], float]]:
    """Each line's record and its time; (None, nan) for a line that is not a timed JSON record (cut short)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                try:
                    record = json.loads(line)
                    yield record, datetime.fromisoformat(record["time"]).timestamp()
                except (ValueError, TypeError, KeyError):
                    yield None, float("nan")


def _apply(check: WatchCheck, r: Mapping[str, Any]) -> None:
    """One journal record into its check (cl_hpc/watch/check.py and experiments.py write them)."""
    event = r.get("event")
    if event == "state":
        check.champion, check.new_rows = r.get("champion"), r.get("new_rows")
        check.notes.extend(str(n) for n in r.get("notes") or ())
    elif event == "trigger":
        check.triggers.append(TriggerVerdict(str(r.get("name")), _float(r.get("value")), _float(r.get("threshold")),
                                             bool(r.get("fired")), str(r.get("detail", "")), bool(r.get("severe"))))
    elif event == "idle":
        check.outcome = CheckOutcome.IDLE
    elif event == "skipped":
        check.outcome, check.reason = CheckOutcome.SKIPPED, r.get("why")
    elif event == "launch":
        check.outcome, check.run_id, check.reason = CheckOutcome.LAUNCHING, r.get("run_id"), r.get("reason")
    elif event == "launched":
        check.outcome, check.run_id = CheckOutcome.LAUNCHED, r.get("run_id")
        check.exit_code, check.run_state = r.get("exit_code"), r.get("run_state")
    elif event in ("experiment", "experiment-error", "stale-lock"):
        what = r.get("decision") or r.get("error") or r.get("why")
        check.notes.append(f"{event} {r.get('experiment') or ''}: {what}: {r.get('reason') or ''}".strip(": "))


def _float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- the backtest -----------------------------------------------------------------------------------


def _backtest(path: Optional[Path]) -> tuple[Optional[Backtest], str]:
    if path is None:
        return None, ("no backtest given: python -m cl_hpc.backtest --out DIR replays the landing zone's history "
                      "per cadence and strategy; pass --backtest DIR (or DIR/backtest.json) to draw its curve")
    file = path / BACKTEST_JSON if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return _curve(str(file), data), f"read from {file}"
    except FileNotFoundError:
        raise DataError(f"no backtest report at {file}: --backtest takes the --out folder of python -m "
                        f"cl_hpc.backtest, or the {BACKTEST_JSON} in it (written when every cell is done)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{file} is not a backtest report that python -m cl_hpc.backtest writes ({type(exc).__name__}: "
                        f"{exc}); it needs 'metric', 'freshness', 'summary' and 'recommendation'") from None


def _curve(path: str, data: Mapping[str, Any]) -> Backtest:
    metric = str(data.get("metric", "accuracy"))  # reports from before the metric was recorded scored accuracy
    points = [FreshnessPoint(str(r["strategy"]), int(r["staleness"]), float(r[f"mean_{metric}"]), int(r["windows"]))
              for r in data["freshness"]]
    pick = data["recommendation"]
    model = data.get("model")
    return Backtest(path=path, metric=metric, direction=str(data.get("direction", "higher")), freshness=points,
                    cells=list(data["summary"]), recommended=pick.get("cell"), why=str(pick.get("why", "")),
                    model_class=model.get("_target_") if isinstance(model, dict) else None)


def _other_model(curve: Backtest, versions: list[VersionNode]) -> list[str]:
    """A note when the backtest replayed a model class none of the versions is: its curve is another model's."""
    classes = sorted({v.model_class for v in versions if v.model_class})
    if curve.model_class is None or not classes or curve.model_class in classes:
        return []
    return [f"the backtest {curve.path} replayed {curve.model_class}, but the versions are {', '.join(classes)}: "
            f"its freshness curve describes another model"]


# ---- the page -----------------------------------------------------------------------------------------


def render_model(report: ModelReport) -> str:
    """The model's page: lineage, alias timeline, metrics, triggers, freshness; absent parts say so."""
    from cl_hpc.report import model_charts as draw  # matplotlib: only when a page is drawn
    from cl_hpc.report.pages import _ENV, _version, _when

    kinds = {v.version: v.kind for v in report.versions}
    drawn = {"lineage": draw.lineage(report.versions),
             "aliases": draw.alias_timeline(report.events, kinds, report.as_of),
             "metrics": draw.metrics_chart(report.versions, model_metrics(report.versions)),
             "triggers": draw.triggers_chart(report.watch.checks) if report.watch else "",
             "freshness": draw.freshness_chart(report.backtest.freshness, report.backtest.metric)
             if report.backtest else ""}
    checks = report.watch.checks if report.watch else []
    listed = [c for c in reversed(checks) if c.fired or c.outcome in _ACTED][:LISTED_CHECKS]
    return _ENV.get_template("model.html.j2").render(
        r=report, charts=drawn, s=_summary(report), columns=metric_columns(report.versions), listed=listed,
        latest=checks[-1] if checks else None, colours=_legend(draw.KIND_COLOURS, draw.REJECTED),
        version=_version(), written=_when(report.as_of))


def _legend(kinds: Mapping[Kind, str], rejected: str) -> dict[str, str]:
    return {**{kind.value: colour for kind, colour in kinds.items()}, "rejected": rejected}


_ACTED = (CheckOutcome.LAUNCHED, CheckOutcome.LAUNCHING, CheckOutcome.SKIPPED)


def _summary(report: ModelReport) -> dict[str, int]:
    versions, checks = report.versions, report.watch.checks if report.watch else []
    return {"versions": len(versions), "retrains": sum(v.kind is Kind.STATELESS for v in versions),
            "fine_tunes": sum(v.kind is Kind.STATEFUL for v in versions),
            "rejected": sum("rejected" in v.tags for v in versions),
            "quarantined": sum(v.quarantined is not None for v in versions), "moves": len(report.events),
            "rollbacks": sum(e.action.startswith("rollback") for e in report.events), "checks": len(checks),
            "fired": sum(bool(c.fired) for c in checks), "launches": sum(c.run_id is not None for c in checks)}

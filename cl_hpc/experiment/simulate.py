"""`python -m cl_hpc.experiment simulate`: replay a landing zone's stream through every experiment method.

    python -m cl_hpc.experiment simulate                          # the bundled zone (data=sea), 1 run
    python -m cl_hpc.experiment simulate --runs 20 --delay 500 --json
    python -m cl_hpc.experiment simulate --zone data/landing/served --champion 1.0 --challenger 1.1

The stream is the zone's rows in time order. Per row, whether the champion's answer was right:

- ``--champion X.Y``: the registry's version scored on the rows (checksum verified), as the watch
  scores served traffic (cl_hpc/learn/monitor.py score_rows);
- else a labelled zone (the label join's, with ``_output.<output>``): the answers the clients got;
- else (the bundled zone) a reference champion: a river logistic regression fitted on the first
  ``--train-rows`` rows, then frozen, as a registered version is; those rows are not replayed.

Challengers: each ``--challenger X.Y`` scored for real; without one, three are derived from the
champion with a known effect (cl_hpc/rollout/simulate.py derive): ``better`` fixes a share
``--effect`` of the champion's wrong answers, ``worse`` gets that share of its right answers wrong
(1.0: a label-flipped model), ``equal`` keeps each 1000-row block's accuracy with errors shuffled,
independent of the champion's. Interleaving plays the bundled ranking simulation (RankingSim) with
a challenger ranker whose scoring noise follows the same effect.

Every method then replays the rows (cl_hpc/rollout/replay.py) with outcomes delayed by ``--delay``
rows, deciding with the production controller's code. Each ``--runs`` draws a new salt (and new
derived challengers); the table shows the decisions and the medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.simulate import Result, Settings, Stream, known_challengers, ranker_noise
from cl_hpc.rollout.start import only_model

OUTPUT_PREFIX = "_output."


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``simulate`` subcommand on ``commands`` (argparse's subparsers)."""
    sim = commands.add_parser("simulate", help="replay a landing zone's stream, with delayed outcomes, through every "
                                               "method for a better, a worse and an equal challenger")
    sim.add_argument("--zone", type=Path, default=None, help="the landing zone (default: data.landing_dir, generated "
                                                             "from the bundled stream if missing)")
    sim.add_argument("--delay", type=int, default=200, help="rows before an answer's outcome is seen (default 200)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the salts and derived challengers (default 0)")
    sim.add_argument("--runs", type=int, default=1, help="replays, each with a new salt (default 1)")
    sim.add_argument("--json", action="store_true", help="one JSON object per run and result, then the summary")
    sim.add_argument("--effect", type=float, default=0.25,
                     help="share of answers a derived challenger fixes (better) or breaks (worse); default 0.25")
    sim.add_argument("--champion", default=None, help="score this registry version (X.Y or alias) as the champion")
    sim.add_argument("--challenger", action="append", default=None,
                     help="score this registry version as a challenger (again for more)")
    sim.add_argument("--train-rows", type=int, default=2000,
                     help="rows the reference champion is fitted on (no --champion, no served answers); default 2000")
    sim.add_argument("--min-samples", type=int, default=100,
                     help="outcomes per arm before a decision (canary: per step); default 100, below production's "
                          "500 so that a 48 000-row stream can take a canary through its ramp")
    sim.add_argument("--look", type=int, default=100, help="rows between two looks of the controller (default 100)")
    sim.add_argument("--window", type=int, default=500, help="canary: rows per judged sample (default 500)")
    sim.add_argument("--label-col", default=None, help="the label column (default data.label_col)")
    sim.add_argument("--output", default="label", help="a labelled zone's answer column _output.<output>")
    return sim


def simulate(cfg: Any, args: argparse.Namespace) -> int:
    """Check everything, build the stream, replay every method, print the table (or JSON)."""
    settings = settings_from(cfg, args)
    _check_args(args)
    if args.champion is not None:
        _registry(cfg, args, lambda registry, name, records: None)  # an unknown version fails before any work
    frame, label_col = read_zone(cfg, args)
    champion, challengers, frame = correctness(cfg, args, frame, label_col)
    units = _units(frame)
    results = _replay(champion, units, challengers, settings, args)
    _print(results, args, len(champion))
    return 0


def settings_from(cfg: Any, args: argparse.Namespace) -> Settings:
    exp = cfg.experiment
    return Settings(delay=args.delay, look_every=args.look, window=args.window,
                    steps=tuple(float(s) for s in exp.steps), min_samples=args.min_samples, alpha=float(exp.alpha),
                    mde=float(exp.mde), power=float(exp.power), sequential=bool(exp.sequential),
                    pass_score=float(exp.pass_score), marginal_score=float(exp.marginal_score),
                    shadow_share=float(exp.shadow_share), policy=str(exp.policy), epsilon=float(exp.epsilon))


def _check_args(args: argparse.Namespace) -> None:
    problems = [msg for ok, msg in (
        (args.runs >= 1, f"--runs {args.runs}: at least 1"),
        (0 < args.effect <= 1, f"--effect {args.effect}: a share in (0, 1]"),
        (args.train_rows >= 10, f"--train-rows {args.train_rows}: at least 10"),
        (not args.challenger or args.champion, "--challenger needs --champion (both scored on the same rows)"),
    ) if not ok]
    if problems:
        raise ConfigError("simulate: " + "; ".join(problems))


def read_zone(cfg: Any, args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    """The zone's rows, oldest first, with their label; an error before any work if there are none."""
    from cl_hpc.config.ml import data_conf, plain
    from cl_hpc.data.landing import ensure_landing_zone
    from cl_hpc.data.partitions import list_partitions

    conf = data_conf(plain(cfg.data))
    ts, label = conf.timestamp_col, args.label_col or conf.label_col
    if args.zone is None:
        root = Path(ensure_landing_zone(conf)["landing_dir"])
    else:
        root = args.zone.expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"landing zone {root} does not exist; pass --zone <dir of part-*.parquet files>, or leave "
                            f"it out for the bundled stream ({conf.landing_dir})")
    parts = list_partitions(root)
    frame = pd.concat([pd.read_parquet(p.path) for p in parts], ignore_index=True) if parts else pd.DataFrame()
    if not len(frame):
        raise DataError(f"landing zone {root} holds no rows (no part-*.parquet files with data): nothing to replay")
    if label is None or label not in frame.columns:
        raise DataError(f"landing zone {root} has no label column {label!r} (columns: {list(frame.columns)}); a replay "
                        f"needs outcomes: pass --label-col")
    frame = frame[frame[label].notna()]
    if ts in frame.columns:
        frame = frame.sort_values(ts, kind="stable")
    return frame.reset_index(drop=True), label


def correctness(cfg: Any, args: argparse.Namespace, frame: pd.DataFrame,
                label: str) -> tuple[np.ndarray, dict[str, np.ndarray], pd.DataFrame]:
    """The champion's 0/1 per replayed row, the real challengers' (none: derived later), the replayed rows."""
    if args.champion is not None:
        return _scored(cfg, args, frame, label)
    answer = OUTPUT_PREFIX + args.output
    if answer in frame.columns:
        hit = frame[label].astype(str) == frame[answer].astype(str)
        return hit.to_numpy(dtype=np.int8), {}, frame
    if len(frame) <= args.train_rows:
        raise DataError(f"the zone holds {len(frame)} labelled rows, all needed to fit the reference champion "
                        f"(--train-rows {args.train_rows}): nothing left to replay")
    return reference_champion(frame, label, args.train_rows), {}, frame.iloc[args.train_rows:].reset_index(drop=True)


def reference_champion(frame: pd.DataFrame, label: str, train_rows: int) -> np.ndarray:
    """0/1 per row after the first ``train_rows``: a river logistic regression (one-vs-rest beyond two
    classes) on the numeric features, fitted on those rows and then frozen."""
    from river import linear_model, multiclass, preprocessing

    features = [c for c in frame.columns if c != label and not c.startswith("_")
                and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    if not features:
        raise DataError(f"the zone has no numeric feature column to fit a reference champion on (columns: "
                        f"{list(frame.columns)}); pass --champion X.Y to score a registered version")
    classes = frame[label].nunique()
    model: Any = linear_model.LogisticRegression()
    model = preprocessing.StandardScaler() | (model if classes <= 2 else multiclass.OneVsRestClassifier(model))
    train, replay = frame.iloc[:train_rows], frame.iloc[train_rows:]
    for x, y in zip(train[features].to_dict("records"), train[label].tolist()):
        model.learn_one(x, y)
    predicted = [model.predict_one(x) for x in replay[features].to_dict("records")]
    return (replay[label].to_numpy() == np.asarray(predicted, dtype=object)).astype(np.int8)


def _scored(cfg: Any, args: argparse.Namespace, frame: pd.DataFrame,
            label: str) -> tuple[np.ndarray, dict[str, np.ndarray], pd.DataFrame]:
    """The registry's versions scored on the rows (each resolved first: an unknown one fails before any scoring)."""
    from cl_hpc.learn.monitor import score_rows

    def score(registry: Any, name: str, records: list[Any]) -> list[np.ndarray]:
        scores = []
        for record in records:
            rows = score_rows(registry.load_model(name, record.version), frame, "accuracy")
            if rows.errors.size != len(frame):
                raise DataError(f"model {name} {record.version} could not be scored on the zone's {len(frame)} rows"
                                f"{': ' + rows.note if rows.note else ''}")
            scores.append((1 - rows.errors).astype(np.int8))
        return scores

    records, scores = _registry(cfg, args, score)
    return scores[0], {str(r.version): s for r, s in zip(records[1:], scores[1:])}, frame


def _registry(cfg: Any, args: argparse.Namespace, work: Callable[[Any, str, list[Any]], Any]) -> tuple[list[Any], Any]:
    """``work(registry, model, records)`` on the versions named by --champion and --challenger, each
    resolved and checksum-verified first."""
    from cl_hpc.registry.store import ModelRegistry

    root = Path(str(cfg.store.root)).expanduser().resolve()
    with ModelRegistry.open(root, journal_mode=str(cfg.store.journal_mode),
                            busy_timeout_s=float(cfg.store.busy_timeout_s)) as registry:
        name = cfg.experiment.model or only_model(registry)
        records = [registry.verify(name, ref) for ref in [args.champion, *(args.challenger or [])]]
        return records, work(registry, name, records)


def _units(frame: pd.DataFrame) -> list[str]:
    """The unit of each row where the zone keeps one (the label join's ``_unit``), else its position."""
    if "_unit" in frame.columns and frame["_unit"].notna().all():
        return frame["_unit"].astype(str).tolist()
    return [str(i) for i in range(len(frame))]


def _replay(champion: np.ndarray, units: list[str], real: dict[str, np.ndarray], settings: Settings,
            args: argparse.Namespace) -> list[tuple[int, Result]]:
    from rich.progress import Progress

    from cl_hpc.rollout.replay import run_all
    from cl_hpc.rollout.simulate import Effect

    out: list[tuple[int, Result]] = []
    per_run = 5 * (len(real) or len(Effect))
    with Progress(transient=True, console=_console(sys.stderr)) as progress:
        task = progress.add_task("replaying", total=args.runs * per_run)
        for run in range(args.runs):
            stream = (Stream(champion, units, real, {n: settings.ranking_noise for n in real}) if real
                      else known_challengers(champion, units, args.effect, args.seed, run, settings.ranking_noise))
            for result in run_all(stream, settings, args.seed, run):
                out.append((run, result))
                progress.update(task, advance=1, description=f"run {run + 1}/{args.runs}: {result.method.value}")
    return out


def _console(file: Any) -> Any:
    from rich.console import Console

    return Console(markup=False, file=file)


def summarize(results: Sequence[tuple[int, Result]]) -> list[dict[str, Any]]:
    """Per (method, challenger): the decisions over the runs and the medians."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for _, result in results:
        groups.setdefault((result.method.value, result.challenger), []).append(result)
    rows = []
    for (method, challenger), group in groups.items():
        decided = [r.rows for r in group if r.rows is not None]
        regrets = [r.regret for r in group if r.regret is not None]
        rows.append({"method": method, "challenger": challenger, "runs": len(group),
                     "decisions": dict(sorted(_count(r.decision.value for r in group).items())),
                     "rows_to_decide": statistics.median(decided) if decided else None,
                     "exposed": statistics.median(r.exposed for r in group),
                     "exposed_share": statistics.median(r.exposed_share for r in group),
                     "regret": statistics.median(regrets) if regrets else None})
    return rows


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _print(results: list[tuple[int, Result]], args: argparse.Namespace, rows: int) -> None:
    summary = summarize(results)
    if args.json:
        for run, result in results:
            print(json.dumps({"run": run, **result.to_json()}, sort_keys=True))
        print(json.dumps({"summary": summary, "rows": rows, "runs": args.runs, "delay": args.delay}, sort_keys=True))
        return
    from rich.table import Table

    console = _console(sys.stdout)
    console.print(f"replayed {rows} rows x {args.runs} run(s), outcomes {args.delay} rows late; medians over runs")
    table = Table("method", "challenger", "decisions", "rows to decide", "exposed rows", "exposed share", "regret")
    for row in summary:
        table.add_row(row["method"], row["challenger"], ", ".join(f"{k} {v}" for k, v in row["decisions"].items()),
                      _num(row["rows_to_decide"]), _num(row["exposed"]), f"{row['exposed_share']:.2%}",
                      _num(row["regret"]))
    console.print(table)
    console.print("exposed: rows the challenger answered users until the decision (a shadow's: none; interleaving: "
                  "impressions that showed its items); regret: rows x accuracy lost against the better arm, to the "
                  "end of the stream")


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.0f}"


__all__ = ["add_parser", "simulate", "summarize", "ranker_noise"]

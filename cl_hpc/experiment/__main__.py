"""`python -m cl_hpc.experiment start|status|report|decide|stop|simulate [options] [overrides]`: experiments.

    python -m cl_hpc.experiment start experiment=ab experiment.challenger=1.1 --reason "does 1.1 beat 1.0?"
    python -m cl_hpc.experiment start experiment=canary experiment.challenger=2.0 --reason "retrained on Q3"
    python -m cl_hpc.experiment status                  # every experiment of the store, its state and weights
    python -m cl_hpc.experiment report 3 --labels data/landing/served   # per arm; SRM, tests, sample size
    python -m cl_hpc.experiment decide 3 --labels data/landing/served   # the controller, once (watch --loop: always)
    python -m cl_hpc.experiment stop 3 --reason "enough"
    python -m cl_hpc.experiment simulate --runs 20    # replay the bundled stream through every method

An experiment is recorded in the store (append-only tables, like the alias log); the server routes
by the running one. `start` checks everything first (the config, both versions known and trusted,
the weights, no other experiment running on the model) and writes nothing on an error.

Exit code: 0 on success; 2 on bad input, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from cl_hpc.errors import ClHpcError

COMMANDS = ("start", "status", "report", "decide", "stop", "simulate")
WHERE = "The experiment keys are in cl_hpc/config/experiment.py (values: conf/experiment/<kind>.yaml)."


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    start = commands.add_parser("start", help="start an experiment (experiment=<kind> experiment.challenger=X.Y)")
    start.add_argument("--reason", required=True, help="why: kept with the experiment and every decision it leads to")
    status = commands.add_parser("status", help="list the experiments, newest last")
    status.add_argument("--json", action="store_true", help="one JSON object per experiment")
    report = commands.add_parser("report", help="what an experiment shows so far: per arm, and the tests")
    report.add_argument("id", type=int, help="the experiment's id (see status)")
    report.add_argument("--json", action="store_true", help="one JSON object")
    report.add_argument("--labels", type=Path, action="append", default=None,
                        help="the label join's zone (default labels.out_dir): accuracy per arm from joined labels; "
                             "again for a shadow's own zone")
    report.add_argument("--label-col", default="y", help="its label column (default y)")
    report.add_argument("--output", default="label", help="the logged output compared with the label (default label)")
    decide = commands.add_parser("decide", help="the controller, once: a canary's step, an A/B or shadow test, a "
                                                "bandit's split or interleaving's clicks; then ramp, reweigh, roll "
                                                "back, reject, promote or halt")
    decide.add_argument("id", type=int, help="the experiment's id (see status)")
    decide.add_argument("--labels", type=Path, action="append", default=None,
                        help="the label join's zone (default labels.out_dir): accuracy and rewards on matured labels; "
                             "again for a shadow's own zone (a join with labels.role=shadow)")
    decide.add_argument("--label-col", default="y", help="its label column (default y)")
    decide.add_argument("--output", default="label", help="the logged output compared with the label")
    decide.add_argument("--window", type=float, default=10.0, help="seconds of traffic per judged sample (default 10)")
    decide.add_argument("--dry-run", action="store_true", help="print the decision; write nothing")
    stop = commands.add_parser("stop", help="end a running experiment without a decision")
    stop.add_argument("id", type=int, help="the experiment's id (see status)")
    stop.add_argument("--reason", required=True, help="why it ends")
    from cl_hpc.experiment.simulate import add_parser

    simulated = add_parser(commands)
    for sub in (start, status, report, decide, stop, simulated):
        sub.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. store.root=/shared/store")
    # Overrides may stand anywhere, also after an option (`--reason x store.root=...`).
    args, unknown = parser.parse_known_args(list(argv))
    stray = [u for u in unknown if u.startswith("-") or "=" not in u]
    if stray:
        parser.error(f"unrecognized arguments {stray}; the options are listed above, everything else is a Hydra "
                     f"override (key=value)")
    args.overrides = [*args.overrides, *unknown]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from cl_hpc.config.compose import compose_config

        cfg = compose_config(args.overrides, WHERE)
        from cl_hpc.experiment.simulate import simulate

        commands = {"start": start, "status": status, "report": report, "decide": decide, "stop": stop,
                    "simulate": simulate}
        return commands[args.command](cfg, args)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _stores(cfg: Any) -> tuple[Any, Any]:
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.rollout.experiments import ExperimentStore

    root = Path(str(cfg.store.root)).expanduser().resolve()
    options = {"journal_mode": str(cfg.store.journal_mode), "busy_timeout_s": float(cfg.store.busy_timeout_s)}
    return ModelRegistry.open(root, **options), ExperimentStore.open(root, **options)


def start(cfg: Any, args: argparse.Namespace) -> int:
    from cl_hpc.config.experiment import ExperimentConf
    from cl_hpc.config.ml import plain
    from cl_hpc.rollout.controller import mark_challenger
    from cl_hpc.rollout.start import check_units_carried, plan, power_note

    conf = ExperimentConf(**plain(cfg.experiment))
    registry, experiments = _stores(cfg)
    with registry, experiments:
        chosen = plan(conf, registry)
        check_units_carried(chosen.unit, chosen.name, _log_dir(cfg), time.time())
        note = power_note(chosen, registry)  # before anything is written: the power is printed up front
        experiment, event = experiments.start(registry, chosen.name, chosen.kind, chosen.arms, chosen.weights,
                                              unit=chosen.unit, reason=args.reason, config=chosen.config)
        mark_challenger(registry, experiment)
    arms = ", ".join(f"{a.name} {a.version} {event.weights[a.name]:.0%}" for a in experiment.arms)
    print(f"experiment {experiment.id} started: {experiment.kind.value} on {experiment.name} ({arms}), "
          f"unit {experiment.unit.value}")
    if note:
        print(f"sample size: {note}")
    return 0


def status(cfg: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry, experiments = _stores(cfg)
    with registry, experiments:
        rows = experiments.listing()
    if args.json:
        for experiment, latest in rows:
            print(json.dumps({**experiment.to_json(), "state": latest.state.value, "weights": latest.weights,
                              "last_event": latest.to_json()}, sort_keys=True))
        return 0
    console = Console(markup=False)
    if not rows:
        console.print("no experiments yet; start one: python -m cl_hpc.experiment start experiment=ab "
                      "experiment.challenger=X.Y --reason ...")
        return 0
    table = Table("id", "model", "kind", "arms", "weights", "unit", "state", "since", "reason")
    for experiment, latest in rows:
        table.add_row(str(experiment.id), experiment.name, experiment.kind.value,
                      ", ".join(f"{a.name} {a.version}" for a in experiment.arms),
                      ", ".join(f"{k} {v:.0%}" for k, v in latest.weights.items()), experiment.unit.value,
                      latest.state.value, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(latest.at)),
                      latest.reason)
    console.print(table)
    return 0


def report(cfg: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cl_hpc.rollout.controller import Sources, evaluate
    from cl_hpc.rollout.report import build

    registry, experiments = _stores(cfg)
    with registry, experiments:
        experiment, events = experiments.get(args.id), experiments.events(args.id)
    sources = Sources(_log_dir(cfg), _label_dirs(cfg, args.labels), args.label_col, args.output)
    shown = build(experiment, events, sources.log_dir, sources.label_dirs, args.label_col, args.output)
    # what the controller would decide now (nothing written): a bandit's posterior and regret, interleaving's wins
    now = evaluate(experiment, events, sources) if events[-1].state.active else None
    controller = None if now is None else {"decision": now.decision.value, "reason": now.reason,
                                           "samples": now.samples, "detail": now.detail}
    if args.json:
        print(json.dumps({**shown.to_json(), "controller": controller}, sort_keys=True, default=str))
        return 0
    console = Console(markup=False)
    console.print(f"experiment {experiment.id}: {experiment.kind.value} on {experiment.name}, unit "
                  f"{experiment.unit.value}, {shown.state}; weights "
                  + ", ".join(f"{k} {v:.0%}" for k, v in shown.weights.items()))
    table = Table("arm", "version", "requests", "units", "p50 ms", "p99 ms", "labelled", "accuracy")
    for arm in shown.arms:
        table.add_row(arm.arm, arm.version, str(arm.requests), str(arm.units), _num(arm.latency_p50_ms),
                      _num(arm.latency_p99_ms), str(arm.labelled),
                      _num(arm.correct / arm.labelled if arm.labelled else None, 4))
    console.print(table)
    for name, test in (("accuracy", shown.accuracy), ("latency", shown.latency)):
        if test is not None:
            console.print(f"{name}: challenger - champion = {test.estimate:+.4g} [{test.ci_low:+.4g}, "
                          f"{test.ci_high:+.4g}], {test.test.value} p = {test.p_value:.3g}"
                          f"{' (significant)' if test.significant else ''}")
    if shown.srm is not None:
        console.print(f"sample ratio: units {list(shown.srm.counts)} vs expected "
                      f"{[round(e, 1) for e in shown.srm.expected]}, p = {shown.srm.p_value:.3g}"
                      f"{'  MISMATCH: the split is broken, halt the experiment' if shown.srm.mismatch else ''}")
    if shown.plan is not None:
        console.print(f"sample size: {shown.plan.summary()}")
    if shown.agreement is not None:
        console.print(f"shadow agreement with the live answers: {shown.agreement:.2%}")
    for note in shown.notes:
        console.print(f"note: {note}")
    if now is not None:
        console.print(f"controller now: {now.decision.value}: {now.reason}")
        for key in ("prob_best", "regret"):
            if key in now.detail:
                console.print(f"bandit {key.replace('_', ' ')}: {now.detail[key]}")
    return 0


def decide(cfg: Any, args: argparse.Namespace) -> int:
    from cl_hpc.rollout.controller import Sources, look

    registry, experiments = _stores(cfg)
    sources = Sources(_log_dir(cfg), _label_dirs(cfg, args.labels), args.label_col, args.output, args.window)
    with registry, experiments:
        done = look(experiments, registry, args.id, sources, dry_run=args.dry_run)
    step = done.step
    print(f"experiment {args.id}: {step.decision.value}: {step.reason}"
          + (" (dry run: nothing written)" if args.dry_run else "" if done.written else " (nothing to write)"))
    return 0


def _label_dirs(cfg: Any, given: Optional[list[Path]]) -> tuple[Path, ...]:
    """The zones named with --labels, else the label join's own (labels.out_dir, and a shadow's copies in
    labels.shadow_out_dir) where they exist."""
    if given:
        return tuple(given)
    zones = (Path(str(d)).expanduser().resolve() for d in (cfg.labels.out_dir, cfg.labels.shadow_out_dir) if d)
    return tuple(z for z in zones if z.is_dir())


def _log_dir(cfg: Any) -> Path:
    return Path(str(cfg.serve.log_dir or Path(str(cfg.store.root)) / "predictions")).expanduser().resolve()


def _num(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def stop(cfg: Any, args: argparse.Namespace) -> int:
    from cl_hpc.rollout.records import Action, ExperimentState

    registry, experiments = _stores(cfg)
    with registry, experiments:
        experiments.get(args.id)  # an unknown id: the error lists the experiments
        weights = experiments.latest(args.id).weights  # as they were: a stopped experiment routes nothing
        experiments.append(args.id, Action.STOP, ExperimentState.STOPPED, weights, args.reason)
    print(f"experiment {args.id} stopped: the champion answers every request again")
    return 0


if __name__ == "__main__":
    sys.exit(main())

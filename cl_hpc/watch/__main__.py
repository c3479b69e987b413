"""`python -m cl_hpc.watch [options] [--] [hydra overrides]`: retrain when a trigger fires.

One shot (the default, for cron or scrontab): evaluate the triggers once (time, data volume,
performance drop, drift; see cl_hpc/learn/triggers.py), print each verdict and append it to a
JSON-lines log, and when one fires launch the pipeline with `python -m cl_hpc.launch <overrides>`,
the reason recorded in its run.json. A lock makes sure two watches never run overlapping
pipelines. With --loop, the same every --every until Ctrl-C.

The options below belong to the watch; every other argument (or all after `--`) is a Hydra
override, used to find the model, store and data, and passed on to the launcher as it is:

    python -m cl_hpc.watch                                    # the default pipeline, locally
    python -m cl_hpc.watch --dry-run pipeline=continual       # show the verdicts and the command only
    python -m cl_hpc.watch cluster=slurm pipeline=continual   # for scrontab: submit detached and exit
    python -m cl_hpc.watch --loop --every 15m -- pipeline=continual trigger.volume.min_new_fraction=0.2

Exit code: 0 after a check, whether it launched or not (or was skipped: a run still going);
1 when the launcher it started failed; 2 on bad input (config, data, registry), nothing launched.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from omegaconf import DictConfig

from cl_hpc.errors import ClHpcError

if TYPE_CHECKING:
    from cl_hpc.watch.check import Settings

DEFAULT_EVERY = "15m"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", action="store_true", help="check again every --every until interrupted")
    parser.add_argument("--every", "--interval", dest="every", default=None, type=_seconds, metavar="DURATION",
                        help=f"time between checks with --loop, e.g. 30s, 15m, 2h (default: {DEFAULT_EVERY})")
    parser.add_argument("--dry-run", action="store_true",
                        help="evaluate and print the launch command; launch nothing, write no lock and no log")
    parser.add_argument("--lock", type=Path, default=None, help="lock file (default: <run_root>/.watch-<model>.lock)")
    parser.add_argument("--log", type=Path, default=None, help="JSON-lines log (default: <run_root>/watch.log.jsonl)")
    parser.add_argument("--model", default=None,
                        help="registry model name (default: the pipeline's params.registry.name, else its name)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the pipeline, e.g. cluster=slurm")
    args, unknown = parser.parse_known_intermixed_args(list(argv))
    if unknown:
        parser.error(f"unrecognized arguments {unknown}: Hydra flags (e.g. -m) are not supported by the watch, "
                     f"which launches one run; the watch's own options are listed above")
    if args.every is not None and not args.loop:
        parser.error("--every only applies with --loop (one shot is the default, for cron/scrontab)")
    args.every = args.every or _seconds(DEFAULT_EVERY)
    return args


def _seconds(text: str) -> float:
    import pandas as pd

    try:
        seconds = pd.Timedelta(text).total_seconds()
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration such as 30s, 15m, 2h or 1D")
    return seconds


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config the launcher would compose from the same overrides."""
    from cl_hpc.config.compose import compose_config

    return compose_config(overrides, "The keys and their types are in cl_hpc/config/, their values in conf/; the "
                                     "watch passes every argument that is not one of its options to Hydra.")


def run_once(settings: Settings, args: argparse.Namespace) -> int:
    from cl_hpc.watch.check import check

    try:
        outcome = check(settings, args.overrides, dry_run=args.dry_run, out=_say)
    except ClHpcError as exc:
        _say(f"error: {exc}")
        return 2
    return 1 if outcome.exit_code else 0


def run_loop(settings: Settings, args: argparse.Namespace) -> int:
    """Check every ``args.every`` seconds; a failed check is reported and the loop goes on."""
    signal.signal(signal.SIGTERM, _interrupt)  # scancel of a looping job: stop as cleanly as Ctrl-C
    try:
        while True:
            started = time.monotonic()
            run_once(settings, args)
            pause = max(0.0, args.every - (time.monotonic() - started))
            _say(f"watch: next check in {pause:.0f} s (Ctrl-C stops)")
            time.sleep(pause)
    except KeyboardInterrupt:
        _say("watch: interrupted; stopped (a run it launched goes on, and its lock with it)")
        return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _say(line: str) -> None:
    print(line, flush=True)  # cron and Slurm logs: every line as it happens


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from cl_hpc.watch.check import settings_from

    try:
        settings = settings_from(compose(args.overrides), args.model, args.lock, args.log)
    except ClHpcError as exc:
        _say(f"error: {exc}")
        return 2
    return run_loop(settings, args) if args.loop else run_once(settings, args)


if __name__ == "__main__":
    sys.exit(main())

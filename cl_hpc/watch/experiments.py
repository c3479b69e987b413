"""The experiment controller inside the watch: at every check, one look at each running experiment
of the model (cl_hpc/rollout/controller.py), its decision written and journalled like a trigger's.

It runs before the triggers: a promotion it makes changes the champion the triggers then measure.
A look that fails (a bad zone, a store busy past its timeout) is journalled and the others go on; a
check never stops on an experiment. A dry run looks and writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cl_hpc.errors import ClHpcError

if TYPE_CHECKING:
    from cl_hpc.watch.check import Journal, Settings


def look_experiments(s: Settings, journal: Journal, dry_run: bool) -> int:
    """Look at every running experiment of ``s.model``; the number of looks that failed."""
    from cl_hpc.store.db import DB_NAME

    if not (s.store_root / DB_NAME).exists():
        return 0  # no store yet: nothing can run, and a dry run must not create one
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.rollout.controller import Sources, look
    from cl_hpc.rollout.experiments import ExperimentStore

    sources = Sources(s.log_dir, tuple(d for d in s.label_dirs if d.exists()))
    failed = 0
    with ModelRegistry.open(s.store_root, **s.store_options) as registry, \
            ExperimentStore.open(s.store_root, **s.store_options) as experiments:
        running = [e for e, latest in experiments.listing(s.model) if latest.state.active]
        for experiment in running:
            try:
                done = look(experiments, registry, experiment.id, sources, dry_run=dry_run)
            except Exception as exc:
                # Not only a ClHpcError: a zone another tool wrote (a pandas or pyarrow error) must not end
                # watch --loop and the triggers after it; the journal names the error's type.
                failed += 1
                error = str(exc) if isinstance(exc, ClHpcError) else f"{type(exc).__name__}: {exc}"
                journal.event("experiment-error", f"watch {s.model}: experiment {experiment.id}: {error}",
                              experiment=experiment.id, error=error)
                continue
            step = done.step
            journal.event("experiment", f"watch {s.model}: experiment {experiment.id} ({experiment.kind.value}): "
                                        f"{step.decision.value}: {step.reason}"
                                        + (" (dry run: nothing written)" if dry_run and done.written is None
                                           and step.decision.value != "wait" else ""),
                          experiment=experiment.id, decision=step.decision.value, reason=step.reason)
    return failed

"""The controller: one look at a running experiment, whatever its kind, and its decision written.

Each kind's look is a pure function of the experiment's events, its prediction log and its label
zones, answering a :class:`~cl_hpc.rollout.steps.Step` (nothing written): the canary's judge
(cl_hpc/rollout/canary.py), the A/B and shadow tests (abtest.py), the bandit's posterior
(bandit_loop.py) and interleaving's sign test (interleaving.py). :func:`apply` writes it: an
experiment event (new weights, a halt, a decision), and for a decision the registry's part, with a
reason that names the experiment: PROMOTE moves the champion alias to the winner, only over the
champion the experiment tested against (one moved meanwhile halts the experiment); ROLLBACK and REJECT
tag the losers rejected, leave the champion alias alone and move the ``challenger`` alias (set when the
experiment started) back to the version kept, so the reason lands in the alias log. :func:`look` runs
once, for ``python -m cl_hpc.experiment decide``; :func:`look_all` runs every running experiment, for
``watch --loop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from cl_hpc.registry.store import AliasMoved
from cl_hpc.rollout.records import Action, Experiment, ExperimentEvent, ExperimentKind, ExperimentState
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Sources, Step, all_champion

__all__ = ["Decision", "Step", "Sources", "Look", "evaluate", "apply", "look", "look_all", "mark_challenger"]
CHALLENGER_ALIAS = "challenger"  # the registry alias of the version an experiment tests


@dataclass(frozen=True)
class Look:
    experiment: Experiment
    step: Step
    written: Optional[ExperimentEvent]  # None: a wait, or a dry run


def evaluate(experiment: Experiment, events: Sequence[ExperimentEvent], sources: Sources) -> Step:
    """The decision of ``experiment`` at this look, by its kind (nothing written)."""
    if experiment.kind is ExperimentKind.CANARY:
        from cl_hpc.rollout.canary import canary_step

        return canary_step(experiment, events, sources.log_dir, sources.label_dirs, sources.label_col, sources.output,
                           sources.window_s)
    if experiment.kind in (ExperimentKind.AB, ExperimentKind.SHADOW):
        from cl_hpc.rollout.abtest import ab_step

        return ab_step(experiment, events, sources)
    if experiment.kind is ExperimentKind.BANDIT:
        from cl_hpc.rollout.bandit_loop import bandit_step

        return bandit_step(experiment, events, sources)
    from cl_hpc.rollout.interleaving import interleave_step

    return interleave_step(experiment, events, sources.log_dir)


def look(experiments: Any, registry: Any, experiment_id: int, sources: Sources, dry_run: bool = False) -> Look:
    """One look at a running experiment, and its decision written (unless ``dry_run``)."""
    from cl_hpc.rollout.experiments import RolloutError

    experiment, events = experiments.get(experiment_id), experiments.events(experiment_id)
    if not events[-1].state.active:
        raise RolloutError(f"experiment {experiment_id} is {events[-1].state.value}: {events[-1].reason} (see "
                           f"python -m cl_hpc.experiment status)")
    step = evaluate(experiment, events, sources)
    return Look(experiment, step, None if dry_run else apply(step, experiment, experiments, registry))


def look_all(experiments: Any, registry: Any, sources: Sources, name: Optional[str] = None) -> list[Look]:
    """One look at every running experiment (of model ``name``, or of all)."""
    running = [e for e, latest in experiments.listing(name) if latest.state.active]
    return [look(experiments, registry, experiment.id, sources) for experiment in running]


def apply(step: Step, experiment: Experiment, experiments: Any, registry: Any) -> Optional[ExperimentEvent]:
    """Write the decision: an experiment event, and for a promotion, a rollback or a rejection, the
    registry's part, with a reason that names the experiment. WAIT writes nothing."""
    why = f"experiment {experiment.id} ({experiment.kind.value}): {step.reason}"
    detail = {"decision": step.decision.value, "samples": step.samples,
              "score": step.judgement.score if step.judgement else None, **step.detail}
    if step.decision is Decision.WAIT:
        return None
    if step.decision is Decision.STEP:
        return experiments.append(experiment.id, Action.WEIGHTS, ExperimentState.RUNNING, step.weights, why, detail)
    if step.decision is Decision.HALT:
        return experiments.append(experiment.id, Action.HALT, ExperimentState.HALTED, step.weights, why, detail)
    winner = step.winner or (CHALLENGER if step.decision is Decision.PROMOTE else CHAMPION)
    if step.decision is Decision.PROMOTE:
        # only over the version the experiment tested against: a promotion made meanwhile is not replaced
        champion = experiment.arm(CHAMPION).version if CHAMPION in {a.name for a in experiment.arms} else None
        chosen = experiment.arm(winner).version
        # A look that crashed between the promotion and its event left the alias moved: finish, not redo.
        if str(registry.aliases(experiment.name).get("champion")) != chosen:
            try:
                registry.promote(experiment.name, chosen, reason=why, **({"expect": champion} if champion else {}))
            except AliasMoved as exc:  # a newer champion was never compared: end the experiment, not fail each look
                return experiments.append(experiment.id, Action.HALT, ExperimentState.HALTED,
                                          all_champion(step.weights), f"{why}; not promoted: {exc}", detail)
    else:
        for arm in experiment.arms:
            if arm.name != winner:
                registry.tag(experiment.name, arm.version, ["rejected"])
        withdraw_challenger(registry, experiment, experiment.arm(winner).version, why)
    return experiments.append(experiment.id, Action.DECIDE, ExperimentState.DECIDED, step.weights, why, detail)


def mark_challenger(registry: Any, experiment: Experiment) -> None:
    """Point the model's ``challenger`` alias at the version under test, logged with the experiment, so
    the alias log tells what ran against the champion and why it ended (a bandit's extra arms: none)."""
    if CHALLENGER in {a.name for a in experiment.arms}:
        registry.promote(experiment.name, experiment.arm(CHALLENGER).version, alias=CHALLENGER_ALIAS,
                         reason=f"experiment {experiment.id} ({experiment.kind.value}) started: {experiment.reason}")


def withdraw_challenger(registry: Any, experiment: Experiment, kept: str, why: str) -> None:
    """A rollback or rejection, in the alias log: the ``challenger`` alias goes back to the version kept."""
    current = registry.aliases(experiment.name).get(CHALLENGER_ALIAS)
    if current is None:
        registry.promote(experiment.name, kept, alias=CHALLENGER_ALIAS, reason=why)
    elif str(current) != kept:
        registry.rollback(experiment.name, alias=CHALLENGER_ALIAS, to=kept, reason=why)

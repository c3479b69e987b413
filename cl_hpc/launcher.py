"""The launcher: compose, resolve, plan, size, submit, index and (optionally) follow one run.

Its entry is cl_hpc/launch.py (``python -m cl_hpc.launch``), which pauses the cyclic GC first;
:func:`launch` resumes it once the DAG is submitted (cl_hpc/gc_pause.py). The config is resolved
once into the schema's dataclasses (cl_hpc/config/schema.py ``Config``), and everything below
reads typed fields; plain dicts are made only where data leaves as JSON (the plan, its meta).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from cl_hpc import gc_pause
from cl_hpc.atomic import write_text_atomic
from cl_hpc.config.compose import CONF_DIR
from cl_hpc.config.schema import Config, RightsizeConf, StoreConf, register
from cl_hpc.dag.build import build_plan, digest, report
from cl_hpc.dag.model import Plan
from cl_hpc.dag.names import run_id_problem
from cl_hpc.dag.render import mermaid, render_plan
from cl_hpc.dag.resume import plan_resume
from cl_hpc.errors import ClHpcError, ConfigError, ExecutorError, ResourceError
from cl_hpc.execute import Executor, make_executor
from cl_hpc.rundir import launch_lock
from cl_hpc.rundir.layout import RunDir, new_run_id, resolve_run
from cl_hpc.rundir.state import State, run_status
from cl_hpc.ui import explain, follow, headline, interrupted, make_console, status_table

register()

WHERE = ("Nothing was submitted. The keys and their types are in cl_hpc/config/ (one comment per field), their "
         "values in conf/; `python -m cl_hpc.launch --help` lists the groups.")


def launch(cfg: DictConfig, console: Console) -> int:
    """The whole launch; returns the exit code (0 = the run completed, or was submitted detached)."""
    try:
        return _launch(cfg, resolve(cfg), console)
    finally:  # a dry run, nothing to run or an error: the next combination of a sweep gets it on
        gc_pause.resume()
        launch_lock.release_all()  # a dry run or nothing to run: the run dir's lock was taken to read it


def resolve(cfg: DictConfig) -> Config:
    """The composed config as the schema's dataclasses, every interpolation resolved; a value left
    ``???`` (MISSING) or an interpolation that fails is a ConfigError naming the key."""
    try:
        conf = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the config does not resolve: {exc}\n"
                          "Check the key it names in conf/ or on the command line. Nothing was submitted.") from exc
    if not isinstance(conf, Config):  # a root config without `config_schema` in its defaults list
        raise ConfigError(f"the root config is not cl_hpc's schema (a {type(conf).__name__}); conf/config.yaml "
                          "must list /config_schema in its defaults")
    return conf


def _launch(cfg: DictConfig, conf: Config, console: Console) -> int:
    run_id = conf.launch.run_id
    if run_id is not None and run_id_problem(run_id):  # a folder under run_root: never ../x
        raise ConfigError(f"{run_id_problem(run_id)}. Nothing was submitted.")
    executor = make_executor(conf.cluster)
    plan = build_plan(dataclasses.asdict(conf.pipeline), executor.capacity(), workdir=os.getcwd())
    plan, sizing = _rightsize(plan, conf.rightsize, conf.store)
    for line in sizing:
        console.print(line, highlight=False, soft_wrap=True)
    problems = executor.check(plan)
    if problems:
        raise ResourceError(report("a task asks for what the cluster can never give", problems))
    meta = {"store": _store_meta(conf.store), "backend": executor.name,
            "config_digest": digest(dataclasses.asdict(conf)),  # the same dict as the resolved config
            "profile": dataclasses.asdict(conf.profile), "rightsize": plan.meta.get("rightsize")}
    plan = Plan(plan.pipeline, plan.tasks, plan.edges, plan.units, plan.workdir, meta)
    resume = conf.launch.resume
    run, todo, epoch = _prepare(Path(conf.run_root).resolve(), plan, resume, run_id, executor)
    if conf.launch.dry_run:
        _print_plan(console, plan, executor, todo, bool(resume))
        return 0
    if not todo:
        console.print(f"run {run.run_id}: every unit completed before and is unchanged; nothing to run")
        return 0
    if epoch > 0:  # a resume: old copies stop before this launch resets a dir or records itself
        try:
            executor.stop_earlier(run, plan)
        except BaseException:
            launch_lock.release(run.path)
            raise
    _write_run(run, plan, cfg, conf, executor, epoch, todo)
    console.print(f"run {run.run_id}: submitting {len(todo)} of {len(plan.units)} units to {executor.name} "
                  f"({run.path})", highlight=False)
    if not executor.detaches:  # inprocess: the tasks run in this very process, for as long as they take
        gc_pause.resume()
    started = time.monotonic()
    try:
        try:
            executor.submit(run, plan, todo, epoch)
        finally:  # submitted (or given up): another launcher may read the run's states now
            launch_lock.release(run.path)
        gc_pause.resume()
        if executor.detaches:  # from here on the run no longer needs this process
            console.print(f"run {run.run_id}: submitted in {time.monotonic() - started:.2f} s", highlight=False)
        if executor.name == "slurm" and not _multirun():
            _yield_cpu()
        _index(run, plan)
    except KeyboardInterrupt:
        if not executor.detaches:
            raise
        return _interrupted_submission(run, executor, console)
    return _after_submit(run, plan, executor, conf.launch.follow, console)


def _interrupted_submission(run: RunDir, executor: Executor, console: Console) -> int:
    """Ctrl-C while submitting or just after: say where the run stands, never a traceback.

    A detached run may already go on without this process (the local scheduler was started, every
    sbatch returned), or the submission was given up (Slurm cancels what it queued), or nothing
    drives it (a scheduler that never started): each needs its own next step.
    """
    problems = executor.problems(run)
    statuses = executor.status(run)
    if problems:
        lines = [f"interrupted while submitting run {run.run_id}:", *problems]
    elif all(s.state.terminal for s in statuses.values()):
        lines = [f"interrupted while submitting: run {run.run_id} was given up (its units are cancelled); "
                 f"submit it again with launch.resume={run.run_id}"]
    else:
        lines = interrupted(run)
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    return 130  # the shell's code for a SIGINT exit


def _multirun() -> bool:
    # A sweep launches its combinations one after another in this process, and a lowered priority
    # cannot be raised again: a later cluster=local combination's scheduler and tasks would inherit it.
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _yield_cpu() -> None:
    """Run what is left of the launch (the index, following) at a lower CPU priority.

    The jobs are Slurm's now, not this process's children, so they keep their priority. Where the
    launcher shares a node with them (the local cluster, slurm/launch.sbatch) the first ones start
    while it still imports sqlite-utils for the index; on a login node it is plain politeness.
    """
    try:
        os.nice(10)
    except OSError:  # not permitted in some containers: the launch goes on at normal priority
        pass


def _index(run: RunDir, plan: Plan) -> None:
    # Imported here, after submitting: sqlite-utils imports pandas (0.45 s), and the first jobs
    # need wait neither for that nor for the index itself.
    from cl_hpc.store.sync import index_run

    index_run(run, plan.meta["store"])


def _rightsize(plan: Plan, conf: RightsizeConf, store: StoreConf) -> tuple[Plan, list[str]]:
    """The plan sized from the profile history (rightsize.mode), and one line per change."""
    from cl_hpc.rightsize import apply as rs

    if conf.mode not in rs.MODES:
        raise ConfigError(f"rightsize.mode={conf.mode!r} is not one of {', '.join(rs.MODES)}")
    store_path = Path(store.root) / "cl_hpc.db"
    if conf.mode == "off" or not store_path.exists():
        return plan, []
    from cl_hpc.rightsize.recommend import Policy

    with rs.ReadOnlyDb(store_path) as db:
        history = rs.history_from_store(db, plan)
    policy = Policy(mem_margin=conf.mem_margin, time_margin=conf.time_margin, max_shrink=conf.max_shrink)
    recs = rs.recommend_plan(plan, history, policy)
    sized = rs.apply(plan, recs, conf.mode)
    meta = {**sized.meta, "rightsize": rs.to_meta(recs, conf.mode)}
    sized = Plan(sized.pipeline, sized.tasks, sized.edges, sized.units, sized.workdir, meta)
    return sized, rs.describe(recs, conf.mode)


def _store_meta(store: StoreConf) -> dict[str, Any]:
    """The store as the plan records it for every job: its root made absolute (jobs run elsewhere)."""
    return {**dataclasses.asdict(store), "root": str(Path(store.root).resolve())}


def _prepare(run_root: Path, plan: Plan, resume: str | None, run_id: str | None,
             executor: Executor) -> tuple[RunDir, list[str], int]:
    """The run dir, the units to run, and the launch epoch; nothing is written yet. A resumed run's
    launch lock is taken before its states are read, and held until its units are submitted: two
    resumes at once would otherwise both submit the same units (cl_hpc/rundir/launch_lock.py)."""
    if not resume:
        run = RunDir(run_root / (run_id or new_run_id()))
        if run.path.exists():
            raise ExecutorError(f"run directory {run.path} already exists; pick another launch.run_id or resume it")
        return run, list(plan.units), 0
    run = resolve_run(run_root, resume)
    launch_lock.acquire(run.path)
    statuses = run_status(run)
    live = [k for k, s in statuses.items() if not s.state.terminal]
    if live and not executor.problems(run):
        raise ExecutorError(f"run {run.run_id} is still going ({', '.join(live[:5])} not finished); "
                            f"wait for it, or cancel it with `python -m cl_hpc.cancel {run.run_id}`")
    todo, _ = plan_resume(plan, run.load_plan(), {k: s.state.value for k, s in statuses.items()})
    return run, todo, int(run.meta().get("epoch", 0)) + 1


def _write_run(run: RunDir, plan: Plan, cfg: DictConfig, conf: Config, executor: Executor, epoch: int,
               todo: list[str]) -> None:
    try:
        run.path.mkdir(parents=True, exist_ok=epoch > 0)
    except FileExistsError:  # another launch with the same launch.run_id got there first
        raise ExecutorError(f"run directory {run.path} already exists; pick another launch.run_id or resume it") \
            from None
    launch_lock.acquire(run.path)
    for key in todo:
        run.reset_for_rerun(key)
    name = "config.yaml" if epoch == 0 else f"config.{epoch}.yaml"
    write_text_atomic(run.path / name, OmegaConf.to_yaml(cfg, resolve=True))
    run.save_plan(plan)
    run.record_launch(plan.pipeline, executor.name, epoch, todo, sys.argv[1:], conf.launch.reason, plan.workdir)


def _after_submit(run: RunDir, plan: Plan, executor: Executor, follow_wanted: bool | None, console: Console) -> int:
    wanted = follow_wanted
    if wanted is None:  # local results land on this machine, so waiting is what a user expects
        wanted = console.is_terminal or executor.name in ("local", "inprocess")
    if not wanted and executor.detaches:
        console.print(f"detached; follow it with: python -m cl_hpc.status {run.run_id}", highlight=False)
        return 0
    try:
        statuses = follow(run, executor, console) if executor.detaches else executor.status(run)
        if not console.is_terminal or not executor.detaches:
            console.print(status_table(run, plan, statuses))
        _index(run, plan)
    except KeyboardInterrupt:
        if not executor.detaches:  # inprocess: the run was this process, and it is over
            raise
        for line in interrupted(run):  # Ctrl-C stops the follow, never the detached run: say so
            console.print(line, highlight=False, soft_wrap=True)
        return 130  # the shell's code for a SIGINT exit
    for line in explain(statuses) + executor.problems(run):
        console.print(line, style="red", highlight=False)
    for line in headline(plan, statuses, run):
        console.print(line, highlight=False, soft_wrap=True)
    ok = all(s.state is State.COMPLETED for s in statuses.values())
    console.print(f"run {run.run_id} {'completed' if ok else 'did not complete'}: {run.path}", highlight=False)
    return 0 if ok else 1


def _print_plan(console: Console, plan: Plan, executor: Executor, todo: list[str], resuming: bool) -> None:
    console.print(render_plan(plan, executor.describe(plan)), highlight=False, soft_wrap=True)
    if resuming:
        reused = [k for k in plan.units if k not in todo]
        console.print(f"resume: would run {', '.join(todo) or 'nothing'}; reuse {', '.join(reused) or 'nothing'}",
                      highlight=False)
    console.print("\n```mermaid\n" + mermaid(plan) + "\n```", highlight=False, soft_wrap=True)
    console.print("dry run: nothing was submitted", highlight=False)


def _launch_or_explain(config: Callable[[], DictConfig]) -> int:
    """The launch's exit code; an error a user caused is printed (no traceback) and gives 2."""
    console = make_console()
    try:
        return launch(config(), console)
    except ClHpcError as exc:
        console.print(f"error: {exc}", style="red", highlight=False)
        return 2


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    code = _launch_or_explain(lambda: cfg)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if code and not multirun:  # in a sweep, one failed combination must not stop the others
        sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Hydra's own command line when a flag asks for it (-m, --cfg, --help, -cp ...); otherwise
    one compose through Hydra's compose API. ``@hydra.main`` composes the config twice (once to
    find the run mode), which costs 0.2-0.3 s before the first job is submitted."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg.startswith("-") for arg in argv):
        _hydra_main()
        return
    sys.exit(_launch_or_explain(lambda: _compose(argv)))


def _compose(overrides: list[str]) -> DictConfig:
    from cl_hpc.config.compose import compose_config

    return compose_config(overrides, WHERE)

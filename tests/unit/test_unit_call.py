"""The job's reader of plan.json (cl_hpc/dag/unit_call.py) against Plan, and the job path's imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cl_hpc.dag.build import build_plan
from cl_hpc.dag.model import Plan, Unit
from cl_hpc.dag.unit_call import UnitCall
from cl_hpc.rundir.layout import RunDir

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted([*(ROOT / "tests" / "conf" / "pipeline").glob("*.yaml"),
                    *(ROOT / "cl_hpc" / "conf" / "pipeline").glob("*.yaml"),
                    *(ROOT / "scripts" / "bench_conf" / "pipeline").glob("*.yaml")])


def _plan(path: Path) -> Plan:
    conf = yaml.safe_load(path.read_text())
    if "pipeline" in conf and "tasks" not in conf:  # a file under a `# @package` header
        conf = conf["pipeline"]
    return build_plan(conf, None, workdir="/launch/dir")


def _upstream_as_plan_says(plan: Plan, unit: Unit) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dep in plan.tasks[unit.task].depends_on:
        up = plan.tasks[dep]
        if plan.edge_kind(dep, unit.task) == "corr":
            out[dep] = f"{dep}[{unit.shard}]"
        elif up.foreach is None:
            out[dep] = dep
        else:
            out[dep] = [f"{dep}[{i}]" for i in range(len(up.foreach))]
    return out


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_every_unit_reads_as_the_plan_says(path: Path) -> None:
    plan = _plan(path)
    data = json.loads(json.dumps(plan.to_dict()))  # exactly what a job reads from plan.json
    assert plan.units
    for unit in plan.units.values():
        spec = plan.spec(unit.key)
        call = UnitCall(data, unit.key)
        assert (call.key, call.task, call.shard, call.item) == (unit.key, unit.task, unit.shard, unit.item)
        assert (call.target, dict(call.params)) == (spec.target, dict(spec.params))
        assert call.resources == json.loads(json.dumps(asdict(spec.resources)))
        assert (call.fingerprint, call.config_fp) == (unit.fingerprint, unit.config_fp)
        assert (call.pipeline, call.workdir) == (plan.pipeline, "/launch/dir")
        assert call.upstream == _upstream_as_plan_says(plan, unit)


def test_the_pipelines_cover_every_edge_kind() -> None:
    kinds = {e.kind for path in PIPELINES for e in _plan(path).edges}
    fanouts = [t for path in PIPELINES for t in _plan(path).tasks.values() if t.foreach is not None]
    assert kinds == {"all", "corr"} and fanouts


def test_an_unknown_unit_is_named() -> None:
    data = _plan(ROOT / "scripts" / "bench_conf" / "pipeline" / "bench19.yaml").to_dict()
    with pytest.raises(KeyError, match=r"no unit 'features\[8\]'"):
        UnitCall(data, "features[8]")


PROBE = '''
import sys


def probe(ctx, **params):
    heavy = sorted(m for m in ("typing", "dataclasses", "inspect", "cl_hpc.dag.model") if m in sys.modules)
    return {"heavy": heavy, "upstream": ctx.upstream, "item": ctx.item, "mem_gb": ctx.resources["mem_gb"]}
'''


def test_a_job_runs_its_unit_without_typing_or_dataclasses(tmp_path: Path) -> None:
    """The Slurm job entry, in a fresh interpreter, as a shard of a fan-out with an upstream unit:
    a task that looks at sys.modules when it starts finds neither module loaded (about 10 ms of
    CPU per job, paid by every shard of a fan-out at once)."""
    (tmp_path / "jobprobe.py").write_text(PROBE)
    pipeline = {"name": "probe", "tasks": {
        "fetch": {"target": "jobprobe.probe"},
        "shard": {"target": "jobprobe.probe", "depends_on": ["fetch"], "foreach": ["a", "b"],
                  "resources": {"mem_gb": 0.25}},
    }}
    sys.path.insert(0, str(tmp_path))  # build_plan checks that the target imports
    try:
        plan = build_plan(pipeline, None, workdir=str(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.save_plan(plan)
    run.write_outputs("fetch", {"value": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env.update(SLURM_JOB_ID="41", SLURM_ARRAY_JOB_ID="40", SLURM_ARRAY_TASK_ID="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.execute.slurm.job", str(run.path), "shard", "0", "1:1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    outputs = run.outputs("shard[1]")
    assert outputs == {"heavy": [], "upstream": {"fetch": {"value": 1}}, "item": "b", "mem_gb": 0.25}
    [attempt] = run.attempts("shard[1]")
    assert (attempt["state"], attempt["job_id"]) == ("COMPLETED", "40_1")
    assert (run.task_dir("shard[1]") / "profile.json").exists()  # the profiler ran, light as it is


def test_a_task_context_is_read_only_and_survives_pickle_and_deepcopy(tmp_path: Path) -> None:
    """A plain class now (no dataclasses on the job path): still read-only, and still copyable for a
    DataLoader worker or a spawned process."""
    import copy
    import pickle

    from cl_hpc.context import TaskContext

    ctx = TaskContext(run_id="r1", task="train", key="train[2]", task_dir=tmp_path, run_dir=tmp_path.parent,
                      attempt=3, upstream={"ingest": {"rows": 10}}, item="b", shard=2, resources={"cpus": 4})
    with pytest.raises(AttributeError, match="read-only"):
        ctx.attempt = 4  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        del ctx.key
    for twin in (pickle.loads(pickle.dumps(ctx)), copy.deepcopy(ctx)):
        assert (twin.key, twin.attempt, twin.task_dir, twin.upstream, twin.item, twin.shard, twin.resources) == \
            ("train[2]", 3, tmp_path, {"ingest": {"rows": 10}}, "b", 2, {"cpus": 4})
    assert TaskContext(run_id="r", task="t", key="t", task_dir=tmp_path, run_dir=tmp_path, attempt=1).upstream == {}
    assert "key='train[2]'" in repr(ctx)
    ctx.progress(1, 2, force=True)  # its own throttle state still works behind the read-only front
    assert json.loads((tmp_path / "progress.json").read_text())["done"] == 1


def _crossed(n: int, m: int) -> Plan:
    """Two fan-outs of widths n and m (n != m: an all-to-all edge, not shard-to-shard) and a join."""
    return build_plan({"name": "crossed", "tasks": {
        "a": {"target": "tests.tasks.emit", "foreach": list(range(n))},
        "b": {"target": "tests.tasks.emit", "foreach": list(range(m)), "depends_on": ["a"]},
        "join": {"target": "tests.tasks.emit", "depends_on": ["a", "b"]},
    }}, None)


def test_an_all_to_all_edge_between_fan_outs_keeps_plan_json_linear_in_the_widths() -> None:
    """plan.json grows with N + M, not N x M: every job parses it."""
    small, large = (len(json.dumps(_crossed(n, n + 1).to_dict())) for n in (50, 100))
    assert large / small < 2.5  # linear: ~2; listing every key per unit: ~4
    assert large < 400 * (100 + 101)  # bytes per unit, whatever the widths


@pytest.mark.parametrize("plan", [_crossed(100, 101), *(_plan(p) for p in PIPELINES)],
                         ids=["crossed", *(p.stem for p in PIPELINES)])
def test_plan_json_reads_back_every_units_upstream_keys(plan: Plan) -> None:
    data = json.loads(json.dumps(plan.to_dict()))
    assert Plan.from_dict(data).units == plan.units  # deps included, in order
    old = {**data, "units": [{**u, "deps": list(plan.units[u["key"]].deps)} for u in data["units"]]}
    assert Plan.from_dict(old).units == plan.units  # a plan.json written before: every key listed


def test_a_crossed_plan_stores_each_fan_out_once_and_reads_back_every_upstream_shard() -> None:
    """plan.json names an all-to-all fan-in once ({fanout, shards}); Plan.from_dict expands it back
    to every upstream key in order (UnitCall builds its upstream from the edges, not from deps)."""
    plan = _crossed(100, 101)
    data = json.loads(json.dumps(plan.to_dict()))
    stored = {u["key"]: u["deps"] for u in data["units"]}
    assert stored["join"] == [{"fanout": "a", "shards": 100}, {"fanout": "b", "shards": 101}]
    assert stored["b[7]"] == [{"fanout": "a", "shards": 100}]
    read = Plan.from_dict(data).units
    assert read["join"].deps == (*(f"a[{i}]" for i in range(100)), *(f"b[{i}]" for i in range(101)))
    assert read["b[7]"].deps == tuple(f"a[{i}]" for i in range(100))


def test_plan_json_stores_every_field_of_a_unit() -> None:
    """A field added to Unit reaches plan.json without anyone listing it in the writer (here: a
    Unit with one more field)."""
    noted = make_dataclass("NotedUnit", [("note", str)], bases=(Unit,), frozen=True)
    plan = _crossed(3, 4)
    units = {k: noted(**{f.name: getattr(u, f.name) for f in fields(u)}, note=f"about {k}")
             for k, u in plan.units.items()}
    stored = replace(plan, units=units).to_dict()["units"]
    assert [u["note"] for u in stored] == [f"about {k}" for k in plan.units]
    assert all(set(u) == {f.name for f in fields(noted)} for u in stored)

"""DAG validation, expansion, fingerprints and rendering, on tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from cl_hpc.dag.build import build_plan
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.render import mermaid, render_plan
from cl_hpc.dag.resume import plan_resume
from cl_hpc.errors import DagError, ResourceError

CAP = Capacity("this machine (cluster=local)", cpus=4, mem_gb=8, gpus=1, hint="cluster.cpus=...")
OK = "tests.tasks.emit"


def pipe(**tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "p", "tasks": {name: {"target": OK, **conf} for name, conf in tasks.items()}}


BAD = [
    ("cycle", pipe(a={"depends_on": ["c"]}, b={"depends_on": ["a"]}, c={"depends_on": ["b"]}),
     DagError, ["dependency cycle", "a -> b -> c -> a"]),
    ("self loop", pipe(a={"depends_on": ["a"]}), DagError, ["depends_on lists the task itself"]),
    ("unknown dep", pipe(train={}, evaluate={"depends_on": ["trian"]}), DagError,
     ["unknown task 'trian'", "did you mean 'train'?"]),
    ("missing module", pipe(a={"target": "tests.taskz.emit"}), DagError,
     ["no module named 'tests.taskz'", "did you mean tests.tasks?"]),
    ("missing function", pipe(a={"target": "tests.tasks.emitt"}), DagError,
     ["defines no 'emitt'", "did you mean tests.tasks.emit?"]),
    ("not dotted", pipe(a={"target": "emit"}), DagError, ["not a dotted path"]),
    ("zero memory", pipe(a={"resources": {"mem_gb": 0}}), DagError, ["resources.mem_gb must be > 0, got 0"]),
    ("negative time", pipe(a={"resources": {"time_min": -1}}), DagError, ["time_min must be > 0"]),
    ("zero cpus", pipe(a={"resources": {"cpus": 0}}), DagError, ["cpus must be >= 1"]),
    ("too many gpus", pipe(a={"resources": {"gpus": 2}}), ResourceError,
     ["gpus=2 but this machine (cluster=local) offers at most 1", "cluster.cpus"]),
    ("too much memory", pipe(a={"resources": {"mem_gb": 64}}), ResourceError, ["mem_gb=64 but", "at most 8"]),
    ("gpu_type without gpus", pipe(a={"resources": {"gpu_type": "a100"}}), DagError,
     ["gpu_type='a100' is set but gpus=0"]),
    ("foreach string", pipe(a={"foreach": "shard-1"}), DagError, ["foreach must be a list", "got str 'shard-1'"]),
    ("foreach number", pipe(a={"foreach": 3}), DagError, ["foreach must be a list", "got int 3"]),
    ("foreach empty", pipe(a={"foreach": []}), DagError, ["foreach is an empty list"]),
    ("negative retries", pipe(a={"retries": -1}), DagError, ["retries must be >= 0"]),
    ("no tasks", {"name": "p", "tasks": {}}, DagError, ["has no tasks"]),
]


@pytest.mark.parametrize("name,pipeline,error,fragments", BAD, ids=[c[0] for c in BAD])
def test_bad_pipelines_are_rejected_with_a_clear_message(name: str, pipeline: dict, error: type,
                                                         fragments: list[str]) -> None:
    with pytest.raises(error) as info:
        build_plan(pipeline, CAP)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    if pipeline["tasks"]:
        assert "Nothing was submitted" in message


def test_every_problem_is_reported_at_once() -> None:
    pipeline = pipe(a={"resources": {"mem_gb": 0}}, b={"target": "tests.tasks.nope", "foreach": "x"})
    with pytest.raises(DagError) as info:
        build_plan(pipeline, CAP)
    assert all(s in str(info.value) for s in ("mem_gb must be > 0", "defines no 'nope'", "foreach must be a list"))


def test_planning_the_default_pipeline_imports_no_heavy_library() -> None:
    """Login nodes must not pay for torch/lightning/pynvml: validation reads targets, not imports them
    (every task of the retrain and continual pipelines, and the model contract's light module)."""
    import subprocess
    import sys

    code = (
        "import sys; from cl_hpc.dag.build import build_plan; from cl_hpc.dag.capacity import Capacity; "
        "build_plan({'name': 'p', 'tasks': {t: {'target': f'cl_hpc.tasks.{t}.run'} for t in "
        "('ingest', 'validate', 'train', 'evaluate', 'compare', 'promote')}}, Capacity('x', 4, 8, 0)); "
        "import cl_hpc.learn.contract; "
        "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning', 'pynvml', 'cl_hpc.tasks.train', "
        "'cl_hpc.learn.workload') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


EXPANSION = [
    # (pipeline, expected {unit: deps})
    (pipe(a={}, b={"depends_on": ["a"]}), {"a": (), "b": ("a",)}),
    (pipe(a={"foreach": [1, 2]}, b={"depends_on": ["a"]}), {"a[0]": (), "a[1]": (), "b": ("a[0]", "a[1]")}),
    (pipe(a={"foreach": [1, 2]}, b={"depends_on": ["a"], "foreach": ["x", "y"]}),
     {"a[0]": (), "a[1]": (), "b[0]": ("a[0]",), "b[1]": ("a[1]",)}),
    (pipe(a={"foreach": [1, 2]}, b={"depends_on": ["a"], "foreach": [1, 2, 3]}),
     {"a[0]": (), "a[1]": (), **{f"b[{i}]": ("a[0]", "a[1]") for i in range(3)}}),
    (pipe(a={}, b={"depends_on": ["a"], "foreach": [1, 2]}), {"a": (), "b[0]": ("a",), "b[1]": ("a",)}),
]


@pytest.mark.parametrize("pipeline,expected", EXPANSION)
def test_fanouts_expand_into_units_with_the_right_edges(pipeline: dict, expected: dict) -> None:
    plan = build_plan(pipeline, CAP)
    assert {k: u.deps for k, u in plan.units.items()} == expected


def test_topological_order_is_stable_and_respects_edges() -> None:
    plan = build_plan(pipe(d={"depends_on": ["b", "c"]}, c={"depends_on": ["a"]}, b={"depends_on": ["a"]}, a={}), CAP)
    assert list(plan.tasks) == ["a", "c", "b", "d"]  # ties keep config order


def fp(pipeline: dict) -> dict[str, str]:
    return {k: u.fingerprint for k, u in build_plan(pipeline, CAP).units.items()}


FINGERPRINTS = [
    # (change to b's config, which units' fingerprints change)
    ({"params": {"value": 2}}, {"b", "c"}),
    ({"resources": {"mem_gb": 4}}, set()),  # resources do not change results
    ({"retries": 3}, set()),
]


@pytest.mark.parametrize("change,changed", FINGERPRINTS)
def test_fingerprints_follow_config_and_upstream(change: dict, changed: set[str]) -> None:
    base = pipe(a={}, b={"depends_on": ["a"], "params": {"value": 1}}, c={"depends_on": ["b"]})
    edited = pipe(a={}, b={"depends_on": ["a"], "params": {"value": 1}, **change}, c={"depends_on": ["b"]})
    before, after = fp(base), fp(edited)
    assert {k for k in before if before[k] != after[k]} == changed


def test_plan_round_trips_through_json() -> None:
    from cl_hpc.dag.model import Plan

    plan = build_plan(pipe(a={"foreach": [1, "x"]},
                           b={"depends_on": ["a"], "resources": {"extra": {"exclusive": True}}}), CAP)
    assert Plan.from_dict(plan.to_dict()) == plan


RESUME = [
    # (old states, change, expected todo)
    ({"a": "COMPLETED", "b": "FAILED", "c": "CANCELLED"}, None, ["b", "c"]),
    ({"a": "COMPLETED", "b": "COMPLETED", "c": "COMPLETED"}, None, []),
    ({"a": "COMPLETED", "b": "COMPLETED", "c": "COMPLETED"}, {"value": 9}, ["b", "c"]),
    ({"a": "FAILED", "b": "CANCELLED", "c": "CANCELLED"}, None, ["a", "b", "c"]),
]


@pytest.mark.parametrize("states,change,todo", RESUME)
def test_resume_reruns_failed_changed_and_downstream(states: dict, change: dict | None, todo: list[str]) -> None:
    old = build_plan(pipe(a={}, b={"depends_on": ["a"], "params": {"value": 1}}, c={"depends_on": ["b"]}), CAP)
    new = build_plan(pipe(a={}, b={"depends_on": ["a"], "params": change or {"value": 1}},
                          c={"depends_on": ["b"]}), CAP)
    assert plan_resume(new, old, states)[0] == todo


def test_plan_rendering_shows_deps_resources_fanout_and_backend() -> None:
    shards = {"depends_on": ["src"], "foreach": [1, 2, 3], "resources": {"cpus": 2, "gpus": 1, "gpu_type": "a100"}}
    plan = build_plan(pipe(src={}, shards=shards, more={"depends_on": ["shards"], "foreach": [4, 5, 6]},
                           sink={"depends_on": ["more"], "retries": 2}), CAP)
    text = render_plan(plan, {"shards": "3 subprocesses"})
    assert "pipeline 'p': 4 tasks, 8 units of work" in text
    assert "fan-out    3 shards over [1, 2, 3]" in text
    assert "after      shards (shard-to-shard)" in text
    assert "cpus=2 mem=2G time=30m gpus=1(a100)" in text
    assert "backend    3 subprocesses" in text and "retries    2" in text
    graph = mermaid(plan)
    assert graph.splitlines()[0] == "flowchart LR"
    assert 'shards[["shards ×3"]]' in graph
    assert "shards -.->|per shard| more" in graph and "src --> shards" in graph

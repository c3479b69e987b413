"""ClusterInfo read from the live local cluster, and resource_problems held against Slurm itself.

Every case is also sent to `sbatch --test-only` (a dry submit: Slurm judges the request and
submits nothing) with the options the sbatch renderer would write, so the pre-submit check
rejects exactly what Slurm rejects: never a request Slurm would run, never one it would refuse.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm.cluster import (
    ClusterInfo,
    query_cluster,
    resource_problems,
    run_slurm,
)
from cl_hpc.execute.slurm.sbatch import resource_options

pytestmark = pytest.mark.slurm
KEY = "pipeline.tasks.train.resources"


@pytest.fixture(scope="module")
def info(slurm_cluster: str) -> ClusterInfo:
    return query_cluster()


def sbatch_test_only(res: Resources) -> subprocess.CompletedProcess[str]:
    """Slurm's own verdict on the request, as the renderer would phrase it."""
    options = [f"--{k}" if v is True else f"--{k}={v}" for k, v in resource_options(res).items()]
    argv = ["sbatch", "--test-only", *options, "--wrap", "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_cluster_info_reads_the_local_cluster(info: ClusterInfo, slurm_cluster: str) -> None:
    assert info.default_partition == "debug"
    assert {p.name: p.max_time_min for p in info.partitions} == {"debug": 60.0, "long": 2880.0}
    node = next(n for n in info.nodes if n.name == slurm_cluster)
    assert (node.cpus, node.real_memory_mb, node.gpus, dict(node.gpu_types)) == (8, 20000, 2, {"fake": 2})
    assert set(node.partitions) == {"debug", "long"}
    assert {"default", "research"} <= set(info.accounts) and info.default_account == "default"
    assert "associations" in info.enforce


ACCEPTED: list[dict[str, Any]] = [
    {},
    {"time_min": 60},
    {"time_min": 120, "partition": "long"},
    {"gpus": 1, "gpu_type": "fake"},
    {"gpus": 2},
    {"cpus": 8},
    {"cpus": 2, "tasks_per_node": 4},
    {"mem_gb": 19.5},
    {"account": "research"},
    # AccountingStorageEnforce has no `qos` here, so Slurm takes any QOS name: so must we.
    {"qos": "bogus"},
]

REJECTED: list[tuple[dict[str, Any], list[str]]] = [
    ({"time_min": 120}, [f"{KEY}.time_min=120 exceeds partition 'debug' MaxTime of 60 min",
                         "use time_min<=60 or partition=long (partitions: debug, long)"]),
    ({"time_min": 3000, "partition": "long"}, ["MaxTime of 2880 min"]),
    ({"gpus": 3}, [f"{KEY}.gpus=3", "at most 2 GPUs per node"]),
    ({"gpus": 1, "gpu_type": "a100"}, [f"{KEY}.gpu_type='a100'", "(GPU types: fake)"]),
    ({"cpus": 9}, [f"{KEY}.cpus=9", "at most 8 per node"]),
    ({"cpus": 3, "tasks_per_node": 3}, ["tasks_per_node=3 needs 9 CPUs"]),
    ({"mem_gb": 30}, [f"{KEY}.mem_gb=30", "20000 MB", "use mem_gb<=19.53"]),
    ({"partition": "debgu"}, [f"{KEY}.partition='debgu'", "did you mean 'debug'?"]),
    ({"account": "nope"}, [f"{KEY}.account='nope'", "default", "research"]),
    ({"nodes": 2}, [f"{KEY}.nodes=2", "at most 1 node(s)"]),
    ({"constraint": "foo"}, [f"{KEY}.constraint='foo'", "no node has"]),
]


@pytest.mark.parametrize("resources", ACCEPTED, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items()) or "defaults")
def test_accepted_by_us_and_by_slurm(info: ClusterInfo, resources: dict[str, Any]) -> None:
    res = Resources(**resources)
    assert resource_problems("train", res, info) == []
    verdict = sbatch_test_only(res)
    assert verdict.returncode == 0, f"sbatch --test-only refused what we accept: {verdict.stderr}"


@pytest.mark.parametrize("resources, expected", REJECTED,
                         ids=[",".join(f"{k}={v}" for k, v in r.items()) for r, _ in REJECTED])
def test_rejected_by_us_and_by_slurm(info: ClusterInfo, resources: dict[str, Any], expected: list[str]) -> None:
    res = Resources(**resources)
    text = "\n".join(resource_problems("train", res, info))
    for fragment in expected:
        assert fragment in text
    verdict = sbatch_test_only(res)
    assert verdict.returncode != 0, f"sbatch --test-only accepted what we reject: {verdict.stderr}"


def test_a_failing_command_names_itself_and_its_stderr() -> None:
    with pytest.raises(ExecutorError, match=r"`scontrol show partition nope` failed \(exit 1\): "
                                            r"Partition nope not found.*`sinfo`"):
        run_slurm(["scontrol", "show", "partition", "nope"])

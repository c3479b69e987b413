"""Task ``labels``: one run of the label join (cl_hpc/labels/join.py), so that it runs on Slurm or
from scrontab like any pipeline (conf/pipeline/labels.yaml). It needs no upstream task; its outputs
are the run's report (cl_hpc.labels.report.JoinReport.to_json): partitions written, label coverage,
label delays, late and unmatched outcomes."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cl_hpc.context import TaskContext


def run(ctx: TaskContext, labels: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``labels``: the labels config group as a dict (cl_hpc.config.labels.LabelsConf; None = defaults)."""
    from cl_hpc.labels.join import join

    ctx.progress(0, 1, "joining predictions with outcomes")
    report = join(labels or {})
    ctx.progress(1, 1, f"{len(report.written)} partition(s) written", force=True)
    return report.to_json()

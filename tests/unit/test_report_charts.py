"""The run page's renderer on hand-made records (plain data, as run_data builds them): the parts real CPU
runs on these machines cannot produce: GPU timelines, MFU and stall bars with their diagnosis, a wide
fan-out's Gantt chart, and a running attempt's bar drawn to the report's time."""

from __future__ import annotations

import re

from cl_hpc.report import charts
from cl_hpc.report.pages import render_run
from cl_hpc.report.records import AttemptBar, Limit, RunReport, TaskNode, Timeline, TimeSource

T0 = 1_800_000_000.0


def _report(attempts: list[AttemptBar], timelines: list[Timeline], efficiency: list[dict], finished: bool = True,
            as_of: float = T0 + 100) -> RunReport:
    tasks = [TaskNode("train", [], "COMPLETED", 1, {"COMPLETED": 1})]
    return RunReport("r1", "/runs/r1", "gpu", "slurm", "COMPLETED" if finished else "RUNNING", finished, T0, as_of,
                     tasks, attempts, timelines, efficiency, [], [])


def _row(key: str, mfu: float, stall: float, diagnosis: str) -> dict:
    return {"key": key, "attempt": 1, "state": "COMPLETED", "mem_used_gb": 10.0, "mem_req_gb": 64.0, "mem_eff": 0.16,
            "cpus_used": 7.0, "cpus_req": 8, "cpu_eff": 0.9, "time_used_min": 30.0, "time_req_min": 60,
            "time_eff": 0.5, "mfu_datasheet": mfu, "mfu_ceiling": mfu * 1.4, "stall": stall, "diagnosis": diagnosis,
            "gpu_util_pct": [90.0], "energy_j": 1e6, "segments": 1}


def test_gpu_timelines_and_mfu_per_task_with_the_diagnosis() -> None:
    t = [float(i) for i in range(30)]
    gpu = Timeline("train", 1, t, [400.0] * 30, [9000.0] * 30, 65536.0, 8, gpu_util_pct=[[95.0] * 30],
                   gpu_mem_mb=[[70000.0] * 30], gpu_power_w=[[650.0] * 30])
    attempts = [AttemptBar("train", "train", None, 1, "COMPLETED", T0, T0 + 5, T0 + 95, TimeSource.LOCAL, "7")]
    rows = [_row("train", 0.42, 0.04, "compute-bound: data loading takes 4% of step time")]
    page = render_run(_report(attempts, [gpu], rows))
    figure = re.search(r'<figure class="timeline" data-task="train">(.*?)</figure>', page, re.S)
    assert figure is not None
    for title in ("CPU % (100 = one core)", "RSS MB", "GPU utilisation %", "GPU memory MB", "GPU power W"):
        assert title in figure.group(1), title
    mfu = page[page.index('<section id="mfu">'):page.index("</section>", page.index('<section id="mfu">'))]
    assert "MFU %" in mfu and "train" in mfu and "compute-bound: data loading takes 4% of step time" in mfu


def test_mfu_is_per_task_with_the_spread_of_its_shards() -> None:
    rows = [_row(f"map[{i}]", 0.10 + 0.01 * i, 0.30, "data-bound: the loader") for i in range(5)]
    svg = charts.mfu_stalls(rows)
    assert svg.count("map (5)") == 1  # one row for the task, not five
    page = render_run(_report([], [], rows))
    assert page.count("data-bound: the loader") == 1 and "(5 attempts)" in page


def test_a_wide_fan_out_and_a_running_attempt() -> None:
    attempts = [AttemptBar(f"map[{i}]", "map", i, 1, "COMPLETED", T0, T0 + i, T0 + i + 10, TimeSource.LOCAL)
                for i in range(120)]
    attempts.append(AttemptBar("map[3]", "map", 3, 2, "RUNNING", T0 + 20, T0 + 21, None, TimeSource.LOCAL,
                               limit=None))
    attempts.append(AttemptBar("map[4]", "map", 4, 2, "FAILED", T0 + 20, T0 + 22, T0 + 30, TimeSource.LOCAL,
                               limit=Limit.TIMEOUT, escalation=["time_min 5 -> 10: TIMEOUT"], error="TIMEOUT: limit"))
    svg = charts.gantt(attempts, as_of=T0 + 200)
    assert "122 attempts of 120 units" in svg and "TIMEOUT" in svg and "#2" in svg
    page = render_run(_report(attempts, [], [], finished=False, as_of=T0 + 200))
    assert 'id="still-running"' in page and 'id="retries"' in page
    assert re.search(r'<tr data-unit="map\[4\]" data-attempt="2">.*?time_min 5 -&gt; 10', page, re.S)

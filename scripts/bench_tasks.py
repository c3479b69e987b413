"""Task callables for scripts/bench_dag.py: payloads that cost nothing but the time they are told to.

They return their own wall-clock start and end (epoch seconds, sub-second resolution), so the
benchmark can measure each level's dispatch latency from the payload's point of view: sacct only
records whole seconds.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # a payload as light as the plain side's: no typing (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any

    from cl_hpc.context import TaskContext


def sleep(ctx: TaskContext, seconds: float = 1.0) -> dict[str, Any]:
    """Sleep ``seconds``; report when, where and as which process this unit ran.

    Nothing is imported for it (the host name comes from ``os.uname``, not ``socket``): the plain
    side's payload, ``date; sleep; date``, loads nothing either."""
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "host": os.uname().nodename, "pid": os.getpid(),
            "key": ctx.key}


def hold(ctx: TaskContext, spec: str) -> dict[str, Any]:
    """Touch ``mb`` MiB and hold it for ``seconds``, both read from the JSON file ``spec``: the data a
    task sees grows between runs while its config (and so its right-sizing history) stays the same."""
    import json

    wanted = json.loads(open(spec).read())
    block = b"x" * (int(wanted["mb"]) << 20)  # touched, so it counts in RSS
    time.sleep(float(wanted["seconds"]))
    return {"mb": len(block) >> 20, "seconds": wanted["seconds"], "attempt": ctx.attempt}

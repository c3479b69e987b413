"""`python -m cl_hpc.launch [hydra overrides]`: compose, validate, plan, submit, and (optionally) follow.

Examples::

    python -m cl_hpc.launch                                   # the default pipeline, locally
    python -m cl_hpc.launch launch.dry_run=true               # print the plan and a mermaid graph
    python -m cl_hpc.launch pipeline.tasks.train.resources.mem_gb=8 model.hidden=128
    python -m cl_hpc.launch -m model.hidden=64,128            # one run per combination
    python -m cl_hpc.launch launch.resume=latest              # re-run only what failed or changed

This module is the entry shim only (also ``python -m cl_hpc`` and the ``cl-hpc-launch`` script):
it pauses the cyclic GC before the heavy imports (Hydra, OmegaConf, rich; cl_hpc/gc_pause.py says
why), then runs the launcher (cl_hpc/launcher.py), which resumes it once the DAG is submitted.
Keep it free of imports beyond the standard library's ``gc`` pause.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    from cl_hpc import gc_pause

    gc_pause.pause()
    try:
        from cl_hpc.launcher import main as run  # Hydra, OmegaConf, rich...: with the GC paused

        run(argv)
    finally:  # the launcher resumed it already, unless it failed before submitting
        gc_pause.resume()


if __name__ == "__main__":
    main()

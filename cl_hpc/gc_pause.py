"""The launcher's pause of the cyclic GC: the entry shim (cl_hpc/launch.py) pauses it, the launcher
(cl_hpc/launcher.py) resumes it once the DAG is submitted.

Run as a program, the launcher allocates a few hundred thousand objects before its first sbatch
(the imports, then Hydra's compose, whose OmegaConf nodes hold cycles through their parents) and
frees few of them, so the cyclic GC would walk the same heap again and again: pausing it saves about
10% of the time to the first job, for ~2 MB more at the peak. The flag lives here, not in the shim:
run as ``python -m cl_hpc.launch`` the shim is ``__main__``, and an import of ``cl_hpc.launch``
would be a second copy with a flag of its own.
"""

from __future__ import annotations

import gc

_paused = False  # True only while this module holds the GC off: one the caller disabled stays off


def pause() -> None:
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Turn the GC back on if :func:`pause` turned it off; what follows (the index, following a run
    for hours, a task run in this process) frees as much as it makes."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()

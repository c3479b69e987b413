"""The one door to Slurm: every sbatch, scancel, sacct, scontrol, squeue, sinfo and sacctmgr call.

``run`` sets the timeout, retries slurmctld's transient errors with a growing pause, and raises
one error (:class:`SlurmCommandError`) naming the command, its exit code, its stderr and what to
check. Call sites never build their own ``subprocess`` call; parsers of the output stay pure in
parse.py. The commands are found on PATH, so tests can put a fake Slurm CLI first
(tests/fakes/slurm/) and the real one is never touched.

A job's requeue path imports this module (cl_hpc/execute/runner.py), so it imports neither
``typing`` nor ``dataclasses`` at load: see that module's docstring.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cl_hpc.errors import ExecutorError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TIMEOUT_S = 60.0  # slurmctld answers in ms; its own MessageTimeout is 10 s, a busy slurmdbd more
RETRIES = 3  # after the first try: 4 tries over about 1 + 2 + 4 s of pauses
BACKOFF_S = 1.0  # the pause before the first retry, doubled before each next one
# slurmctld's and the sockets' transient errors, as Slurm 22.05 prints them (slurm_errno.c;
# EAGAIN's strerror): the same command a moment later usually succeeds.
TRANSIENT = (
    "Socket timed out on send/recv operation",
    "Unable to contact slurm controller",  # (connect failure), (send failure), (receive failure)
    "Resource temporarily unavailable",  # EAGAIN: slurmctld busy, e.g. "Batch job submission failed: ..."
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
    "Slurm backup controller in standby mode",
    "Unable to create job record, try again",
    "try again later",  # "Job can not be altered now, try again later"
)
# Of those, the ones where slurmctld may have acted on the request before its answer was lost: an
# sbatch that failed this way may have queued its job, so we look for it before we submit again.
AMBIGUOUS = ("Socket timed out on send/recv operation", "(receive failure)", "Zero Bytes were transmitted or received")
_HINTS = {
    "sbatch": "check the script's #SBATCH lines against `sinfo` and `scontrol show partition`",
    "sacct": "sacct needs slurmdbd: check it with `sacctmgr show cluster`",
    "sacctmgr": "sacctmgr needs slurmdbd: check it with `sacctmgr show cluster`",
}
_DEFAULT_HINT = "check that the cluster is up with `sinfo` (local test cluster: sudo scripts/slurm-local-up.sh)"


class SlurmCommandError(ExecutorError):
    """A Slurm command failed for good (after its retries): what ran, how it ended, what to check."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, tries: int = 1) -> None:
        self.argv = list(argv)
        self.returncode = returncode  # None: it did not answer within its timeout, or could not start
        self.stderr = stderr
        cmd = " ".join(self.argv)
        how = "did not answer" if returncode is None else f"failed (exit {returncode})"
        after = f" after {tries} tries" if tries > 1 else ""
        hint = _HINTS.get(os.path.basename(self.argv[0]) if self.argv else "", _DEFAULT_HINT)
        super().__init__(f"`{cmd}` {how}{after}: {stderr or '(no output)'}; {hint}")

    @property
    def transient(self) -> bool:
        return self.returncode is None or is_transient(self.stderr)

    @property
    def ambiguous(self) -> bool:
        """The answer was lost (a timeout or AMBIGUOUS): slurmctld may have acted on the request."""
        return self.returncode is None or any(marker in self.stderr for marker in AMBIGUOUS)


def is_transient(text: str) -> bool:
    return any(marker in text for marker in TRANSIENT)


def run(argv: Sequence[str], timeout_s: float = TIMEOUT_S, retries: int = RETRIES, backoff_s: float = BACKOFF_S,
        recover: Callable[[SlurmCommandError], str | None] | None = None) -> str:
    """stdout of one Slurm command; its transient errors (and timeouts) are tried again
    ``retries`` times, pausing ``backoff_s``, then twice that, and so on. ``recover`` may answer
    for a try whose answer was lost (:attr:`SlurmCommandError.ambiguous`), the last one included,
    after that try's pause (slurmctld may still be acting on it); its text is returned as the
    command's stdout."""
    tries = 0
    while True:
        tries += 1
        try:
            return _once(argv, timeout_s)
        except SlurmCommandError as exc:
            last = tries > retries
            look = recover is not None and exc.ambiguous
            if not exc.transient or (last and not look):
                raise SlurmCommandError(argv, exc.returncode, exc.stderr, tries) from None
            then = "looking whether it went through" if last else "trying again"
            _pause(argv, exc, backoff_s * 2 ** (tries - 1), then)
            answer = recover(exc) if recover is not None and look else None
            if answer is not None:
                return answer
            if last:
                raise SlurmCommandError(argv, exc.returncode, exc.stderr, tries) from None


def _once(argv: Sequence[str], timeout_s: float) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise ExecutorError(f"`{' '.join(argv)}` failed: {argv[0]} is not on PATH; cluster=slurm needs the "
                            f"Slurm client commands (sbatch, squeue, sacct, scontrol, scancel, sinfo)") from None
    except subprocess.TimeoutExpired:
        raise SlurmCommandError(argv, None, f"no answer within {timeout_s:g} s") from None
    if proc.returncode != 0:
        # scontrol prints some errors ("Partition x not found") on stdout, not stderr.
        raise SlurmCommandError(argv, proc.returncode, proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def _pause(argv: Sequence[str], exc: SlurmCommandError, seconds: float, then: str) -> None:
    last_line = exc.stderr.splitlines()[-1] if exc.stderr else "timeout"
    print(f"cl_hpc: `{argv[0]}` hit a transient Slurm error ({last_line}); {then} in {seconds:g} s",
          file=sys.stderr, flush=True)
    time.sleep(seconds)


def sbatch(script: str | os.PathLike[str], timeout_s: float = TIMEOUT_S, retries: int = RETRIES,
           backoff_s: float = BACKOFF_S) -> str:
    """Submit ``script`` (``sbatch --parsable``); its job id ("123").

    A timeout or lost answer may hide a job slurmctld did queue: before submitting again (and
    before giving up, after the last try), squeue is asked for a job of ours whose command is
    this very script, so a flaky controller never gets the same task twice nor loses a queued one.
    Callers give each submission a script path of its own, so an older job is never adopted.
    """
    from cl_hpc.execute.slurm.parse import parse_job_id

    path = os.path.abspath(script)
    argv = ["sbatch", "--parsable", path]

    def queued(exc: SlurmCommandError) -> str | None:
        return find_submitted(path)

    out = run(argv, timeout_s, retries, backoff_s, recover=queued)
    try:
        return parse_job_id(out)
    except ValueError as exc:
        raise ExecutorError(f"`{' '.join(argv)}` succeeded but {exc}; is the `sbatch` on PATH Slurm's?") from None


def find_submitted(script: str) -> str | None:
    """The id of this user's queued job whose batch script is ``script`` (squeue's %o), if any."""
    try:
        out = run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%o"], retries=1)
    except ExecutorError:
        return None  # cannot tell: submitting again is the lesser harm than never submitting
    ids = [line.split("|", 1)[0] for line in out.splitlines() if line.partition("|")[2].strip() == script]
    return max(ids, key=lambda j: int(j.split("_")[0])).split("_")[0] if ids else None


def live_jobs(job_ids: Sequence[str], timeout_s: float = TIMEOUT_S, retries: int = RETRIES) -> dict[str, str]:
    """{base id: state} of the ``job_ids`` that ``squeue`` still lists (pending, running, ...)."""
    from cl_hpc.execute.slurm.parse import parse_squeue

    bases = sorted({str(j).split("_")[0] for j in job_ids})
    if not bases:
        return {}
    try:
        out = run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(bases)], timeout_s=timeout_s, retries=retries)
    except SlurmCommandError as exc:
        if "Invalid job id" in exc.stderr:  # squeue's answer when the only id asked for is gone
            return {}
        raise
    return {e.base_id: e.state for e in parse_squeue(out) if e.base_id in bases}


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel these jobs (array ids cancel every shard); nothing to do for none."""
    if job_ids:
        run(["scancel", *job_ids])


def scontrol(*args: str) -> str:
    return run(["scontrol", *args])

"""Shared helpers for the model server's tests: a registry of real tiny checkpoints (tabular and
GPT), and a real ``python -m cl_hpc.serve`` subprocess on a loopback port, found through the URL it
prints and waited for by polling its readiness until a deadline."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import httpx
import numpy as np

from tests.conftest import REPO, _env

T = TypeVar("T")
NAME = "demo"  # the tabular model's registry name
FEATURES = ("a", "b", "c")  # its inputs (float64), see tests/unit/test_registry.py make_workload
FAST = ("serve.poll_interval_s=0.2", "serve.flush_interval_s=0.2")
START_S = 60.0  # deadline for a server to print its URL and load its model (2 shared cores, torch import)


def wait_for(check: Callable[[], Optional[T]], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


# ---- the registry ------------------------------------------------------------------------------


def register_tabular(store: Path, seeds: tuple[int, ...] = (0, 1), name: str = NAME,
                     champion: Optional[str] = "1.0", classes: Optional[dict[int, str]] = None) -> list[str]:
    """One stateless version per seed (1.0, 2.0, ...) of the tiny tabular MLP; ``champion`` promoted.
    ``classes``: seed -> another model class for that version (e.g. tests.flaky_model.FlakyClassifier)."""
    from cl_hpc.registry.store import ModelRegistry
    from tests.unit.test_registry import make_checkpoint, make_workload

    versions = []
    with ModelRegistry.open(store) as registry:
        for seed in seeds:
            model_class = (classes or {}).get(seed)
            workload = make_workload(0, model_class=model_class)
            path = store.parent / f"{name}-ckpt{seed}" / "model.pt"
            sha = make_checkpoint(path, seed, model_class=model_class)
            record = registry.register(name, path, strategy="stateless", checkpoint_sha256=sha, workdir=REPO,
                                       model_class=workload.model_target.path, init_args=workload.model_target.args,
                                       datamodule_class=workload.data_target.path,
                                       signature=workload.signature.to_dict())
            versions.append(str(record.version))
        if champion:
            registry.promote(name, champion, reason="test champion")
    return versions


def register_gpt(store: Path, name: str = "gpt", vocab: int = 16, seq: int = 8) -> list[str]:
    """An untrained tiny GPT (1 layer, d_model 16) on uniform tokens, promoted champion; returns its
    input names (tok_000 .. tok_<seq-1>)."""
    import pandas as pd

    from cl_hpc.learn.checkpoint import save_workload
    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.tokens import TokenData
    from cl_hpc.learn.workload import Workload, model_for
    from cl_hpc.registry.store import ModelRegistry

    tokens = np.random.default_rng(0).integers(0, vocab, size=(64, seq + 1))
    frame = pd.DataFrame({f"tok_{i:03d}": tokens[:, i] for i in range(seq + 1)})
    data_target = Target("cl_hpc.learn.tokens.TokenData", {"vocab_size": vocab})
    data = TokenData(vocab_size=vocab)
    data.fit_state(frame)
    model, built = model_for(Target("cl_hpc.learn.gpt.GPT", {"d_model": 16, "n_layers": 1, "n_heads": 2}), data)
    workload = Workload(model, data, built, data_target)
    path = store.parent / f"{name}-ckpt" / "model.pt"
    sha = save_workload(path, workload, {"window_digest": "test"})
    with ModelRegistry.open(store) as registry:
        record = registry.register(name, path, strategy="stateless", checkpoint_sha256=sha, workdir=REPO,
                                   model_class=built.path, init_args=built.args, datamodule_class=data_target.path,
                                   signature=workload.signature.to_dict())
        registry.promote(name, record.version, reason="test champion")
    return [s.name for s in workload.signature.inputs]


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the repo root, as a user runs it; its failure fails the test with its output."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def row(seed: int = 0) -> dict[str, float]:
    values = np.random.default_rng(seed).normal(size=len(FEATURES))
    return {name: float(v) for name, v in zip(FEATURES, values)}


# ---- the server ----------------------------------------------------------------------------------


def serve_command(store: Path, *overrides: str) -> list[str]:
    """The command line; ``overrides`` replace the defaults of the same key (Hydra refuses a key twice)."""
    given = {o.split("=", 1)[0] for o in overrides}
    defaults = [o for o in ("serve.port=0", f"store.root={store}", *FAST) if o.split("=", 1)[0] not in given]
    return [sys.executable, "-m", "cl_hpc.serve", *defaults, *overrides]


@dataclass
class Server:
    """A running ``python -m cl_hpc.serve``; stdout and stderr go to files (a full pipe would stall it)."""

    proc: subprocess.Popen[bytes]
    url: str
    store: Path
    out: Path
    err: Path

    @classmethod
    def start(cls, store: Path, *overrides: str, ready: bool = True) -> "Server":
        """Start it and wait for its URL; with ``ready``, also until /v2/health/ready says 200."""
        logs = store.parent / f"serve-{time.monotonic_ns()}"
        logs.mkdir(parents=True)
        out, err = logs / "stdout", logs / "stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(serve_command(store, *overrides), cwd=REPO, env=_env(), stdout=stdout,
                                    stderr=stderr)
        server = cls(proc, "", store, out, err)
        server.url = wait_for(server._printed_url, START_S, "the server's 'serving ... at <url>' line")
        if ready:
            server.wait_ready()
        return server

    def _printed_url(self) -> Optional[str]:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited {self.proc.returncode} before serving:\n{self.output()}")
        for line in self.out.read_text().splitlines():
            if line.startswith("serving ") and " at http://" in line:
                return line.split(" at ", 1)[1].split()[0]
        return None

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/v2/health/ready", timeout=10)

    def wait_ready(self, timeout_s: float = START_S) -> dict[str, Any]:
        return wait_for(lambda: (got := self.health()).status_code == 200 and got.json(), timeout_s,
                        f"{self.url}/v2/health/ready to answer 200")

    def wait_settled(self, timeout_s: float = START_S) -> dict[str, Any]:
        """The readiness body once the first load finished, ready or not."""
        return wait_for(lambda: (body := self.health().json())["state"] != "loading" and body, timeout_s,
                        f"{self.url} to finish loading")

    def discovery_files(self) -> list[Path]:
        return [p for p in (self.store / "servers").glob("*.json") if p.stem.endswith(f"-{self.proc.pid}")]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the server did not stop within {timeout_s} s of {signal.Signals(sig).name}:\n"
                                 f"{self.output()}") from None

    def close(self) -> None:
        """SIGTERM; it must drain and exit 0 with no traceback in its log."""
        code = self.stop()
        assert code == 0 and "Traceback" not in self.err.read_text(), f"exit code {code}:\n{self.output()}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the /metrics samples of ``name`` whose labels include ``labels`` (0 when none)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(sample.value) for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))

"""GPU check of the profiler (issue 4): bf16 training of a small GPT-like transformer under the
profiler, big enough to load an H100, then everything the profile says next to independent figures.

It prints: the device and its datasheet peak; MFU against the datasheet peak and against the
measured matmul ceiling; an independent cross-check (analytic 6N + 12LHQT FLOPs over the fit's own
wall time, taken with torch.cuda.synchronize, against the profiler's counted FLOPs and event-timed
steps); NVML samples (utilization, power, SM clock, GPM tensor activity); energy; stall fraction.

Without a GPU it runs a small model in fp32 on the CPU and says so: the figures then describe the
CPU, and the datasheet MFU is absent (there is no CPU datasheet table).

    bash scripts/gpu_check.sh            # or: python scripts/gpu_check.py --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cl_hpc.learn.gpt import GPT, transformer_spec_of  # noqa: E402
from cl_hpc.profile.flops import transformer_step_flops  # noqa: E402
from cl_hpc.profile.task import ProfileSettings, TaskProfiler  # noqa: E402

GPU_SIZE = dict(vocab=32768, d=2048, layers=8, heads=16, seq=1024, batch=16)  # ~0.5 B params: loads an H100
CPU_SIZE = dict(vocab=512, d=128, layers=2, heads=4, seq=64, batch=8)


class CountedGPT(GPT):
    """The packaged GPT without its transformer_spec, so the profiler counts its FLOPs with torch's
    FlopCounterMode: the analytic 6N + 12LHQT figure below then stays an independent check."""

    transformer_spec = None  # type: ignore[assignment]


class WallClock(pl.Callback):
    """The independent timer of the cross-check: synchronizes twice (after the warm-up and at the
    end), never per step, so it measures what the GPU did between the two, data waits included."""

    def __init__(self, skip: int) -> None:
        self.skip, self.t0, self.t1, self.steps = skip, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object, i: int) -> None:
        if trainer.global_step == self.skip:
            _sync()
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        _sync()
        self.t1, self.steps = time.perf_counter(), trainer.global_step - self.skip


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 300 on GPU, 40 on CPU)")
    parser.add_argument("--out", type=Path, default=None, help="where profile.json goes (default: a temp dir)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    size = GPU_SIZE if cuda else CPU_SIZE
    steps = args.steps or (300 if cuda else 40)
    print(f"gpu_check: {'GPU ' + torch.cuda.get_device_name(0) if cuda else 'NO GPU: running on CPU'}; "
          f"torch {torch.__version__}; model {size}; {steps} steps")
    torch.manual_seed(0)
    model = CountedGPT(size["vocab"], size["seq"], d_model=size["d"], n_layers=size["layers"], n_heads=size["heads"],
                       lr=3e-4, weight_decay=0.01)
    tokens = torch.randint(0, size["vocab"], (size["batch"] * steps, size["seq"] + 1))
    loader = DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=size["batch"], num_workers=2,
                        pin_memory=cuda, persistent_workers=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check."))
    prof = TaskProfiler(out, {"run_id": "gpu_check", "key": "train", "task": "train", "attempt": 1, "segment": 0},
                        {"gpus": int(cuda), "cpus": 4}, ProfileSettings(interval_s=0.5)).start()
    trainer = pl.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_steps=steps,
                         precision="bf16-mixed" if cuda else "32-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[clock := WallClock(skip=10), prof.lightning_callback()])
    prof.note(num_workers=2, batch_size=size["batch"])
    trainer.fit(model, loader)
    prof.fit_done(trainer, model)
    data = prof.finish("COMPLETED")
    analytic = transformer_step_flops(transformer_spec_of(model), size["batch"]).flops
    show(data, analytic, clock.steps, clock.t1 - clock.t0, out)
    return 0


def show(data: dict, analytic: float, steps: int, wall: float, out: Path) -> None:
    c, s = data["compute"] or {}, data["steps"] or {}
    counted = c.get("flops_per_step")
    print(f"device {c.get('device_name')} dtype {c.get('dtype')}: datasheet peak {_t(c.get('peak_flops_per_s'))}, "
          f"measured ceiling {_t(c.get('ceiling_flops_per_s'))}")
    print(f"FLOPs/step: counted {counted:.4g} ({c.get('flops_method')}), analytic 6N+12LHQT {analytic:.4g}, "
          f"ratio {counted / analytic:.3f}" if counted else f"FLOPs not counted: {c.get('why')}")
    print(f"steady step p50 {s.get('step_p50_s', 0) * 1e3:.1f} ms over {s.get('steady_steps')} steps; "
          f"achieved {_t(c.get('achieved_flops_per_s'))}")
    print(f"MFU: datasheet {_p(c.get('mfu_datasheet'))}, measured ceiling {_p(c.get('mfu_ceiling'))}")
    cross = analytic * steps / wall
    print(f"cross-check: analytic FLOPs x {steps} steps / {wall:.2f} s between two synchronizes = {_t(cross)}, "
          f"against the profiler's {_t(c.get('achieved_flops_per_s'))} (counted FLOPs / event-timed p50 step): "
          f"ratio {cross / c['achieved_flops_per_s']:.3f}" if c.get("achieved_flops_per_s") else "cross-check: -")
    print(f"stall fraction {_p(data['stall']['fraction'])}: {data['stall']['diagnosis']}")
    print(f"memory peak {data['memory']['peak_mb']:.0f} MB ({data['memory']['source']}); GPU sampling: "
          f"{data['notes']['gpu_sampling']}")
    for i, g in enumerate(data["gpus"]):
        print(f"gpu{i} {g['name']}: util {g['util_pct_mean']}, power {g['power_w_mean']} W, SM clock "
              f"{g['sm_clock_mhz_mean']} MHz, tensor active {g['tensor_active_pct_mean']}%, DRAM bw "
              f"{g['dram_bw_pct_mean']}%, energy {g['energy_j']} J ({g['energy_source']}), throttle "
              f"{g['throttle_reasons_seen']}")
    series = data["series"] or {}
    print("samples (t s, gpu0 util %, gpu0 W):",
          json.dumps(list(zip(series.get("t", []), series.get("gpu0.util_pct", []),
                              series.get("gpu0.power_w", [])))[:20]))
    print(f"profile: {out / 'profile.json'}")


def _t(value: float | None) -> str:
    return "-" if not value else f"{value / 1e12:.2f} TFLOP/s"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())

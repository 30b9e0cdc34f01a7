"""What both GPU checks share (``gpu/check.py`` for NeMo, ``gpu/check_bridge.py`` for Megatron-Bridge): timed
phases whose results or tracebacks are written to ``$OUT/gpu_report.json`` as each ends, the synthetic corpus,
and TensorBoard scalars read back. Imports no training stack.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRY = "--dry" in sys.argv
BUDGET_S = float(os.environ.get("MLSL_GPU_BUDGET_S", "420"))  # leave time for install, imports and the copy back
WORK = Path(os.environ.get("MLSL_GPU_WORK") or tempfile.mkdtemp(prefix="mlsl-gpu-"))
OUT = Path(os.environ.get("OUT") or WORK / "out")
T0 = time.time()
REPORT: dict = {"dry": DRY, "phases": {}}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16
RATIOS = {"amber": 0.4, "cobalt": 0.3, "jade": 0.2, "ruby": 0.1}
SMALL = ["model.seq_length=512", "train.global_batch_size=32", "train.micro_batch_size=8", "train.val_every=100",
         "train.val_samples_per_language=64", "train.warmup_steps=20"]


def log(*a) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_report.json").write_text(json.dumps(REPORT, indent=1, default=str))


def phase(name: str, fn) -> bool:
    t = time.time()
    log("BEGIN", name)
    try:
        REPORT["phases"][name] = {"ok": True, "result": fn()}
    except BaseException as e:  # noqa: BLE001 - record and go on to the next phase
        REPORT["phases"][name] = {"ok": False, "error": repr(e)[:2000], "trace": traceback.format_exc()[-6000:]}
        log("FAILED", name, repr(e)[:300])
    REPORT["phases"][name]["seconds"] = round(time.time() - t, 1)
    save()
    log("END", name)
    return REPORT["phases"][name]["ok"]


for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
    os.environ.setdefault(key, value)

def corpus() -> dict:
    from nemo_mlsl.cli import main as mlsl

    docs = "300" if DRY else "3000"
    assert mlsl(["synth", "--out", str(WORK / "raw"), "--families", "4", "--docs", docs, "--seed", "1"]) == 0
    assert mlsl(["prepare", "--input", str(WORK / "raw"), "--families", str(WORK / "raw" / "families.yaml"), "--out",
                 str(WORK / "data"), "--vocab-size", "512" if DRY else "4000"]) == 0
    return json.loads((WORK / "data" / "manifest.json").read_text())["families"]


def scalars(d: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for e in glob.glob(f"{d}/**/events.out.tfevents*", recursive=True):
        acc = EventAccumulator(e, size_guidance={"scalars": 0})
        acc.Reload()
        for t in acc.Tags().get("scalars", []):
            ev = acc.Scalars(t)
            out[t] = [ev[-1].step, ev[-1].value]
    return out


THROUGHPUT_RUNG = "he2024_1b2"
THROUGHPUT_OVERRIDES = ["model.seq_length=2048", "train.global_batch_size=32", "train.micro_batch_size=4", "train.warmup_steps=5"]


def throughput_figures(step_times: list[float], impl: str | None) -> dict:
    """Median step time after 5 warm-up steps → tokens/s, MFU against the GPU's dense bf16 peak, peak memory."""
    import torch

    from nemo_mlsl.recipes import load

    r = load(THROUGHPUT_RUNG, THROUGHPUT_OVERRIDES, num_nodes=1, gpus_per_node=1)
    steady = sorted(step_times[5:])
    step_s = steady[len(steady) // 2]
    tokens_s = r.train.global_batch_size * r.train.seq_length / step_s
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    flops = r.params(json.loads((WORK / "data" / "manifest.json").read_text())["tokenizer"]["vocab_size"]).flops_per_token
    return {"rung": THROUGHPUT_RUNG, "gpu": name, "step_s": step_s, "tokens_per_s": tokens_s, "transformer_impl": impl,
            "mfu": flops * tokens_s / (peak * 1e12) if peak else None, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}

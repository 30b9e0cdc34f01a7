"""Where a job runs on a host: a free rendezvous port per process, and a share of the host's GPUs per job.

Two jobs on one host must not share a ``MASTER_PORT`` (the second cannot bind it) nor, unless asked, GPUs
(K concurrent runs on the same devices run out of memory or crawl): each gets its own port and its own slice
of the visible GPUs, handed over as ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from nemo_mlsl.errors import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it), for one process's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def single_process_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The rendezvous variables torchrun would set for a world of one, on a free port (kept where already set)."""
    env = dict(os.environ if env is None else env)
    defaults = {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    out = {k: env.get(k, v) for k, v in defaults.items()}
    out["MASTER_PORT"] = env.get("MASTER_PORT") or str(free_port())
    return out


def visible_gpus(env: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``0..count-1`` (``count`` defaults to
    what torch sees; 0 without torch or CUDA)."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    if count is None:
        try:
            import torch

            count = torch.cuda.device_count()
        except ImportError:
            count = 0
    return [str(i) for i in range(count)]


def gpu_slices(gpus: list[str], gpus_per_run: int, concurrent: int) -> list[str]:
    """``concurrent`` disjoint ``CUDA_VISIBLE_DEVICES`` values of ``gpus_per_run`` GPUs each, taken in order."""
    need = gpus_per_run * concurrent
    if need > len(gpus):
        raise ConfigError(f"executor: --max-parallel {concurrent} x gpus_per_run {gpus_per_run} = {need} GPUs, but this host "
                          f"has {len(gpus)} visible ({','.join(gpus) or 'none'}): lower --max-parallel or gpus_per_run, "
                          "or set CUDA_VISIBLE_DEVICES")
    return [",".join(gpus[i * gpus_per_run:(i + 1) * gpus_per_run]) for i in range(concurrent)]

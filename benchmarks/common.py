"""What several benchmarks share: Welch's t-test over seeds, and one run in a fresh one-thread process."""

from __future__ import annotations

import json
import math
import os
import subprocess
from typing import Any

import numpy as np

__all__ = ["launch", "welch"]


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t of ``a`` − ``b`` and its two-sided p; ``(nan, nan)`` with fewer than two values a side or when both
    sides are constant (no spread to test)."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2 or np.std(a) + np.std(b) == 0:
        return math.nan, math.nan
    t, p = ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def launch(cmd: list[str], what: str) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process with one BLAS / OpenMP thread; its result is the JSON object on the last line
    of its output (a ``RuntimeError`` naming ``what`` with the tail of its errors when it fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: the prompt of the LoRA-update benchmarks' rollouts
LORA_PROMPT = "a fresh medium bowl-shaped crater, lit from the west, high sun"


def lora_job_rollout() -> tuple[Any, Any, Any, Any, Any]:
    """The crater job's LoRA update as the benchmarks time it: ``(config, components, policy, TRPO agent, rollout)``
    with the job's defaults on the embedded model (seed 0), one batch of :data:`LORA_PROMPT`, a reward of the images'
    mean (the update's cost does not depend on the reward)."""
    from dataclasses import replace

    import torch

    from natgrad_diffusion.core.config import SAMPLING, TRAINING
    from natgrad_diffusion.sampling.models import load_model
    from natgrad_diffusion.sampling.policies import make_policy
    from natgrad_diffusion.training.agents import TRPOAgent
    from natgrad_diffusion.training.checks import resolve_defaults

    cfg = resolve_defaults(TRAINING)
    comps = load_model(None)
    torch.manual_seed(0)
    policy = make_policy("lora", comps, **cfg.policy_options)
    sampling = replace(SAMPLING, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, eta=cfg.eta,
                       images_per_prompt=cfg.images_per_prompt)  # fmt: skip
    agent = TRPOAgent(comps, policy, lambda im, p: im.mean(dim=(1, 2, 3)), sampling=sampling,
                      trust_region=cfg.trust_region, chunks=cfg.chunks)  # fmt: skip
    rollout = agent.collect([LORA_PROMPT] * (cfg.batch_size // cfg.images_per_prompt))
    return cfg, comps, policy, agent, rollout


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``, ...); -1 where it cannot be read."""
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) through ``/proc/self/clear_refs``; False where it cannot."""
    from pathlib import Path

    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False

"""Run logs: metrics.jsonl (one object per logged step), TensorBoard events, progress with ETA.

Only process 0 writes; every process computes.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np


def _scalar(v: Any) -> float:
    return float(np.asarray(v))


class RunLogger:
    def __init__(self, workdir: str, total_steps: int, start_step: int, progress: bool = True, desc: str = "train"):
        self.enabled = jax.process_index() == 0
        self.total, self.start = total_steps, start_step
        self.t0 = self._t_last = time.time()
        self._step_last = start_step
        self._bar = None
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        except Exception:  # TensorBoard is optional
            self._tb = None
        if progress:
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True,
                             mininterval=1.0, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log(self, step: int, metrics: dict[str, Any], images_per_step: int) -> dict[str, float]:
        now = time.time()
        dt = max(now - self._t_last, 1e-9)
        rate = (step - self._step_last) * images_per_step / dt
        self._t_last, self._step_last = now, step
        row = {"step": int(step)}
        for k, v in metrics.items():
            val = _scalar(v)
            row[k] = val if math.isfinite(val) else str(val)
        row["images_per_sec"] = rate
        row["time"] = now - self.t0
        if not self.enabled:
            return row
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}", img_s=f"{rate:.0f}", refresh=False)
        else:
            done = step - self.start
            eta = (now - self.t0) / max(done, 1) * (self.total - step)
            print(f"step {step}/{self.total} loss {row.get('loss')} {rate:.1f} img/s ETA {eta:.0f}s", flush=True)
        return row

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()

"""Structured training logs: JSONL (always), TensorBoard (default), wandb and the live view (optional)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.live_view import LiveView


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Device arrays and numpy scalars -> python floats (one host transfer per call)."""
    import jax

    host = jax.device_get(dict(metrics))
    return {k: float(np.asarray(v)) for k, v in host.items()}


class MetricsLogger:
    def __init__(
        self,
        directory: str | Path,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        wandb_config: Mapping[str, Any] | None = None,
        view: LiveView | None = None,
        timeline: str = "env_step",
    ) -> None:
        """``view``: the live view every record is mirrored to, on ``timeline``."""
        self.view, self.timeline = view, timeline
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.directory / "tensorboard"))
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError(
                    "wandb logging was asked for but wandb is not installed: the cpu and cuda profiles have it "
                    "(launch/install.sh cpu|cuda; the robot profile does not)"
                ) from e
            self._wandb = wandb.init(project=wandb_project, config=dict(wandb_config or {}), dir=str(self.directory))

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        scalars = to_scalars(metrics)
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        record.update({f"{prefix}{k}": (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"{prefix}{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}{k}": v for k, v in scalars.items()}, step=step)
        if self.view is not None:
            self.view.at(self.timeline, step)
            self.view.scalars(prefix.rstrip("/") or "metrics", scalars)

    def event(self, text: str, level: str = "INFO") -> None:
        """A line for the live view's event log (the run's own record is the caller's)."""
        if self.view is not None:
            self.view.event(text, level)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self.view is not None:
            self.view.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Replace a small JSON status file so that readers never see a half-written one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(data), indent=1))
    os.replace(tmp, path)

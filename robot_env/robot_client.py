"""HTTP client for the SERL-compatible Franka robot server (docs/architecture.md, "The robot server").

Every call is a POST with a timeout; any failure (refused connection, time-out, HTTP error,
a malformed answer) is a ``RobotServerError`` that names the endpoint and the cause, so the
env can end the episode safely instead of hanging. The gripper reading is normalised here,
and only here, to 0 (closed) .. 1 (open), whatever units the server speaks.
"""

from __future__ import annotations

import io
import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

STATE_FIELDS = {"pose": 7, "vel": 6, "force": 3, "torque": 3}


class RobotServerError(RuntimeError):
    """The robot server could not be reached or answered badly; the message says which call."""


class RobotClient:
    def __init__(
        self, url: str, timeout: float = 0.5, gripper_open_raw: float = 1.0, joint_reset_timeout: float = 35.0
    ) -> None:
        """``gripper_open_raw``: what the server reports for a fully open gripper (1.0 for
        servers that normalise, 255 for raw Robotiq units, 0.08 for the Franka hand's metres)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"robot server url must start with http://, got {url!r}")
        if gripper_open_raw <= 0:
            raise ValueError("gripper_open_raw must be positive")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.gripper_open_raw = float(gripper_open_raw)
        self.joint_reset_timeout = float(joint_reset_timeout)

    # ------------------------------------------------------------------------------ raw call

    def post(self, path: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None) -> bytes:
        body = json.dumps(dict(payload)).encode() if payload is not None else b""
        req = urllib.request.Request(
            f"{self.url}/{path.lstrip('/')}", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        t = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=t) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace").strip()
            raise RobotServerError(f"robot server {path}: HTTP {e.code} {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RobotServerError(
                f"robot server {path} at {self.url}: {type(reason).__name__}: {reason} (timeout {t:.2f} s)"
            ) from None

    # ------------------------------------------------------------------------------- verbs

    def get_state(self) -> dict[str, Any]:
        """The raw state of ``robot_env.contract``: ``pose`` (7), ``vel`` (6), ``force``,
        ``torque`` (3), ``gripper_pos`` normalised (1 = open)."""
        raw = self.post("getstate")
        try:
            data = json.loads(raw)
            out: dict[str, Any] = {}
            for name, size in STATE_FIELDS.items():
                a = np.asarray(data[name], np.float64).reshape(-1)
                if a.shape != (size,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"'{name}' must be {size} finite numbers, got {data[name]!r}")
                out[name] = a
            out["gripper_pos"] = self.normalise_gripper(float(data["gripper_pos"]))
        except (ValueError, KeyError, TypeError) as e:
            raise RobotServerError(f"robot server getstate: malformed state ({type(e).__name__}: {e})") from None
        return out

    def normalise_gripper(self, raw: float) -> float:
        if not math.isfinite(raw):
            raise ValueError(f"gripper_pos {raw!r} is not finite")
        return float(np.clip(raw / self.gripper_open_raw, 0.0, 1.0))

    def command_pose(self, pose7: np.ndarray) -> None:
        pose7 = np.asarray(pose7, np.float64)
        if pose7.shape != (7,) or not np.all(np.isfinite(pose7)):
            raise ValueError(f"refusing to send pose {pose7!r}: it must be 7 finite numbers")
        self.post("pose", {"arr": pose7.tolist()})

    def clear_error(self) -> None:
        self.post("clearerr")

    def start_impedance(self) -> None:
        self.post("startimp")

    def stop_impedance(self) -> None:
        self.post("stopimp")

    def joint_reset(self) -> None:
        """Move to the reset joint configuration; the server blocks while the arm moves."""
        self.post("jointreset", timeout=self.joint_reset_timeout)

    def update_params(self, params: Mapping[str, float]) -> None:
        self.post("update_param", dict(params))

    def close_gripper(self) -> None:
        self.post("close_gripper")

    def open_gripper(self) -> None:
        self.post("open_gripper")

    def move_gripper(self, opening: float) -> None:
        """``opening`` normalised 0 (closed) .. 1 (open), sent in the server's units."""
        if not 0.0 <= opening <= 1.0:
            raise ValueError(f"gripper opening must be in [0, 1], got {opening}")
        self.post("move_gripper", {"gripper_pos": opening * self.gripper_open_raw})

    def set_load(self, mass: float, center: tuple[float, float, float], inertia: tuple[float, ...]) -> None:
        if len(center) != 3 or len(inertia) != 9:
            raise ValueError("set_load needs a 3-D centre of mass and a 9-element inertia")
        self.post(
            "set_load",
            {
                "mass": float(mass),
                "F_x_center_load": list(map(float, center)),
                "load_inertia": list(map(float, inertia)),
            },
        )

    # ------------------------------------------------------------- the simulated server only

    def camera_frames(self, size: int) -> dict[str, np.ndarray]:
        """Frames of the simulated server's wrist cameras (its side channel; a real robot server
        has none: real frames come from the RealSense cameras)."""
        raw = self.post("cameras", {"size": int(size)}, timeout=max(self.timeout, 2.0))
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception as e:
            raise RobotServerError(f"robot server cameras: malformed frames ({type(e).__name__}: {e})") from None

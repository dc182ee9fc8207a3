"""HTTP client for the SERL-compatible Franka robot server (docs/architecture.md, "The robot server").

Every call is a POST with a timeout; any failure (refused connection, time-out, HTTP error,
a malformed answer) is a ``RobotServerError`` that names the endpoint and the cause, so the
env can end the episode safely instead of hanging. A call that failed on the way (time-out,
dropped connection, HTTP 5xx) is tried once more when it is safe to repeat (every call but the
joint reset: a pose is absolute, so sending it twice moves nowhere new). Flask's HTML error
pages are reduced to their title. The gripper reading is converted here, and only here, to
0 (closed) .. 1 (open) by the server's flavour (``robot_env/gripper.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from robot_env.contract import RobotEnvError
from robot_env.gripper import GripperUnits

STATE_FIELDS = {"pose": 7, "vel": 6, "force": 3, "torque": 3}


class RobotServerError(RobotEnvError):
    """The robot server could not be reached or answered badly; the message says which call."""


def _detail(body: bytes) -> str:
    """An error body as one short line: an HTML page by its title, text as it is."""
    text = body[:2000].decode(errors="replace")
    title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
    if title or "<html" in text.lower():
        return f"(HTML page) {title.group(1).strip() if title else ''}".strip()
    return text.strip()[:300]


class RobotClient:
    def __init__(
        self,
        url: str,
        timeout: float = 0.5,
        gripper: GripperUnits | None = None,
        joint_reset_timeout: float = 60.0,
        retries: int = 1,
    ) -> None:
        """``gripper``: the server's gripper units (default ``normalised``). ``joint_reset_timeout``
        covers the real server's worst case (about 43 s: it stops impedance, waits up to 30 s for
        the joints, restarts impedance). ``retries``: extra tries of a call that failed on the way."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"robot server url must start with http://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.gripper = gripper or GripperUnits("normalised")
        self.joint_reset_timeout = float(joint_reset_timeout)
        self.retries = int(retries)
        self.retried = 0  # calls that succeeded only on a retry

    @contextlib.contextmanager
    def patient(self, retries: int) -> Iterator[None]:
        """More tries per call inside the block (a reset: dozens of calls, any of which may fail
        on a flaky network, all of them safe to repeat)."""
        before, self.retries = self.retries, max(self.retries, retries)
        try:
            yield
        finally:
            self.retries = before

    # ------------------------------------------------------------------------------ raw call

    def post(
        self, path: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None, retry: bool = True
    ) -> bytes:
        tries = 1 + (self.retries if retry else 0)
        for attempt in range(tries):
            try:
                out = self._post_once(path, payload, timeout)
            except _Transient as e:
                if attempt + 1 < tries:
                    continue
                raise RobotServerError(str(e)) from None
            if attempt:
                self.retried += 1
            return out
        raise AssertionError("unreachable")

    def _post_once(self, path: str, payload: Mapping[str, Any] | None, timeout: float | None) -> bytes:
        body = json.dumps(dict(payload)).encode() if payload is not None else b""
        req = urllib.request.Request(
            f"{self.url}/{path.lstrip('/')}", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        t = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=t) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            msg = f"robot server {path}: HTTP {e.code} {_detail(e.read())}"
            if e.code >= 500:
                raise _Transient(msg) from None
            raise RobotServerError(msg) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Transient(
                f"robot server {path} at {self.url}: {type(reason).__name__}: {reason} (timeout {t:.2f} s)"
            ) from None

    # ------------------------------------------------------------------------------- verbs

    def get_state(self) -> dict[str, Any]:
        """The raw state of ``robot_env.contract``: ``pose`` (7), ``vel`` (6), ``force``,
        ``torque`` (3), ``gripper_pos`` as an opening (0 = closed, 1 = open), and
        ``gripper_raw``, the server's own number."""
        raw = self.post("getstate")
        try:
            data = json.loads(raw)
            out: dict[str, Any] = {}
            for name, size in STATE_FIELDS.items():
                a = np.asarray(data[name], np.float64).reshape(-1)
                if a.shape != (size,) or not np.all(np.isfinite(a)):
                    raise ValueError(f"'{name}' must be {size} finite numbers, got {data[name]!r}")
                out[name] = a
            raw_gripper = float(data["gripper_pos"])
            out["gripper_pos"] = self.gripper.opening(raw_gripper)
            out["gripper_raw"] = raw_gripper
        except (ValueError, KeyError, TypeError) as e:
            raise RobotServerError(f"robot server getstate: malformed state ({type(e).__name__}: {e})") from None
        return out

    def get_gripper_raw(self) -> float:
        """The server's own gripper number (``gripper_pos`` of ``/getstate``), unconverted."""
        return float(self.get_state()["gripper_raw"])

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
        """Move to the reset joint configuration; the server blocks while the arm moves. Never
        repeated on a failure: the arm may still be moving."""
        self.post("jointreset", timeout=self.joint_reset_timeout, retry=False)

    def update_params(self, params: Mapping[str, float]) -> None:
        self.post("update_param", dict(params))

    def close_gripper(self) -> None:
        self.post("close_gripper")

    def activate_gripper(self) -> None:
        """A Robotiq takes no command until this has been called once since the server started
        (SERL's and HIL-SERL's ``robotiq_gripper_server.py``); it opens the gripper."""
        self.post("activate_gripper")

    def get_pose_euler(self) -> np.ndarray:
        """HIL-SERL's ``/getpos_euler``: the TCP as xyz and extrinsic xyz Euler angles, the task
        file's convention (SERL's older server lacks it: use ``get_state``'s quaternion)."""
        raw = self.post("getpos_euler")
        try:
            pose = np.asarray(json.loads(raw)["pose"], np.float64).reshape(-1)
            if pose.shape != (6,) or not np.all(np.isfinite(pose)):
                raise ValueError(f"'pose' must be 6 finite numbers, got {pose.tolist()}")
        except (ValueError, KeyError, TypeError) as e:
            raise RobotServerError(f"robot server getpos_euler: malformed answer ({type(e).__name__}: {e})") from None
        return pose

    def open_gripper(self) -> None:
        self.post("open_gripper")

    def move_gripper(self, opening: float) -> None:
        """``opening`` 0 (closed) .. 1 (open), sent as the server's integer."""
        self.post("move_gripper", {"gripper_pos": self.gripper.command(opening)})

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


class _Transient(Exception):
    """A failure on the way (time-out, dropped connection, HTTP 5xx): worth one more try."""

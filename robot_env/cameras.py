"""Wrist cameras: sources (RealSense, or the simulated robot server) read on latest-frame threads.

A source's ``read(timeout)`` blocks for its next frame (RGB uint8, full size). ``LatestFrameCamera``
reads one source on its own thread, crops and resizes each frame (Pillow, area filter) and keeps
only the newest, so the control loop never waits for a camera. ``frame()`` raises
``CameraError`` when the camera never delivered, keeps failing, or its newest frame is older
than ``max_age``: a frozen or unplugged camera is reported with its name, never fed to the policy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np
from PIL import Image

from robot_env.task_config import CameraConfig

log = logging.getLogger("wsrl.cameras")


class CameraError(RuntimeError):
    """A camera is dead, frozen or misconfigured; the message names it."""


class FrameSource(Protocol):
    def read(self, timeout: float) -> np.ndarray:
        """The next frame, RGB uint8 (H, W, 3); raises on failure or after ``timeout`` s."""

    def close(self) -> None: ...


def process(frame: np.ndarray, size: int, crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ``[top, bottom, left, right]`` then resize to ``(size, size)`` with an area filter."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise CameraError(f"expected an RGB uint8 frame, got {frame.dtype}{list(frame.shape)}")
    if crop is not None:
        top, bottom, left, right = crop
        frame = frame[top:bottom, left:right]
        if frame.size == 0:
            raise CameraError(f"crop {list(crop)} leaves nothing of the frame")
    if frame.shape[:2] != (size, size):
        frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BOX))
    return np.ascontiguousarray(frame)


class LatestFrameCamera:
    def __init__(
        self,
        name: str,
        source: FrameSource,
        size: int,
        crop: tuple[int, int, int, int] | None = None,
        max_age: float = 0.5,
        read_timeout: float = 1.0,
    ) -> None:
        self.name, self.source, self.size, self.crop = name, source, int(size), crop
        self.max_age, self.read_timeout = max_age, read_timeout
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._error: str | None = None
        self.frames_read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def start(self) -> LatestFrameCamera:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = process(self.source.read(self.read_timeout), self.size, self.crop)
            except Exception as e:  # a dead device: remember why, keep trying
                if self._error is None:
                    log.error("camera %s: %s", self.name, e)
                self._error = f"{type(e).__name__}: {e}"
                self._stop.wait(0.2)
                continue
            self._frame, self._stamp, self._error = frame, time.monotonic(), None
            self.frames_read += 1

    def frame(self) -> np.ndarray:
        """The newest frame; ``CameraError`` when there is none or it is older than ``max_age``."""
        frame, stamp = self._frame, self._stamp
        if frame is None:
            raise CameraError(f"camera {self.name}: no frame yet" + (f" ({self._error})" if self._error else ""))
        age = time.monotonic() - stamp
        if age > self.max_age:
            why = f"; last error: {self._error}" if self._error else ""
            raise CameraError(f"camera {self.name}: newest frame is {age:.2f} s old (frozen or dead){why}")
        return frame

    def wait_first(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._frame is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.frame()  # raises with the reason if there is still none

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.source.close()


class CameraRig:
    """The wrist cameras of an env: ``frames()`` gives the newest frame of each, without waiting."""

    def __init__(self, cameras: list[LatestFrameCamera], first_frame_timeout: float = 5.0) -> None:
        self.cameras = {c.name: c for c in cameras}
        for c in cameras:
            c.start()
        try:
            for c in cameras:
                c.wait_first(first_frame_timeout)
        except CameraError:
            self.close()
            raise

    def frames(self) -> dict[str, np.ndarray]:
        return {name: c.frame() for name, c in self.cameras.items()}

    def close(self) -> None:
        for c in self.cameras.values():
            c.close()


# ------------------------------------------------------------------------------- sources


class RealSenseSource:
    """One Intel RealSense colour stream, selected by serial number (pyrealsense2, robot PC only)."""

    def __init__(self, cfg: CameraConfig) -> None:
        try:
            import pyrealsense2 as rs
        except ImportError as e:
            raise CameraError(
                f"camera {cfg.name}: pyrealsense2 is not importable ({e}); install the 'robot' "
                "profile (launch/install.sh robot) and Debian's libusb-1.0-0"
            ) from None
        self.rs, self.cfg = rs, cfg
        self.pipeline = rs.pipeline()
        config = rs.config()
        config.enable_device(cfg.serial)
        config.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.bgr8, cfg.fps)
        try:
            profile = self.pipeline.start(config)
        except RuntimeError as e:
            found = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
            raise CameraError(
                f"camera {cfg.name}: cannot start RealSense {cfg.serial} ({e}); connected: {found or 'none'}"
            ) from None
        sensor = profile.get_device().first_color_sensor()
        if cfg.exposure > 0:
            sensor.set_option(rs.option.enable_auto_exposure, 0)
            sensor.set_option(rs.option.exposure, float(cfg.exposure))
        else:
            sensor.set_option(rs.option.enable_auto_exposure, 1)

    def read(self, timeout: float) -> np.ndarray:
        frames = self.pipeline.wait_for_frames(int(timeout * 1000))  # raises RuntimeError on time-out
        color = frames.get_color_frame()
        if not color:
            raise CameraError(f"camera {self.cfg.name}: a frame set without colour")
        return np.asanyarray(color.get_data())[..., ::-1].copy()  # BGR -> RGB

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.pipeline.stop()


class ServerCameraSource:
    """A wrist camera of the simulated robot server (its ``/cameras`` side channel), at ``fps``."""

    def __init__(self, client: Any, name: str, size: int, fps: float = 30.0) -> None:
        self.client, self.name, self.size, self.period = client, name, int(size), 1.0 / fps
        self._last = 0.0

    def read(self, timeout: float) -> np.ndarray:
        wait = self._last + self.period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()
        frame = self.client.camera_frames(self.size).get(self.name)
        if frame is None:
            raise CameraError(f"the simulated server has no camera {self.name}")
        return frame

    def close(self) -> None:
        pass


def realsense_rig(cameras: tuple[CameraConfig, ...], size: int, max_age: float = 0.5) -> CameraRig:
    return CameraRig([LatestFrameCamera(c.name, RealSenseSource(c), size, c.crop, max_age) for c in cameras])


def server_rig(client: Any, names: tuple[str, ...], size: int, max_age: float = 0.5) -> CameraRig:
    return CameraRig([LatestFrameCamera(n, ServerCameraSource(client, n, size), size, None, max_age) for n in names])

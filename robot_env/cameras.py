"""Wrist cameras: sources (RealSense, or the simulated robot server) read on latest-frame threads.

A source's ``read(timeout)`` blocks for its next frame (RGB uint8, full size). ``LatestFrameCamera``
reads one source on its own thread, crops (a rectangle and/or the centre square) and resizes
each frame (Pillow, area filter) and keeps only the newest, so the control loop never waits for
a camera. ``frame()`` raises ``CameraError`` when the camera never delivered, keeps failing, or
its newest frame is older than ``max_age``: a frozen or unplugged camera is reported with its
name, never fed to the policy. A source that keeps failing is re-opened (``reopen()``), with a
backoff from 0.5 s to 5 s between tries, until it delivers again: an unplugged camera that is
plugged back in comes back by itself. Every camera fault is a ``CameraError``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np
from PIL import Image

from robot_env.contract import RobotEnvError
from robot_env.task_config import CameraConfig

log = logging.getLogger("wsrl.cameras")


class CameraError(RobotEnvError):
    """A camera is dead, frozen or misconfigured; the message names it."""


class FrameSource(Protocol):
    def read(self, timeout: float) -> np.ndarray:
        """The next frame, RGB uint8 (H, W, 3); raises on failure or after ``timeout`` s."""

    def reopen(self) -> None:
        """Close the device and open it again (after it froze or was unplugged); raises on failure."""

    def close(self) -> None: ...


def process(
    frame: np.ndarray, size: int, crop: tuple[int, int, int, int] | None = None, square: bool = False
) -> np.ndarray:
    """Crop ``[top, bottom, left, right]``, then (``square``) keep the centre square, then resize
    to ``(size, size)`` with an area filter."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise CameraError(f"expected an RGB uint8 frame, got {frame.dtype}{list(frame.shape)}")
    if crop is not None:
        top, bottom, left, right = crop
        frame = frame[top:bottom, left:right]
        if frame.size == 0:
            raise CameraError(f"crop {list(crop)} leaves nothing of the frame")
    if square and frame.shape[0] != frame.shape[1]:
        h, w = frame.shape[:2]
        s = min(h, w)
        frame = frame[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
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
        square: bool = False,
        reopen_after: float = 1.0,
    ) -> None:
        """``reopen_after``: seconds of failed reads before the source is re-opened."""
        self.name, self.source, self.size, self.crop, self.square = name, source, int(size), crop, square
        self.max_age, self.read_timeout, self.reopen_after = max_age, read_timeout, reopen_after
        self._frame: np.ndarray | None = None
        self._stamp = 0.0
        self._error: str | None = None
        self.frames_read = 0
        self.reopens = 0  # successful re-opens
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def start(self) -> LatestFrameCamera:
        self._thread.start()
        return self

    def _run(self) -> None:
        failing_since: float | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                frame = process(self.source.read(self.read_timeout), self.size, self.crop, self.square)
            except Exception as e:  # a dead device: remember why, keep trying
                if self._error is None:
                    log.error("camera %s: %s", self.name, e)
                self._error = f"{type(e).__name__}: {e}"
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.reopen_after:
                    self._reopen()
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, 5.0)
                else:
                    self._stop.wait(0.2)
                continue
            if failing_since is not None:
                log.info("camera %s: delivering again", self.name)
            failing_since, backoff = None, 0.5
            self._frame, self._stamp, self._error = frame, time.monotonic(), None
            self.frames_read += 1

    def _reopen(self) -> None:
        try:
            self.source.reopen()
        except Exception as e:
            self._error = f"re-open failed: {type(e).__name__}: {e}"
            log.error("camera %s: %s", self.name, self._error)
            return
        self.reopens += 1
        log.warning("camera %s: re-opened after it stopped delivering", self.name)

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


EXPOSURE_UNIT_US = {"stereo": 1.0, "rgb": 100.0}  # what one unit of rs.option.exposure is, per sensor


class RealSenseSource:
    """One Intel RealSense colour stream, selected by serial number (pyrealsense2, robot PC only).

    Every failure of the library (``RuntimeError`` from librealsense) becomes a ``CameraError``
    naming the camera. Exposure is set on the sensor that makes the colour image: on a D405 that
    is the stereo module (its colour comes from the depth imagers), on a D415/D435 the RGB camera.
    The task file gives it in microseconds; the sensors count differently (librealsense: the
    stereo module in microseconds, range 1..165,000 on a D435, issue #6384; the RGB camera in
    100 us units, range 1..10,000, PR #1052 and issue #8243), so it is converted per sensor and
    checked against the range the sensor reports before it is set."""

    def __init__(self, cfg: CameraConfig, rs: Any = None) -> None:
        """``rs``: the pyrealsense2 module (imported here when not given)."""
        if rs is None:
            try:
                import pyrealsense2

                rs = pyrealsense2
            except ImportError as e:
                raise CameraError(
                    f"camera {cfg.name}: pyrealsense2 is not importable ({e}); install the 'robot' "
                    "profile (launch/install.sh robot) and Debian's libusb-1.0-0"
                ) from None
        self.rs, self.cfg = rs, cfg
        self.pipeline: Any = None
        self._open()

    def _open(self) -> None:
        rs, cfg = self.rs, self.cfg
        self.pipeline = rs.pipeline()
        config = rs.config()
        config.enable_device(cfg.serial)
        config.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.bgr8, cfg.fps)
        try:
            profile = self.pipeline.start(config)
        except RuntimeError as e:
            try:
                found = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
            except RuntimeError:
                found = []
            raise CameraError(
                f"camera {cfg.name}: cannot start RealSense {cfg.serial} ({e}); connected: {found or 'none'}"
            ) from None
        try:
            device = profile.get_device()
            sensor, which = self._exposure_sensor(device)
            if cfg.exposure > 0:
                value = float(cfg.exposure) / EXPOSURE_UNIT_US[which]
                rng = sensor.get_option_range(rs.option.exposure)
                if not float(rng.min) <= value <= float(rng.max):
                    with contextlib.suppress(RuntimeError):
                        self.pipeline.stop()
                    unit = EXPOSURE_UNIT_US[which]
                    raise CameraError(
                        f"camera {cfg.name}: exposure {cfg.exposure:g} us is out of range for the "
                        f"{device.get_info(rs.camera_info.name)}'s {which} sensor: it takes "
                        f"{float(rng.min) * unit:g}..{float(rng.max) * unit:g} us (in units of {unit:g} us); "
                        "set real.cameras[].exposure in the task file (microseconds), or 0 for auto exposure"
                    )
                sensor.set_option(rs.option.enable_auto_exposure, 0)
                sensor.set_option(rs.option.exposure, value)
            else:
                sensor.set_option(rs.option.enable_auto_exposure, 1)
        except CameraError:
            raise
        except RuntimeError as e:
            with contextlib.suppress(RuntimeError):
                self.pipeline.stop()
            raise CameraError(
                f"camera {cfg.name}: cannot set exposure ({cfg.exposure}) on RealSense {cfg.serial}: {e}"
            ) from None

    def _exposure_sensor(self, device: Any) -> tuple[Any, str]:
        which = self.cfg.exposure_sensor
        if which == "auto":
            name = str(device.get_info(self.rs.camera_info.name))
            which = "stereo" if "D405" in name else "rgb"
        return (device.first_depth_sensor() if which == "stereo" else device.first_color_sensor()), which

    def read(self, timeout: float) -> np.ndarray:
        try:
            frames = self.pipeline.wait_for_frames(int(timeout * 1000))
        except RuntimeError as e:  # librealsense's time-out and device errors
            raise CameraError(f"camera {self.cfg.name}: {e}") from None
        color = frames.get_color_frame()
        if not color:
            raise CameraError(f"camera {self.cfg.name}: a frame set without colour")
        return np.asanyarray(color.get_data())[..., ::-1].copy()  # BGR -> RGB

    def reopen(self) -> None:
        self.close()
        self._open()

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
        try:
            frame = self.client.camera_frames(self.size).get(self.name)
        except RobotEnvError as e:
            raise CameraError(f"camera {self.name}: {e}") from None
        if frame is None:
            raise CameraError(f"the simulated server has no camera {self.name}")
        return frame

    def reopen(self) -> None:
        pass  # nothing to re-open: every frame is its own HTTP request

    def close(self) -> None:
        pass


def realsense_rig(cameras: tuple[CameraConfig, ...], size: int, max_age: float = 0.5) -> CameraRig:
    return CameraRig(
        [LatestFrameCamera(c.name, RealSenseSource(c), size, c.crop, max_age, square=c.square) for c in cameras]
    )


def server_rig(client: Any, names: tuple[str, ...], size: int, max_age: float = 0.5) -> CameraRig:
    return CameraRig([LatestFrameCamera(n, ServerCameraSource(client, n, size), size, None, max_age) for n in names])

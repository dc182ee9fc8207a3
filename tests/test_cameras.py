"""Camera threads: latest-frame reading, processing, and a camera that stops."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from robot_env import contract
from robot_env.cameras import CameraError, CameraRig, LatestFrameCamera, RealSenseSource, process, server_rig
from robot_env.robot_client import RobotClient
from robot_env.sim_robot_server import SimRobotServer
from robot_env.task_config import CameraConfig
from shared.wire.transport import free_port

pytestmark = pytest.mark.realtime  # camera threads and frame ages


def test_process_crops_then_resizes_with_an_area_filter():
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, 4:] = 200  # right half bright
    out = process(frame, 2, crop=(0, 4, 2, 6))  # keep columns 2..5: half dark, half bright
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0], 0)
    np.testing.assert_array_equal(out[:, 1], 200)
    with pytest.raises(CameraError, match="nothing"):
        process(frame, 2, crop=(3, 3, 0, 8))
    with pytest.raises(CameraError, match="RGB uint8"):
        process(frame.astype(np.float32), 2)


class Pulse:
    """A camera at 50 fps whose frames count up; ``freeze`` makes reads block like a hung device."""

    def __init__(self):
        self.n = 0
        self.frozen = threading.Event()

    def read(self, timeout):
        if self.frozen.is_set():
            time.sleep(timeout)
            raise RuntimeError("Frame didn't arrive within the timeout")
        time.sleep(0.02)
        self.n += 1
        return np.full((48, 64, 3), self.n % 256, np.uint8)

    def close(self):
        pass


def test_the_newest_frame_without_waiting_and_a_frozen_camera_is_reported():
    src = Pulse()
    rig = CameraRig([LatestFrameCamera("wrist_1", src, 16, max_age=0.3, read_timeout=0.2)])
    try:
        a = rig.frames()["wrist_1"]
        time.sleep(0.1)
        t0 = time.perf_counter()
        b = rig.frames()["wrist_1"]
        assert time.perf_counter() - t0 < 0.005  # no waiting for the camera
        assert b.shape == (16, 16, 3) and b[0, 0, 0] > a[0, 0, 0]  # a newer frame
        src.frozen.set()
        time.sleep(0.5)
        with pytest.raises(CameraError, match="wrist_1.*old.*Frame didn't arrive"):
            rig.frames()
        src.frozen.clear()  # it comes back
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                assert rig.frames()["wrist_1"].shape == (16, 16, 3)
                break
            except CameraError:
                time.sleep(0.05)
        else:
            raise AssertionError("the camera did not recover")
    finally:
        rig.close()


def test_a_camera_that_never_delivers_fails_at_start():
    src = Pulse()
    src.frozen.set()
    with pytest.raises(CameraError, match="no frame yet"):
        CameraRig([LatestFrameCamera("wrist_2", src, 16, read_timeout=0.1)], first_frame_timeout=0.5)


def test_realsense_without_the_library_or_device_is_a_clear_error():
    cfg = CameraConfig(name="wrist_1", serial="000000000000")
    with pytest.raises(CameraError, match="wrist_1"):
        RealSenseSource(cfg)


def test_simulated_cameras_through_the_server_and_a_server_that_hangs():
    server = SimRobotServer(port=free_port()).start()
    client = RobotClient(server.url)
    rig = server_rig(client, contract.IMAGE_KEYS, 16, max_age=0.5)
    try:
        frames = rig.frames()
        assert set(frames) == set(contract.IMAGE_KEYS) and frames["wrist_2"].std() > 0
        client.post("_faults", {"latency_s": 3.0})
        time.sleep(1.0)
        with pytest.raises(CameraError, match="old"):
            rig.frames()
    finally:
        client.post("_faults", {"latency_s": 0.0})
        rig.close()
        server.close()


def test_a_square_centre_crop_keeps_the_middle_of_a_wide_frame():
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, 2:6] = 100  # the middle 4 columns
    out = process(frame, 4, square=True)
    assert out.shape == (4, 4, 3) and np.all(out == 100)  # no squashing: only the centre square
    squashed = process(frame, 4)
    assert squashed.min() == 0  # without it the dark sides are squeezed in


class Unplugged(Pulse):
    """A camera that hangs until it is re-opened (a USB camera unplugged and plugged back in)."""

    def __init__(self):
        super().__init__()
        self.reopened = 0

    def reopen(self):
        self.reopened += 1
        self.frozen.clear()


def test_a_camera_that_stops_delivering_is_reopened_and_comes_back():
    src = Unplugged()
    cam = LatestFrameCamera("wrist_1", src, 16, max_age=0.3, read_timeout=0.1, reopen_after=0.3)
    rig = CameraRig([cam])
    try:
        src.frozen.set()  # stays frozen until someone re-opens it
        deadline = time.monotonic() + 5.0
        while src.reopened == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.reopened >= 1 and cam.reopens >= 1
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                rig.frames()
                break
            except CameraError:
                time.sleep(0.05)
        else:
            raise AssertionError("the camera did not come back after the re-open")
    finally:
        rig.close()


class FakeRealSense:
    """A stand-in for pyrealsense2 (no camera or library here): the calls our source makes, with
    the device named as a D405 or a D435 reports itself, and failures where librealsense raises."""

    class option:
        enable_auto_exposure, exposure = "enable_auto_exposure", "exposure"

    class camera_info:
        name, serial_number = "name", "serial_number"

    class stream:
        color = "color"

    class format:
        bgr8 = "bgr8"

    def __init__(self, model, fail=None):
        self.model, self.fail, self.calls = model, fail or set(), []
        rs = self

        class Sensor:
            def __init__(self, which):
                self.which = which

            def set_option(self, opt, value):
                if "set_option" in rs.fail:
                    raise RuntimeError("object doesn't support option #66")
                rs.calls.append((self.which, opt, value))

            def get_option_range(self, opt):
                # librealsense's ranges for rs.option.exposure: the stereo module in us (issue
                # #6384: 1-165000 on a D435), the RGB camera in 100 us units (issue #8243: 1-10000)
                return SimpleNamespace(min=1.0, max=165000.0 if self.which == "stereo" else 10000.0, step=1.0)

        class Device:
            def get_info(self, what):
                return f"Intel RealSense {rs.model}" if what == "name" else "123"

            def first_depth_sensor(self):
                return Sensor("stereo")

            def first_color_sensor(self):
                return Sensor("rgb")

        class Profile:
            def get_device(self):
                return Device()

        class Pipeline:
            def start(self, config):
                if "start" in rs.fail:
                    raise RuntimeError("No device connected")
                return Profile()

            def wait_for_frames(self, ms):
                raise RuntimeError(f"Frame didn't arrive within {ms}")

            def stop(self):
                pass

        class Config:
            def enable_device(self, serial):
                pass

            def enable_stream(self, *a):
                pass

        class Context:
            def query_devices(self):
                return []

        self.pipeline, self.config, self.context = Pipeline, Config, Context


@pytest.mark.parametrize(("model", "sensor", "units"), [("D405", "stereo", 10500.0), ("D435", "rgb", 105.0)])
def test_exposure_is_set_on_the_sensor_that_makes_the_colour_image_in_its_units(model, sensor, units):
    """10,500 us: the stereo module counts microseconds, the RGB camera 100 us units."""
    rs = FakeRealSense(model)
    RealSenseSource(CameraConfig(name="wrist_1", serial="123", exposure=10500), rs=rs)
    assert rs.calls == [(sensor, "enable_auto_exposure", 0), (sensor, "exposure", units)]
    rs = FakeRealSense(model)
    RealSenseSource(CameraConfig(name="wrist_1", serial="123", exposure=10500, exposure_sensor="rgb"), rs=rs)
    assert {c[0] for c in rs.calls} == {"rgb"}  # the task file can say which


@pytest.mark.parametrize(("model", "exposure"), [("D405", 200_000), ("D435", 2_000_000)])
def test_an_exposure_out_of_the_sensors_range_is_refused_with_the_range(model, exposure):
    rs = FakeRealSense(model)
    with pytest.raises(CameraError, match=r"wrist_1: exposure .* out of range .* takes (1\.\.165000|100\.\.1e\+06) us"):
        RealSenseSource(CameraConfig(name="wrist_1", serial="123", exposure=exposure), rs=rs)
    assert rs.calls == []  # nothing was set


@pytest.mark.parametrize("fail", ["start", "set_option"])
def test_every_realsense_fault_is_a_camera_error_naming_the_camera(fail):
    with pytest.raises(CameraError, match="camera wrist_2"):
        RealSenseSource(CameraConfig(name="wrist_2", serial="123", exposure=10500), rs=FakeRealSense("D435", {fail}))
    src = RealSenseSource(CameraConfig(name="wrist_2", serial="123"), rs=FakeRealSense("D435"))
    with pytest.raises(CameraError, match="wrist_2.*didn't arrive"):
        src.read(0.1)

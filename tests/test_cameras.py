"""Camera threads: latest-frame reading, processing, and a camera that stops."""

import threading
import time

import numpy as np
import pytest

from robot_env import contract
from robot_env.cameras import CameraError, CameraRig, LatestFrameCamera, RealSenseSource, process, server_rig
from robot_env.robot_client import RobotClient
from robot_env.sim_robot_server import SimRobotServer
from robot_env.task_config import CameraConfig
from shared.transport import free_port


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

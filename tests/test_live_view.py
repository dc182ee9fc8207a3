"""The operator's live view (shared/live_view.py): what goes into a recording comes back out,
and a failing view never stops the process it watches. The recording of a real learner and actor
run is checked in tests/test_runtime.py (test_wrist_camera_observations_through_the_runtime)."""

import argparse

import numpy as np
import pytest

from shared.live_view import add_view_argument, check_target, open_view, read_recording
from shared.metrics import MetricsLogger


def test_targets_are_checked_and_off_opens_nothing(tmp_path, capsys):
    assert open_view("off", tmp_path, "actor", "r") is None
    assert not list(tmp_path.iterdir())
    assert check_target("rerun+http://10.0.0.5:9876/proxy") == "rerun+http://10.0.0.5:9876/proxy"
    with pytest.raises(ValueError, match="choose one of off, save, spawn, web"):
        check_target("window")
    parser = argparse.ArgumentParser()
    add_view_argument(parser)
    assert parser.parse_args([]).view == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["--view", "window"])
    assert "choose one of off, save, spawn, web" in capsys.readouterr().err  # the reason, not argparse's own


def test_a_saved_recording_reads_back_stream_by_stream(tmp_path):
    view = open_view("save", tmp_path, "actor", "r")
    assert view is not None
    obs = {
        "state": np.zeros(19, np.float32),  # not a frame: not shown
        "wrist_1": np.full((16, 16, 3), 100, np.uint8),
        "wrist_2": np.full((16, 12, 3), 200, np.uint8),
    }
    for step in range(3):
        view.at("actor_step", step)
        view.images("actor/camera", obs)
        view.scalars(
            "actor",
            {"action": np.arange(6.0) * step, "reward": -1.0, "bad": np.nan, "odd name!": 2, "note": "x", "none": None},
        )
    view.event("ALARM Q_COLLAPSE: Q fell", "ERROR")
    view.close()
    streams = read_recording(view.path)
    assert {"actor/camera/wrist_1", "actor/camera/wrist_2", "actor/action", "actor/reward", "events"} <= set(streams)
    assert "actor/camera/state" not in streams and "actor/bad" not in streams  # not a frame; never finite
    assert "actor/note" not in streams and "actor/none" not in streams and not view._failed  # not numbers: left out
    assert "actor/odd_name_" in streams  # a name rerun would refuse, made safe
    frames = streams["actor/camera/wrist_2"]
    assert [r["actor_step"] for r in frames] == [0, 1, 2]
    assert frames[0]["image"].shape == (16, 12, 3) and abs(float(frames[0]["image"].mean()) - 200) < 2  # JPEG
    assert [r["scalars"] for r in streams["actor/action"]][2] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert streams["events"][0]["text"] == "ALARM Q_COLLAPSE: Q fell" and streams["events"][0]["level"] == "ERROR"
    # a second view in the same directory (a restarted process) keeps the first recording
    again = open_view("save", tmp_path, "actor", "r")
    assert again is not None and again.path != view.path
    again.close()


def test_the_metrics_logger_mirrors_records_and_events_to_the_view(tmp_path):
    view = open_view("save", tmp_path / "view", "learner", "r")
    metrics = MetricsLogger(tmp_path, tensorboard=False, view=view)
    metrics.log(120, {"critic_loss": 0.5, "q": -3.0}, prefix="learner/")
    metrics.log(240, {"offline_probe/q": -4.0}, prefix="diag/")
    metrics.event("checkpoint 2: 240 env steps")
    metrics.close()  # closes the view too
    assert view is not None
    streams = read_recording(view.path)
    assert [(r["env_step"], r["scalars"]) for r in streams["learner/critic_loss"]] == [(120, [0.5])]
    assert streams["diag/offline_probe/q"][0]["env_step"] == 240
    assert streams["events"][0]["text"] == "checkpoint 2: 240 env steps"


def test_a_failing_view_turns_itself_off_and_the_caller_goes_on(tmp_path, caplog):
    view = open_view("save", tmp_path, "actor", "r")
    assert view is not None

    def broken(*_, **__):
        raise OSError("the disk is full")

    view.rec.log = broken  # fault injection: rerun's log call failing
    view.at("actor_step", 1)
    view.scalars("actor", {"reward": -1.0})  # does not raise
    view.images("actor/camera", {"wrist_1": np.zeros((8, 8, 3), np.uint8)})
    assert view._failed and "the live view is off" in caplog.text
    assert caplog.text.count("the live view is off") == 1  # said once, not every step
    view.close()

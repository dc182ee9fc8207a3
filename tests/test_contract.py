"""The robot contract: rotations, the 19-D proprio layout, action scaling, the safety box and
task files. Expected values are worked out by hand in the comments."""

import json
from dataclasses import replace

import numpy as np
import pytest

from robot_env import contract
from robot_env import geometry as geo
from robot_env.task_config import TASKS_DIR, SafetyBox, TaskConfigError, in_box, load_task

TASK = load_task("peg_insertion")
PI = np.pi


# ----------------------------------------------------------------------------- rotations


def test_known_rotations():
    # quaternion [1, 0, 0, 0] (xyzw) is half a turn about x: a tool pointing down
    np.testing.assert_allclose(geo.quat_to_euler([1, 0, 0, 0]), [PI, 0, 0], atol=1e-12)
    # 90 degrees about z maps x to y
    np.testing.assert_allclose(geo.euler_to_mat([0, 0, PI / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # extrinsic xyz: roll first, then yaw about the base z
    r = geo.euler_to_mat([PI / 2, 0, PI / 2])
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-12)  # roll takes y to z, yaw keeps z


def test_rotation_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(200):
        e = rng.uniform([-PI, -1.5, -PI], [PI, 1.5, PI])
        np.testing.assert_allclose(geo.mat_to_euler(geo.euler_to_mat(e)), e, atol=1e-9)
        q = geo.euler_to_quat(e)
        np.testing.assert_allclose(geo.quat_to_mat(q), geo.euler_to_mat(e), atol=1e-9)
        np.testing.assert_allclose(geo.quat_to_mat(geo.mat_to_quat(geo.quat_to_mat(q))), geo.quat_to_mat(q), atol=1e-9)
    np.testing.assert_allclose(geo.wrap_angle([PI + 0.1, -PI - 0.1, 0.5]), [-PI + 0.1, PI - 0.1, 0.5], atol=1e-12)


# ----------------------------------------------------------------------------- proprio


def test_state_layout_is_sorted_and_19d():
    keys = [k for k, _ in contract.STATE_KEYS]
    assert keys == sorted(keys) == ["gripper_pose", "tcp_force", "tcp_pose", "tcp_torque", "tcp_vel"]
    assert contract.STATE_DIM == 19
    s = contract.state_slices()
    assert (s["gripper_pose"], s["tcp_force"], s["tcp_pose"]) == (slice(0, 1), slice(1, 4), slice(4, 10))
    assert (s["tcp_torque"], s["tcp_vel"]) == (slice(10, 13), slice(13, 19))


def test_proprio_is_relative_to_the_target_frame():
    # target: (0.5, 0, 0.1), roll pi, i.e. x_T = x, y_T = -y, z_T = -z in the base frame
    target = np.array(TASK.target_pose)
    pose6 = target + [0.01, 0.02, 0.03, -0.05, 0.0, 0.2]  # roll pi - 0.05
    raw = {
        "pose": geo.pose6_to_pose7(pose6),
        "vel": np.array([0.1, 0.2, 0.3, 0.01, 0.02, 0.03]),
        "force": np.array([1.0, 2.0, 3.0]),
        "torque": np.array([0.1, 0.2, 0.3]),
        "gripper_pos": 0.25,
    }
    v = contract.proprio(raw, TASK)
    assert v.dtype == np.float32 and v.shape == (19,)
    s = contract.state_slices()
    np.testing.assert_allclose(v[s["gripper_pose"]], [0.25])
    np.testing.assert_allclose(v[s["tcp_force"]], [1, 2, 3])
    np.testing.assert_allclose(v[s["tcp_torque"]], [0.1, 0.2, 0.3], rtol=1e-6)
    pose = v[s["tcp_pose"]]
    np.testing.assert_allclose(pose[:3], [0.01, -0.02, -0.03], atol=1e-6)
    # R_T^T R = Rx(-pi) Rz(0.2) Rx(pi - 0.05) = Rz(-0.2) Rx(-0.05): roll -0.05, yaw -0.2, no wrap
    np.testing.assert_allclose(pose[3:], [-0.05, 0.0, -0.2], atol=1e-6)
    np.testing.assert_allclose(v[s["tcp_vel"]], [0.1, -0.2, -0.3, 0.01, -0.02, -0.03], atol=1e-6)


# ----------------------------------------------------------------------------- actions


def _target6(action, pose6=None):
    pose6 = np.array(TASK.reset_pose if pose6 is None else pose6, np.float64)
    return geo.pose7_to_pose6(contract.next_target(geo.pose6_to_pose7(pose6), np.asarray(action, float), TASK))


def test_actions_are_end_effector_deltas_scaled_to_2cm_and_0p1rad():
    reset = np.array(TASK.reset_pose)
    # the tool points down: its x is the base x, its y is -y, its z is -z
    np.testing.assert_allclose(_target6([1, 0, 0, 0, 0, 0])[:3], reset[:3] + [0.02, 0, 0], atol=1e-9)
    np.testing.assert_allclose(_target6([0, 0.5, 0, 0, 0, 0])[:3], reset[:3] + [0, -0.01, 0], atol=1e-9)
    np.testing.assert_allclose(_target6([0, 0, 1, 0, 0, 0])[:3], reset[:3] + [0, 0, -0.02], atol=1e-9)
    # turning +0.1 rad about the tool's z (down) is -0.1 rad of base yaw
    np.testing.assert_allclose(_target6([0, 0, 0, 0, 0, 1])[5], -0.1, atol=1e-9)
    # with the tool yawed by 90 degrees, its x axis is the base y
    turned = reset + [0, 0, 0, 0, 0, 0.5]
    np.testing.assert_allclose(
        _target6([1, 0, 0, 0, 0, 0], turned)[:3], turned[:3] + 0.02 * np.array([np.cos(0.5), np.sin(0.5), 0]), atol=1e-9
    )


def test_sanitize_action():
    a, ok = contract.sanitize_action([2, -3, 0.5, 0, 0, 1e9])
    assert ok and a.tolist() == [1, -1, 0.5, 0, 0, 1]
    a, ok = contract.sanitize_action([np.nan, 0, 0, 0, 0, 0.3])
    assert not ok and a.tolist() == [0] * 6
    a, ok = contract.sanitize_action([np.inf] * 6)
    assert not ok and a.tolist() == [0] * 6
    with pytest.raises(ValueError, match="shape"):
        contract.sanitize_action([0, 0, 0])


def test_clip_to_box_handles_roll_wrap():
    box = TASK.safety_box  # roll in [pi - 0.1, pi + 0.1]
    inside = contract.clip_to_box([0.5, 0, 0.15, -3.1, 0, 0], box)
    np.testing.assert_allclose(inside[3], -3.1, atol=1e-12)  # -3.1 is pi + 0.0416: inside, untouched
    np.testing.assert_allclose(contract.clip_to_box([0.5, 0, 0.15, 2.9, 0, 0], box)[3], PI - 0.1, atol=1e-9)
    np.testing.assert_allclose(contract.clip_to_box([0.5, 0, 0.15, -2.9, 0, 0], box)[3], -PI + 0.1, atol=1e-9)
    # far outside: clipped to the nearer end on the circle
    np.testing.assert_allclose(contract.clip_to_box([0.5, 0, 0.15, -0.1, 0, 0], box)[3], -PI + 0.1, atol=1e-9)
    np.testing.assert_allclose(contract.clip_to_box([0.5, 0, 0.15, 0.1, 0, 0], box)[3], PI - 0.1, atol=1e-9)
    np.testing.assert_allclose(
        contract.clip_to_box([9, -9, 9, PI, 1, -1], box)[[0, 1, 2, 4, 5]], [0.57, -0.07, 0.2, 0.1, -0.7], atol=1e-12
    )


def test_safety_box_holds_for_any_action_from_any_pose():
    rng = np.random.default_rng(0)
    low, high = np.array(TASK.safety_box.low), np.array(TASK.safety_box.high)
    specials = [np.nan, np.inf, -np.inf, 1e12, -1e12]
    for i in range(3000):
        # measured poses around and beyond the box (contact can push the arm outside it)
        pose6 = rng.uniform(low - 0.1, high + 0.1)
        pose6[3:] = geo.wrap_angle(pose6[3:])
        action = rng.uniform(-5, 5, 6)
        if i % 3 == 0:
            action[rng.integers(6)] = specials[i % len(specials)]
        clean, _ = contract.sanitize_action(action)
        target = contract.next_target(geo.pose6_to_pose7(pose6), clean, TASK)
        assert np.all(np.isfinite(target))
        assert in_box(geo.pose7_to_pose6(target), TASK.safety_box, tol=1e-7), (pose6, action, target)


def test_in_box_on_the_circle():
    box = SafetyBox(low=(0, 0, 0, PI - 0.1, -0.1, -0.7), high=(1, 1, 1, PI + 0.1, 0.1, 0.7))
    assert in_box(np.array([0.5, 0.5, 0.5, -PI + 0.05, 0, 0]), box)
    assert not in_box(np.array([0.5, 0.5, 0.5, PI - 0.2, 0, 0]), box)
    assert not in_box(np.array([0.5, 0.5, 1.5, PI, 0, 0]), box)


# ----------------------------------------------------------------------------- task files


def test_task_file_numbers():
    assert TASK.control_hz == 10 and TASK.action_scale == (0.02, 0.1)
    assert len(TASK.eval_poses) == 20
    assert TASK.random_reset.xy == 0.05 and TASK.random_reset.yaw == pytest.approx(PI / 6, abs=1e-6)
    assert TASK.sim.clearance > 0 and TASK.sim.success_depth <= TASK.sim.target_depth


def test_bad_task_files_are_clear_errors(tmp_path):
    good = json.loads((TASKS_DIR / "peg_insertion.json").read_text())
    cases = {
        "unknown": ({**good, "speed": 3}, "`speed` are not valid for TaskConfig"),
        "missing": ({k: v for k, v in good.items() if k != "target_pose"}, "target_pose"),
        "outside": ({**good, "reset_pose": [0.9, 0, 0.16, PI, 0, 0]}, "outside the safety box"),
        "short": ({**good, "target_pose": [0.5, 0, 0.1]}, "`target_pose`: Expected 6 items"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(TaskConfigError, match=message):
            load_task(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TaskConfigError, match="not valid JSON"):
        load_task(tmp_path / "broken.json")
    with pytest.raises(TaskConfigError, match="tasks shipped"):
        load_task("no_such_task")
    with pytest.raises(TaskConfigError, match="random_reset"):
        replace(TASK, random_reset=replace(TASK.random_reset, xy=0.2))


def test_a_task_file_that_extends_another_states_only_what_differs(tmp_path):
    hard, wide = load_task("peg_insertion_hard"), load_task("peg_insertion_hard_wide")
    # the shipped variant: its reset box, safety box and board from its own file, the rest (the
    # hole's geometry, the eval poses, the real robot's section) from peg_insertion_hard's
    assert (wide.random_reset.xy, wide.random_reset.yaw) == (0.09, 0.9)
    assert wide.sim.board_half_width == 0.11 and wide.sim.clearance == hard.sim.clearance == 0.0005
    assert wide.eval_poses == hard.eval_poses and wide.real == hard.real and wide.name == "peg_insertion_hard_wide"
    # objects merge key by key; a list or null replaces; a base named by path, relative to the file
    (tmp_path / "base.json").write_text((TASKS_DIR / "peg_insertion.json").read_text())
    variant = {"extends": "base.json", "sim": {"clearance": 0.002}, "action_scale": [0.01, 0.05], "real": None}
    (tmp_path / "v.json").write_text(json.dumps(variant))
    v = load_task(tmp_path / "v.json")
    assert v.sim.clearance == 0.002 and v.sim.chamfer == TASK.sim.chamfer
    assert v.action_scale == (0.01, 0.05) and v.real is None and v.target_pose == TASK.target_pose
    (tmp_path / "a.json").write_text(json.dumps({"extends": "b"}))
    (tmp_path / "b.json").write_text(json.dumps({"extends": "a"}))
    with pytest.raises(TaskConfigError, match="in a circle"):
        load_task(tmp_path / "a.json")
    (tmp_path / "c.json").write_text(json.dumps({"extends": "no_such_base"}))
    with pytest.raises(TaskConfigError, match="no task file"):
        load_task(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"extends": "base", "speed": 3}))
    with pytest.raises(TaskConfigError, match="`speed` are not valid for TaskConfig"):
        load_task(tmp_path / "d.json")


def test_obs_mode_follows_a_checkpoint_spec():
    from robot_env.contract import obs_mode_of

    assert obs_mode_of({"state": ((19,), "float32")}) == {"obs_mode": "state"}
    spec = {"state": ((19,), "float32"), "wrist_1": ((64, 64, 3), "uint8"), "wrist_2": ((64, 64, 3), "uint8")}
    assert obs_mode_of(spec) == {"obs_mode": "images", "image_size": 64}


# ----------------------------------------------------------------------------- the step record


class _Scripted:
    """An env whose step returns what it is told (the gym 5-tuple), to read ``contract.step`` by hand."""

    def __init__(self, info):
        self.info, self.sent = info, None

    def step(self, action):
        self.sent = action
        return {"state": np.ones(2, np.float32)}, -1, False, True, self.info


def test_step_reads_a_plain_step():
    env = _Scripted({"success": False})
    s = contract.step(env, np.full(6, 0.5))
    assert env.sent.tolist() == [0.5] * 6  # the policy's action goes to the env unchanged
    assert s.reward == -1.0 and not s.terminated and s.truncated and s.done
    assert s.action.dtype == np.float32 and s.action.tolist() == [0.5] * 6
    assert s.info == contract.StepInfo(success=False)  # no intervention, no error, no classifier
    assert not s.info.succeeded and not s.info.env_succeeded
    t = s.transition({"state": np.zeros(2, np.float32)})
    # truncated, not terminated: bootstrap (mask 1) but the episode ends (done)
    assert t["masks"] == 1.0 and t["dones"] and t["rewards"] == -1.0 and t["intervened"] is False
    assert t["next_observations"]["state"].tolist() == [1.0, 1.0]


def test_step_records_the_persons_action_sanitised_and_the_classifiers_verdicts():
    human = np.array([2.0, -3.0, 0.1, 0.0, 0.0, 0.0])  # as a SERL wrapper might leave it: out of range
    info = {
        "success": True,
        "env_success": False,
        "classifier_prob": 0.9,
        "intervened": True,
        "intervene_action": human,
    }
    s = contract.step(_Scripted(info), np.zeros(6))
    np.testing.assert_allclose(s.action, [1.0, -1.0, 0.1, 0.0, 0.0, 0.0], rtol=1e-6)  # clipped to [-1, 1]
    assert s.info.intervened and s.transition({"state": np.zeros(2, np.float32)})["intervened"] is True
    assert s.info.succeeded and not s.info.env_succeeded  # the classifier says yes, the env's own check no
    assert s.info.classifier_prob == 0.9
    # SERL's convention alone (the action key, no flag) is an intervention too; a NaN action holds still
    s = contract.step(_Scripted({"intervene_action": np.full(6, np.nan)}), np.ones(6))
    assert s.info.intervened and s.action.tolist() == [0.0] * 6 and s.info.success is None


def test_step_reports_a_failed_step_and_a_reflex():
    s = contract.step(
        _Scripted({"success": False, "robot_error": "the arm did not follow", "reflex": True}), np.zeros(6)
    )
    assert s.info.robot_error == "the arm did not follow" and s.info.reflex


def test_loops_read_a_step_only_through_the_step_record():
    """Every loop steps its env with ``contract.step`` and reads the typed ``StepInfo``: no module
    outside the env writers reads an info key by string (issue 30: the step was written five times)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    loops = ["actor/loop.py", "actor/evaluate.py", "actor/record_labels.py", "robot_env/rollout.py"]
    loops += ["learner/study/runner.py", "learner/study/guided_data.py"]
    for name in loops:
        text = (root / name).read_text()
        assert not re.search(r"\binfo\s*(\[|\.get\()", text), f"{name} reads an info key by string"
        assert not re.search(r"(?<!contract)\.step\(", text), f"{name} calls an env's step itself"

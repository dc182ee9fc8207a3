"""What the real Franka's control stack does beyond an ideal impedance spring, as its sources say.

The simulated robot server (``robot_env/sim_robot_server.py``) runs its physics through this
model by default, so that every test of the robot path meets the arm a user will meet:

- **The target filter** (serl_franka_controllers, ``src/cartesian_impedance_controller.cpp``,
  ``update()``): each 1 kHz tick moves the equilibrium ``position_d_`` 0.005 of the way to the
  commanded ``position_d_target_`` (and slerps the orientation by the same fraction): a
  first-order lag with a 0.2 s time constant, so a ``/pose`` command is only about 40 % applied
  after one 100 ms step.
- **The state rate** (franka_ros, ``franka_control/config/default_controllers.yaml``:
  ``franka_state_controller`` ``publish_rate: 30``): SERL's server answers ``/getstate`` with the
  newest published ``FrankaState``, up to 33 ms old.
- **Reflexes** (franka_ros, ``franka_control/config/franka_control_node.yaml``: the Cartesian
  collision thresholds, lower = upper = 20 N on each force axis and 25 Nm on each torque axis):
  above them libfranka stops the arm with a reflex; every later command is lost until the error
  is recovered (``/clearerr``, franka_ros's ``error_recovery`` action). The controller then
  starts again (``starting()`` in the controller above), holding the measured pose.
- **The estimate is filtered**: the arm senses external forces through its joint torque sensors
  and model (libfranka's ``tau_ext_hat_filtered`` is "low-pass filtered"); the cut-off is not
  published. We take a 10 ms time constant (``estimate_tau_s``): a sustained push trips the
  reflex within a few tens of milliseconds, while the sub-millisecond spike of a rigid MuJoCo
  contact at the task's speeds (under 0.1 m/s) does not, as it does not on SERL's real peg runs.
- **The external wrench** (libfranka ``include/franka/robot_state.h``, ``K_F_ext_hat_K``; SERL's
  and HIL-SERL's ``franka_server.py`` report it as ``force`` and ``torque``): expressed in the
  stiffness frame (here the TCP), and *forces applied by the robot to the environment are
  positive*: pressing the peg down on the board reads as a positive force along the tool's z,
  which points down.
- **An unmodelled payload** (Franka's end-effector settings in Desk, or HIL-SERL's ``/set_load``
  with libfranka's ``setLoad``): mass the robot's model does not know pulls the hand down and
  shows in the external wrench; a load set with ``/set_load`` is compensated.
"""

from __future__ import annotations

from dataclasses import dataclass

SERL_FILTER_PARAM = 0.005  # serl_franka_controllers: filter_params_, per 1 kHz tick
FRANKA_CONTROL_HZ = 1000.0


@dataclass(frozen=True)
class ControllerModel:
    # fraction of the way to the commanded target per second of a first-order lag: 0.005 per
    # 1 ms tick is a time constant of 1 ms / 0.005 = 0.2 s
    target_filter_tau_s: float = (1.0 / FRANKA_CONTROL_HZ) / SERL_FILTER_PARAM
    state_rate_hz: float = 30.0  # franka_state_controller's publish_rate
    force_threshold_n: float = 20.0  # franka_control_node.yaml, per force axis
    torque_threshold_nm: float = 25.0  # franka_control_node.yaml, per torque axis
    estimate_tau_s: float = 0.01  # low-pass of the external wrench estimate (an assumption, see above)

    def __post_init__(self) -> None:
        if self.target_filter_tau_s < 0 or self.state_rate_hz <= 0:
            raise ValueError("target_filter_tau_s must be >= 0 and state_rate_hz > 0")
        if min(self.force_threshold_n, self.torque_threshold_nm) <= 0:
            raise ValueError("collision thresholds must be positive")

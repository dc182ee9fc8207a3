"""Gripper units: the one place that knows what each robot server's gripper numbers mean.

Everything above this module speaks the *opening*: 0 = closed .. 1 = fully open. The servers
do not agree, and a wrong guess reads a closed gripper as open:

| flavour        | server                                      | ``gripper_pos`` in ``/getstate``           | ``/move_gripper {"gripper_pos": n}``          |
|----------------|---------------------------------------------|--------------------------------------------|-----------------------------------------------|
| ``serl_robotiq`` | SERL's server with a Robotiq 2F             | raw position 0 (open) .. 255 (closed)      | integer 0 (open) .. 255 (closed)             |
| ``serl_franka``  | SERL's server with the Franka hand          | finger width in metres, 0.08 = fully open  | integer 0..255; the server moves to n / 2550 m |
| ``normalised``   | HIL-SERL's server (Robotiq)                 | 1 - raw / 255: 1 = open, 0 = closed        | integer 0 (open) .. 255 (closed), raw Robotiq |

The servers take ``int()`` of what they are sent, so a float in 0..1 would become 0: fully open
on a Robotiq. ``command`` always returns the server's integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRIPPER_FLAVOURS = ("serl_robotiq", "serl_franka", "normalised")
FRANKA_HAND_OPEN_M = 0.08  # the Franka hand's full opening (sum of both fingers)
FRANKA_MOVE_UNITS_PER_M = 2550.0  # SERL's Franka gripper server: width = n / 2550 m


@dataclass(frozen=True)
class GripperUnits:
    flavour: str

    def __post_init__(self) -> None:
        if self.flavour not in GRIPPER_FLAVOURS:
            raise ValueError(f"gripper flavour must be one of {GRIPPER_FLAVOURS}, got {self.flavour!r}")

    @property
    def reading_range(self) -> tuple[float, float]:
        """The raw ``gripper_pos`` values this flavour's server can report (a little slack for noise)."""
        return {"serl_robotiq": (-0.5, 255.5), "serl_franka": (-0.002, 0.1), "normalised": (-0.01, 1.01)}[self.flavour]

    def opening(self, raw: float) -> float:
        """The server's ``gripper_pos`` as an opening, 0 = closed .. 1 = open (clipped)."""
        if not math.isfinite(raw):
            raise ValueError(f"gripper_pos {raw!r} is not finite")
        if self.flavour == "serl_robotiq":
            o = 1.0 - raw / 255.0
        elif self.flavour == "serl_franka":
            o = raw / FRANKA_HAND_OPEN_M
        else:
            o = raw
        return min(max(o, 0.0), 1.0)

    def reading(self, opening: float) -> float:
        """What this flavour's server reports for an opening (the simulated server uses it)."""
        o = min(max(float(opening), 0.0), 1.0)
        if self.flavour == "serl_robotiq":
            return float(round((1.0 - o) * 255.0))
        if self.flavour == "serl_franka":
            return o * FRANKA_HAND_OPEN_M
        return 1.0 - round((1.0 - o) * 255.0) / 255.0

    def command(self, opening: float) -> int:
        """``/move_gripper``'s integer for an opening in [0, 1]."""
        if not 0.0 <= opening <= 1.0:
            raise ValueError(f"gripper opening must be in [0, 1], got {opening}")
        if self.flavour == "serl_franka":
            return round(opening * FRANKA_HAND_OPEN_M * FRANKA_MOVE_UNITS_PER_M)
        return round((1.0 - opening) * 255.0)

    def commanded_opening(self, n: int) -> float:
        """The opening a server moves to for ``/move_gripper`` n (after its own int() and clip)."""
        n = min(max(int(n), 0), 255)
        if self.flavour == "serl_franka":
            return min(n / FRANKA_MOVE_UNITS_PER_M / FRANKA_HAND_OPEN_M, 1.0)
        return 1.0 - n / 255.0

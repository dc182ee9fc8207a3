"""Keys pressed on the robot PC (pynput), as named events the actor polls between steps.

pynput is imported only when a ``Keyboard`` is made (the actor's ``--keyboard``), never by the
learner or the tests' default path. On a machine without an X display it cannot work; that is a
``KeyboardError`` saying so, at start, not a hang or a silent no-op.
"""

from __future__ import annotations

import os
import queue
from typing import Any

# key -> event. Labels are for the reward classifier's recorder.
DEFAULT_BINDINGS = {
    "esc": "end_episode",
    "space": "pause",  # toggles pause / resume
    "s": "label_success",
    "f": "label_failure",
}


class KeyboardError(RuntimeError):
    """The keyboard cannot be read here; the message says why and what to do."""


def key_name(key: Any) -> str | None:
    """pynput's key objects -> a lower-case name: printable keys by their character, special
    keys by their name (``esc``, ``space``)."""
    char = getattr(key, "char", None)
    if isinstance(char, str) and char:
        return char.lower()
    name = getattr(key, "name", None)
    return name.lower() if isinstance(name, str) else None


def pynput_keyboard(flag: str = "--keyboard") -> Any:
    """pynput's keyboard module, or a ``KeyboardError`` saying why it cannot work here."""
    if not os.environ.get("DISPLAY") and os.environ.get("PYNPUT_BACKEND") != "uinput":
        raise KeyboardError(
            "the keyboard needs an X display (DISPLAY is not set); run the actor in the "
            f"robot PC's desktop session, or without {flag}"
        )
    try:
        from pynput import keyboard
    except Exception as e:  # ImportError, or Xlib's connection errors
        raise KeyboardError(
            f"pynput cannot read the keyboard here ({type(e).__name__}: {e}); install the "
            f"'robot' profile and run in a desktop session, or run without {flag}"
        ) from None
    return keyboard


class Keyboard:
    def __init__(self, bindings: dict[str, str] | None = None) -> None:
        self.bindings = dict(DEFAULT_BINDINGS if bindings is None else bindings)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        keyboard = pynput_keyboard()
        self._listener = keyboard.Listener(on_press=self.on_press)
        self._listener.start()

    def on_press(self, key: Any) -> None:
        event = self.bindings.get(key_name(key) or "")
        if event is not None:
            self._events.put(event)

    def events(self) -> list[str]:
        """Events since the last call, oldest first; never blocks."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._listener.stop()

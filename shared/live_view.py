"""The operator's live view: the run streamed to a rerun viewer and saved beside the run.

Off by default. ``--view TARGET`` on the learner, the actor, the simulation pipeline and the
evaluation turns it on; every target also writes a recording (``OUT/view-<process>-<time>.rrd``,
never overwritten, so a resumed run keeps its earlier ones) that ``rerun FILE`` replays:

- ``save``: the recording only (a robot PC with no screen);
- ``spawn``: also a local viewer window (one viewer serves every process of the run: the
  second process finds the first's viewer on the same port);
- ``web``: also a gRPC server and the web viewer on this machine, for a remote operator's
  browser (ports 9876 and 9090 by default);
- ``rerun+http://HOST:9876/proxy``: also stream to a viewer the operator already runs elsewhere
  (``rerun`` on their desktop): the learner on the GPU box and the actor on the robot PC then
  show in one window, as one recording (both name it from the policy contract's fingerprint).

Streams (entity paths; the timelines are ``actor_step``/``env_step`` and rerun's own wall clock):
``actor/camera/<key>`` (JPEG), ``actor/action``, ``actor/intervening``, ``actor/reward``,
``actor/classifier_prob``, ``actor/policy`` (0 frozen warmup, else the weights version),
``actor/episode/*``; the learner's ``learner/*`` (losses, Q, rates), ``diag/*`` (the paper's
diagnostics on the probes), ``actor/*`` episode stats as the learner receives them, and
``events`` (alarms, rollbacks, checkpoints). The view never stops the process it watches: a
failed log call is reported once and the view turns itself off.

rerun's own documents: https://rerun.io/docs (``RecordingStream.set_sinks``, ``FileSink``,
``GrpcSink``, ``GrpcServerSink``, ``serve_web_viewer``; the recording read back with
``rerun.chunk.RrdReader``, as ``tests/test_live_view.py`` does).
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.command_line import add_options, option

log = logging.getLogger("wsrl.view")

APPLICATION_ID = "wsrl"
TARGETS = ("off", "save", "spawn", "web")  # or a viewer's rerun+http:// URL
GRPC_PORT = 9876  # rerun's default port for its viewer and gRPC server
WEB_PORT = 9090  # rerun's default port for the web viewer
_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")  # rerun entity paths take these unescaped
JPEG_QUALITY = 80  # a 128 px wrist frame: 98 KB raw, a few KB as JPEG (the recording stays small)


def check_target(target: str) -> str:
    """``target`` when it names a view, else a ValueError that says what does."""
    if target in TARGETS or target.startswith(("rerun://", "rerun+http://", "rerun+https://")):
        return target
    raise ValueError(
        f"--view {target!r}: choose one of {', '.join(TARGETS)} or a viewer URL rerun+http://HOST:PORT/proxy"
    )


def _target_argument(target: str) -> str:
    try:
        return check_target(target)
    except ValueError as e:  # argparse prints an ArgumentTypeError's own words, a ValueError's not
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclass(frozen=True)
class ViewChoice:
    """The ``--view`` setting of every command with a live view (a command's config inherits it)."""

    view: str = option(
        "off",
        "live view (rerun): off, save (a recording beside the run), spawn (and a local viewer), web (and the web "
        "viewer for a remote browser), or a viewer's URL rerun+http://HOST:9876/proxy",
        metavar="TARGET",
        parse=_target_argument,
    )

    def __post_init__(self) -> None:
        check_target(self.view)


def add_view_argument(parser: Any) -> None:
    """``--view`` on a command that reads ``args.view`` itself (not through ``command_config``)."""
    add_options(parser, ViewChoice, fill_defaults=True)


class LiveView:
    """One process's rerun recording. Build it with ``open_view``; every method is cheap to call
    and never raises (the view must not stop the robot)."""

    def __init__(self, target: str, out_dir: str | Path, process: str, recording_id: str) -> None:
        import rerun as rr  # the view's only import of rerun: a run without --view never loads it

        self._rr = rr
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = out / f"view-{process}-{stamp}.rrd"
        n = 1
        while self.path.exists():  # a process restarted within the second keeps its predecessor's
            n += 1
            self.path = out / f"view-{process}-{stamp}-{n}.rrd"
        self.rec = rr.RecordingStream(APPLICATION_ID, recording_id=recording_id)
        sinks: list[Any] = [rr.FileSink(str(self.path))]
        if target == "spawn":
            # the viewer binary comes with rerun-sdk beside this interpreter, which launch/*.sh run
            # without the venv on PATH; an existing viewer on the port is reused
            viewer = Path(sys.executable).with_name("rerun")
            rr.spawn(
                port=GRPC_PORT,
                connect=False,
                recording=self.rec,
                executable_path=str(viewer) if viewer.exists() else None,
            )
            sinks.append(rr.GrpcSink(f"rerun+http://127.0.0.1:{GRPC_PORT}/proxy"))
        elif target == "web":
            sinks.append(rr.GrpcServerSink(port=GRPC_PORT))
        elif target != "save":
            sinks.append(rr.GrpcSink(target))
        self.rec.set_sinks(*sinks)
        if target == "web":
            # the server binds every interface; a remote browser must be told this host's name
            host = socket.gethostname()
            data = f"rerun+http://{host}:{GRPC_PORT}/proxy"
            rr.serve_web_viewer(web_port=WEB_PORT, open_browser=False, connect_to=data)
            log.warning(
                "view: open http://%s:%d/?url=%s in a browser (any name of this host will do)", host, WEB_PORT, data
            )
        self._failed = False
        log.info("view: %s streams to %s and records to %s", process, target, self.path)

    def _guard(self, what: str, fn: Any) -> None:
        if self._failed:
            return
        try:
            fn()
        except Exception as e:  # the view is an aid: a failure turns it off, never the run
            self._failed = True
            log.warning("view: %s failed (%s); the live view is off for the rest of this run", what, e)

    def at(self, timeline: str, step: int) -> None:
        """Stamp what follows with ``step`` on ``timeline`` (and rerun's wall clock)."""
        self._guard("set_time", lambda: self.rec.set_time(timeline, sequence=int(step)))

    def scalars(self, prefix: str, values: Mapping[str, Any]) -> None:
        """Each finite number (or vector of numbers) as a time series ``prefix/name``; anything
        else (a NaN, a string, None) is left out."""

        def send() -> None:
            for name, value in values.items():
                try:
                    arr = np.asarray(value, dtype=np.float64).reshape(-1)
                except (TypeError, ValueError):
                    continue
                if arr.size == 0 or not np.all(np.isfinite(arr)):
                    continue  # a NaN is the health monitor's business (NON_FINITE), not a plot's
                self.rec.log(_UNSAFE.sub("_", f"{prefix}/{name}"), self._rr.Scalars(arr))

        self._guard("scalars", send)

    def images(self, prefix: str, obs: Mapping[str, Any]) -> None:
        """Each camera frame of an observation (uint8 H×W×3) as ``prefix/<key>``, JPEG-compressed."""

        def send() -> None:
            for key, value in obs.items():
                if getattr(value, "dtype", None) == np.uint8 and np.ndim(value) == 3:
                    image = self._rr.Image(np.asarray(value), color_model="RGB")
                    self.rec.log(f"{prefix}/{key}", image.compress(jpeg_quality=JPEG_QUALITY))

        self._guard("images", send)

    def event(self, text: str, level: str = "INFO") -> None:
        """One line in the view's ``events`` log (alarms, rollbacks, checkpoints)."""
        self._guard("event", lambda: self.rec.log("events", self._rr.TextLog(text, level=level)))

    def close(self) -> None:
        try:
            self.rec.flush()
            self.rec.disconnect()
        except Exception as e:  # closing must not turn a clean stop into a crash
            log.warning("view: closing the recording failed: %s", e)


def open_view(target: str, out_dir: str | Path, process: str, recording_id: str) -> LiveView | None:
    """The view ``target`` asks for (None for ``off``). ``recording_id``: the same in every
    process of one run, so a viewer shows them as one recording."""
    check_target(target)
    if target == "off":
        return None
    return LiveView(target, out_dir, process, recording_id)


def view_recording_id(fingerprint: str) -> str:
    """The recording every process of one run names (the learner and its actors share the
    policy contract's fingerprint), so one viewer shows them together."""
    return f"wsrl-{fingerprint}"


def read_recording(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A recording read back: entity path -> its rows in logging order, each a dict of the
    timelines (``actor_step``, ``env_step``, ``log_time``, ...) and the logged value:
    ``scalars`` (a list of floats), ``image`` (an H×W×3 uint8 array, decoded) or ``text`` and
    ``level``. For tests and for a person's own analysis of a finished run."""
    import io

    import pyarrow as pa
    from PIL import Image
    from rerun.chunk import RrdReader

    named = {"Scalars:scalars": "scalars", "TextLog:text": "text", "TextLog:level": "level"}
    streams: dict[str, list[dict[str, Any]]] = {}
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        cols = {}
        for name in batch.schema.names:
            col = batch.column(name)
            if pa.types.is_timestamp(col.type):  # ns since the epoch, as an int (no pandas here)
                col = col.cast(pa.int64())
            cols[name] = col.to_pylist()
        for i in range(batch.num_rows):
            row: dict[str, Any] = {t: cols[t][i] for t in chunk.timeline_names}
            for name, key in named.items():
                if name in cols and cols[name][i] is not None:
                    value = cols[name][i]
                    row[key] = value[0] if key != "scalars" else value
            if "EncodedImage:blob" in cols:
                blob = bytes(cols["EncodedImage:blob"][i][0])
                row["image"] = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            streams.setdefault(chunk.entity_path.lstrip("/"), []).append(row)
    for rows in streams.values():
        rows.sort(key=lambda r: r.get("log_time") or 0)
    return streams

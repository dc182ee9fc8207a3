"""Labelled camera frames for the reward classifier: the recorder writes them, training reads them.

A dataset is a folder::

    DIR/meta.json                      format, task, image keys, image size, label source
    DIR/episodes/episode_000000.npz    one recorded episode (written whole, atomically)

Each episode file (uncompressed ``.npz``, read with ``allow_pickle=False``) holds ``N`` frames:

| key               | shape / dtype        | meaning                                                 |
|-------------------|----------------------|---------------------------------------------------------|
| ``images/<key>``  | [N, H, W, 3] uint8   | the frame of each camera in ``meta.json``'s image keys  |
| ``labels``        | [N] uint8            | 1 success, 0 failure (a person's key, or ground truth)  |
| ``env_success``   | [N] int8             | the env's own verdict: 1, 0, or -1 where it has none    |
| ``state``         | [N, D] float32       | the proprio vector beside the frame (for inspection)    |
| ``step``          | [N] int32            | control step within the episode (0 = the reset frame)  |

An episode is written once it ends, so a crash loses at most the open episode. Loading checks
every file against ``meta.json`` and names the file and key of the first defect.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "wsrl-labelled-images-v1"
LABEL_SOURCES = ("keyboard", "ground_truth")


class LabelledImagesError(ValueError):
    """A labelled-image dataset that is missing, unreadable or does not fit its meta.json."""


@dataclass(frozen=True)
class LabelledImages:
    """Frames of one or more datasets, concatenated; ``episode`` numbers are unique across them."""

    images: dict[str, np.ndarray]  # key -> [N, H, W, 3] uint8
    labels: np.ndarray  # [N] uint8
    env_success: np.ndarray  # [N] int8
    episode: np.ndarray  # [N] int64
    image_size: int
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(self.images)

    def counts(self) -> dict[str, int]:
        succ = int(self.labels.sum())
        return {
            "frames": len(self),
            "success": succ,
            "failure": len(self) - succ,
            "episodes": int(np.unique(self.episode).size),
        }


class LabelledImageWriter:
    """Appends episodes to a dataset folder (creating it, or continuing one with the same meta)."""

    def __init__(
        self,
        directory: str | Path,
        image_keys: Sequence[str],
        image_size: int,
        task: str,
        label_source: str,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
        self.directory = Path(directory)
        self.image_keys = tuple(image_keys)
        self.image_size = int(image_size)
        meta = {
            "format": FORMAT,
            "task": task,
            "image_keys": list(self.image_keys),
            "image_size": self.image_size,
            "label_source": label_source,
        }
        path = self.directory / "meta.json"
        if path.exists():
            old = read_meta(self.directory)
            for k in ("task", "image_keys", "image_size"):
                if old[k] != meta[k]:
                    raise LabelledImagesError(
                        f"{path}: this dataset has {k}={old[k]!r}, the recording has "
                        f"{meta[k]!r}; record into a new folder"
                    )
            if old["label_source"] != label_source:
                meta["label_source"] = "mixed"
        (self.directory / "episodes").mkdir(parents=True, exist_ok=True)
        meta = {**dict(extra or {}), **meta, "updated_at": time.time()}  # extras never override the format
        tmp = path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path)
        self.next_index = 1 + max((_episode_number(p) for p in self._files()), default=-1)

    def _files(self) -> list[Path]:
        return sorted((self.directory / "episodes").glob("episode_*.npz"))

    def write_episode(
        self,
        frames: Sequence[Mapping[str, np.ndarray]],
        labels: Sequence[int],
        env_success: Sequence[int],
        states: Sequence[np.ndarray],
    ) -> Path:
        """Write one episode (frames[i] holds each image key); returns its file."""
        n = len(frames)
        if not n == len(labels) == len(env_success) == len(states):
            raise ValueError("frames, labels, env_success and states must have the same length")
        if n == 0:
            raise ValueError("an episode needs at least one frame")
        arrays: dict[str, Any] = {}
        for k in self.image_keys:
            arrays[f"images/{k}"] = np.stack([np.asarray(f[k], np.uint8) for f in frames])
        arrays["labels"] = np.asarray(labels, np.uint8)
        arrays["env_success"] = np.asarray(env_success, np.int8)
        arrays["state"] = np.stack([np.asarray(s, np.float32) for s in states])
        arrays["step"] = np.arange(n, dtype=np.int32)
        _check_episode(arrays, self.image_keys, self.image_size, "episode to write")
        path = self.directory / "episodes" / f"episode_{self.next_index:06d}.npz"
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.next_index += 1
        return path


def _episode_number(path: Path) -> int:
    try:
        return int(path.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise LabelledImagesError(f"{directory}: not a labelled-image dataset (no meta.json)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LabelledImagesError(f"{path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LabelledImagesError(
            f"{path}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}"
        )
    for k in ("task", "image_keys", "image_size", "label_source"):
        if k not in meta:
            raise LabelledImagesError(f"{path}: missing '{k}'")
    return meta


def _check_episode(arrays: Mapping[str, np.ndarray], image_keys: Sequence[str], size: int, where: str) -> int:
    expected = {f"images/{k}" for k in image_keys} | {"labels", "env_success", "state", "step"}
    missing = sorted(expected - set(arrays))
    if missing:
        raise LabelledImagesError(f"{where}: missing '{missing[0]}'")
    extra = sorted(set(arrays) - expected)
    if extra:
        raise LabelledImagesError(f"{where}: unexpected key '{extra[0]}'")
    n = arrays["labels"].shape[0] if arrays["labels"].ndim == 1 else -1
    if n < 1:
        raise LabelledImagesError(
            f"{where}: 'labels' must be a non-empty 1-D array, got shape {arrays['labels'].shape}"
        )
    for k in image_keys:
        a = arrays[f"images/{k}"]
        if a.dtype != np.uint8 or a.shape != (n, size, size, 3):
            raise LabelledImagesError(
                f"{where}: 'images/{k}' is {a.dtype} {a.shape}, expected uint8 {(n, size, size, 3)}"
            )
    for key, dtype in (("labels", np.uint8), ("env_success", np.int8), ("step", np.int32)):
        a = arrays[key]
        if a.dtype != dtype or a.shape != (n,):
            raise LabelledImagesError(f"{where}: '{key}' is {a.dtype} {a.shape}, expected {np.dtype(dtype)} ({n},)")
    state = arrays["state"]
    if state.dtype != np.float32 or state.ndim != 2 or state.shape[0] != n:
        raise LabelledImagesError(f"{where}: 'state' is {state.dtype} {state.shape}, expected float32 ({n}, D)")
    if not np.isin(arrays["labels"], (0, 1)).all():
        raise LabelledImagesError(
            f"{where}: labels must be 0 or 1, found {sorted(set(arrays['labels'].tolist()) - {0, 1})}"
        )
    if not np.isin(arrays["env_success"], (-1, 0, 1)).all():
        raise LabelledImagesError(f"{where}: env_success must be -1, 0 or 1")
    return n


def load_labelled_images(directories: Sequence[str | Path]) -> LabelledImages:
    """Every episode of every dataset folder (all with the same image keys and size)."""
    if not directories:
        raise LabelledImagesError("no dataset folders given")
    images: dict[str, list[np.ndarray]] = {}
    labels, env_success, episode, sources = [], [], [], []
    keys: tuple[str, ...] = ()
    size = 0
    ep = 0
    for d in directories:
        meta = read_meta(d)
        k, s = tuple(meta["image_keys"]), int(meta["image_size"])
        if not keys:
            keys, size = k, s
            images = {key: [] for key in keys}
        elif (k, s) != (keys, size):
            raise LabelledImagesError(
                f"{d}: image keys {k} at {s} px differ from {directories[0]}'s {keys} at {size} px"
            )
        files = sorted((Path(d) / "episodes").glob("episode_*.npz"))
        files = [f for f in files if not f.name.endswith(".tmp.npz")]
        if not files:
            raise LabelledImagesError(f"{d}: no recorded episodes in {Path(d) / 'episodes'}")
        for f in files:
            try:
                with np.load(f, allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
            except Exception as e:  # truncated zip, bad header, pickled object arrays
                raise LabelledImagesError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
            n = _check_episode(arrays, keys, size, str(f))
            for key in keys:
                images[key].append(arrays[f"images/{key}"])
            labels.append(arrays["labels"])
            env_success.append(arrays["env_success"])
            episode.append(np.full(n, ep, np.int64))
            ep += 1
        sources.append(str(meta["label_source"]))
    return LabelledImages(
        images={key: np.concatenate(v) for key, v in images.items()},
        labels=np.concatenate(labels),
        env_success=np.concatenate(env_success),
        episode=np.concatenate(episode),
        image_size=int(size),
        sources=tuple(sources),
    )

"""Observation frames kept on disk: append-only, memory-mapped segment files, one key each.

A replay buffer of camera images outgrows RAM long before disk (two 128 px cameras are 98 KB a
transition: 200k transitions are 20 GB). ``SegmentedFrames`` holds one observation key's frames
in fixed-length ``.npy`` segments addressed by the frame's *serial* (the buffer's write counter),
not by its ring slot: serial ``s`` lives in segment ``s // length`` at row ``s % length``. So a
frame, once written, is never overwritten while the process lives; a ring that wraps writes new
segments instead. That is what makes incremental checkpoints cheap (``shared/storage/replay_delta.py``):
a checkpoint flushes the rows written since the last one and refers to the segment files,
without copying a frame, and a checkpoint's frames stay intact however far the ring moves on.
Old segments are deleted by whoever knows which checkpoints still need them (the learner's
checkpointer), never here.

The OS page cache keeps recently used segments in memory; the rest is read from disk when
sampled.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

SEGMENT_BYTES = 64 << 20  # a segment's target size: few files, and little disk past the ring
_KEY = re.compile(r"[A-Za-z0-9_.@-]+")  # '@': derived keys (shared.data.dataset.derived_key)


def segment_length(shape: tuple[int, ...], dtype: str, capacity: int) -> int:
    """Frames per segment: about ``SEGMENT_BYTES``, at most the ring's capacity."""
    frame = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return int(max(1, min(capacity, SEGMENT_BYTES // max(frame, 1))))


class SegmentedFrames:
    """One observation key's frames, in ``<directory>/<key>_<segment>.npy`` files."""

    def __init__(self, directory: str | Path, key: str, shape: tuple[int, ...], dtype: str, length: int) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"observation key {key!r} cannot name a file (letters, digits, '_', '.', '@', '-' only)")
        if length < 1:
            raise ValueError("segment length must be positive")
        self.directory = Path(directory)
        self.key, self.shape, self.dtype, self.length = key, tuple(shape), np.dtype(dtype), int(length)
        self._open: dict[int, np.memmap] = {}

    def path(self, segment: int) -> Path:
        return self.directory / f"{self.key}_{segment:08d}.npy"

    def segments(self, start: int, end: int) -> range:
        """The segments holding serials [start, end)."""
        return range(start // self.length, (end - 1) // self.length + 1) if end > start else range(0)

    def _segment(self, segment: int) -> np.memmap:
        mm = self._open.get(segment)
        if mm is None:
            path = self.path(segment)
            if path.exists():  # written before: by this process, or by the one a resume continues
                mm = np.load(path, mmap_mode="r+")
                if mm.shape != (self.length, *self.shape) or mm.dtype != self.dtype:
                    raise OSError(
                        f"{path}: holds {mm.dtype}{list(mm.shape)}, expected "
                        f"{self.dtype}{[self.length, *self.shape]} (another run's frames?)"
                    )
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                mm = np.lib.format.open_memmap(path, "w+", self.dtype, (self.length, *self.shape))
            self._open[segment] = mm
        return mm

    def write(self, serial: int, frame: np.ndarray) -> None:
        self._segment(serial // self.length)[serial % self.length] = frame

    def read(self, serials: np.ndarray) -> np.ndarray:
        serials = np.asarray(serials, np.int64)
        out = np.empty((*serials.shape, *self.shape), self.dtype)
        flat, dst = serials.reshape(-1), out.reshape(-1, *self.shape)
        seg = flat // self.length
        for g in np.unique(seg):
            where = np.flatnonzero(seg == g)
            dst[where] = self._segment(int(g))[flat[where] % self.length]
        return out

    def read_one(self, serial: int) -> np.ndarray:
        return np.asarray(self._segment(serial // self.length)[serial % self.length])

    def release_below(self, serial: int) -> None:
        """Unmap segments wholly below ``serial`` (overwritten in the ring; files stay on disk)."""
        for g in [g for g in self._open if (g + 1) * self.length <= serial]:
            del self._open[g]

    def flush(self, start: int, end: int) -> None:
        """Make serials [start, end) durable (msync of their segments)."""
        for g in self.segments(start, end):
            self._segment(g).flush()

    def checksum(self, start: int, end: int) -> int:
        """CRC32 of the frames of serials [start, end), in order."""
        crc = 0
        s = start
        while s < end:
            row = s % self.length
            n = min(end - s, self.length - row)
            crc = zlib.crc32(np.ascontiguousarray(self._segment(s // self.length)[row : row + n]).data, crc)
            s += n
        return crc

    def files(self, start: int, end: int) -> list[str]:
        return [self.path(g).name for g in self.segments(start, end)]

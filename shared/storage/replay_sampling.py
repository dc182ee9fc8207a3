"""The replay buffer's sampling rules: uniform minibatches (``leading=(utd,)`` for a whole
high-UTD update at once), HIL-SERL's share of intervened transitions per minibatch, the first
transitions in arrival order (the learner's online probe), and observation keys read on demand
(a learner on cached trunk features leaves the images on disk)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from shared.storage.replay_ring import ReplayRing


class RingSampling(ReplayRing):
    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        leading: tuple[int, ...] = (),
        intervened_fraction: float = 0.0,
        keys: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Uniform sample of transitions; ``leading=(utd,)`` gives arrays of [utd, B, ...].
        ``keys``: the observation keys to read (default all; a learner training on cached trunk
        features leaves the images on disk).

        ``intervened_fraction``: each minibatch's first ``round(fraction * B)`` transitions are
        drawn from the intervened ones alone (a demo buffer's share, HIL-SERL style), the rest
        from all; while none is stored, all are drawn uniformly."""
        rows = int(np.prod(leading, dtype=np.int64))
        n = rows * batch_size
        with self._lock:
            idx = self._sample_indices(n, rng)
            k = round(intervened_fraction * batch_size)
            if k > 0:
                filled = min(self._written, self.capacity)
                pool = np.flatnonzero(self.valid[:filled] & self.intervened[:filled])
                if pool.size:
                    idx.reshape(rows, batch_size)[:, :k] = pool[rng.integers(0, pool.size, (rows, k))]
            batch = self._rows(idx, keys)
        shape = tuple(leading) + (batch_size,)
        return reshape_leading(batch, shape)

    def first(self, n: int, keys: Collection[str] | None = None) -> dict[str, Any] | None:
        """The first ``n`` transitions still stored, in arrival order (None while fewer are in):
        the learner's online probe."""
        with self._lock:
            filled = min(self._written, self.capacity)
            idx = np.flatnonzero(self.valid[:filled])
            if idx.size < n:
                return None
            if self._written > self.capacity:  # the ring wrapped: arrival order starts at the write head
                idx = np.roll(idx, -int(np.searchsorted(idx, self._written % self.capacity)))
            return self._rows(idx[:n], keys)

    def _rows(self, idx: np.ndarray, keys: Collection[str] | None) -> dict[str, Any]:
        obs_idx = self.obs_slot[idx]
        read = self.obs_spec if keys is None else keys
        return {
            "observations": {k: self.frame(k, obs_idx) for k in read},
            "next_observations": {k: self.frame(k, idx) for k in read},
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "masks": self.masks[idx],
            "dones": self.dones[idx].astype(np.float32),
            "mc_returns": self.mc_returns[idx],
        }

    def _sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        filled = min(self._written, self.capacity)
        if not self.valid[:filled].any():
            raise ValueError("cannot sample from a replay buffer with no transitions")
        idx = rng.integers(0, filled, n)
        bad = ~self.valid[idx]
        while bad.any():  # reset-observation slots are a small fraction: redraw those
            idx[bad] = rng.integers(0, filled, int(bad.sum()))
            bad = ~self.valid[idx]
        return idx


def reshape_leading(tree: Any, shape: tuple[int, ...]) -> Any:
    """Give every array of a (nested dict) batch the leading ``shape`` in place of its first axis."""
    if isinstance(tree, dict):
        return {k: reshape_leading(v, shape) for k, v in tree.items()}
    return np.reshape(tree, (*shape, *np.shape(tree)[1:]))

"""Convert a user's SERL assets (Python pickles) into this project's formats, offline.

SERL ships its ImageNet ResNet-10 weights (``resnet10_params.pkl``) and saves replay buffers and
demonstrations (``transitions_*.pkl``, demo files) as pickles. Unpickling runs whatever the file
says, so this tool reads them with a restricted unpickler that builds numpy arrays and plain
containers only (dict, list, tuple, str, numbers; flax's FrozenDict and jax arrays are read as a
dict and a numpy array) and refuses anything else with the name of what the file asked for. It
runs in its own process (``launch/convert_serl.sh``); nothing in the runtime ever unpickles.

- ``resnet``: ``resnet10_params.pkl`` -> the trunk ``.npz`` that ``EncoderConfig.pretrained_path``
  loads (SERL's parameter names mapped to ``shared.learning.encoders.ResNet10Trunk``'s, whose layout is
  SERL's: 4-group GroupNorm, the same padding).
- ``transitions``: lists of SERL transitions (``observations``/``next_observations`` dicts with a
  leading frame axis of 1, ``actions``, ``rewards`` 0/1, ``masks``, ``dones``) -> the dataset format
  (``shared.storage.replay_buffer.ReplayBuffer.save``), rewards through ``RewardConfig``.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.command_line import add_config_options, add_options, command_config, option, print_config
from shared.config import RewardConfig


class UnsafePickleError(ValueError):
    """The pickle asked for something other than numpy arrays and plain containers."""


def _numpy_reconstruct() -> Callable[..., Any]:
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


def _numpy_scalar() -> Callable[..., Any]:
    from numpy._core.multiarray import scalar

    return scalar


def _jax_array(fun: Any, args: Any, arr_state: Any, aval_state: Any) -> np.ndarray:
    """A pickled jax array, read as the numpy array it holds (no device, no jax import)."""
    if fun is not _numpy_reconstruct():
        raise UnsafePickleError("a jax array in the pickle is not built from a numpy array")
    arr = fun(*args)
    arr.__setstate__(arr_state)
    return arr


def _frozen_dict(*args: Any) -> dict[str, Any]:
    """flax's FrozenDict pickles as ``FrozenDict(dict)``: read as that dict."""
    if len(args) != 1 or not isinstance(args[0], dict):
        raise UnsafePickleError("a FrozenDict in the pickle does not hold a plain dict")
    return dict(args[0])


# (module, name) -> what to build instead. numpy moved its core to numpy._core in 2.0; pickles
# from numpy 1.x name numpy.core.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    **{(m, "_reconstruct"): _numpy_reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _numpy_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("jax._src.array", "_reconstruct_array"): lambda: _jax_array,
    ("flax.core.frozen_dict", "FrozenDict"): lambda: _frozen_dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise UnsafePickleError(
                f"the pickle asks for {module}.{name}; only numpy arrays and plain containers are read"
            )
        return make()


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` building numpy arrays and plain containers only; ``UnsafePickleError``
    (naming what the file asked for) for anything else, before it is built."""
    data = Path(path).read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj, str(path))
    return obj


def _check_plain(obj: Any, where: str) -> None:
    """Arrays of Python objects could still hide anything: refused, as are other leaf types."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise UnsafePickleError(f"{where}: a dict key of type {type(k).__name__}")
            _check_plain(v, f"{where}/{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"{where}: an array of Python objects")
    elif not isinstance(obj, str | bytes | int | float | bool | np.generic | type(None)):
        raise UnsafePickleError(f"{where}: a value of type {type(obj).__name__}")


# ------------------------------------------------------------------------------ ResNet-10 weights

_BLOCK_NAMES = {
    "Conv_0": "conv1",
    "MyGroupNorm_0": "norm1",
    "Conv_1": "conv2",
    "MyGroupNorm_1": "norm2",
    "conv_proj": "proj",
    "norm_proj": "proj_norm",
}


def serl_resnet_to_trunk(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SERL's ResNet-10 parameter tree -> ``ResNet10Trunk``'s flat ``path/to/param`` arrays."""
    flat: dict[str, np.ndarray] = {}
    for top, sub in params.items():
        if top in ("conv_init", "norm_init"):
            name = top
            leaves = {top: sub}
        elif top.startswith("ResNetBlock_") and top.removeprefix("ResNetBlock_").isdigit():
            name = f"stage{top.removeprefix('ResNetBlock_')}"
            unknown = sorted(set(sub) - set(_BLOCK_NAMES))
            if unknown:
                raise ValueError(f"unexpected module {top}/{unknown[0]} in the ResNet-10 weights")
            leaves = {f"{name}/{_BLOCK_NAMES[k]}": v for k, v in sub.items()}
        else:
            raise ValueError(f"unexpected module {top!r} in the ResNet-10 weights (not SERL's ResNet-10)")
        for path, leaf in leaves.items():
            for param, value in leaf.items():
                flat[f"{path}/{param}"] = np.asarray(value, np.float32)
    return flat


def convert_resnet(src: str | Path, out: str | Path) -> dict[str, Any]:
    flat: dict[str, Any] = serl_resnet_to_trunk(restricted_load(src))
    np.savez(out, **flat)
    return {"parameters": int(sum(v.size for v in flat.values())), "arrays": len(flat)}


# ------------------------------------------------------------------------------ transitions


def _frame(x: Any) -> np.ndarray:
    """SERL's observations carry a leading frame axis (its chunking wrapper, horizon 1)."""
    a = np.asarray(x)
    return a[0] if a.ndim >= 1 and a.shape[0] == 1 else a


def _obs(d: Mapping[str, Any], keys: Iterable[str]) -> dict[str, np.ndarray]:
    out = {}
    for k in keys:
        v = _frame(d[k])
        out[k] = v.astype(np.uint8) if v.ndim == 3 else v.astype(np.float32)
    return out


def convert_transitions(
    sources: list[str | Path], out: str | Path, gamma: float, reward: RewardConfig, keys: list[str] | None = None
) -> dict[str, Any]:
    """SERL transition pickles (each a list of transition dicts, in the order they were taken)
    -> one dataset file. ``keys``: the observation keys to keep (default: all of the first)."""
    from shared.data.dataset import Transition, obs_spec_of
    from shared.storage.replay_buffer import ReplayBuffer

    transitions: list[Mapping[str, Any]] = []
    for src in sources:
        data = restricted_load(src)
        if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
            raise ValueError(f"{src}: expected a list of transition dicts, got {type(data).__name__}")
        transitions.extend(data)
    if not transitions:
        raise ValueError("no transitions in " + ", ".join(map(str, sources)))
    need = {"observations", "actions", "next_observations", "rewards", "masks", "dones"}
    missing = sorted(need - set(transitions[0]))
    if missing:
        raise ValueError(f"a SERL transition needs {sorted(need)}; missing {missing}")
    keys = sorted(keys or transitions[0]["observations"])
    first = _obs(transitions[0]["observations"], keys)
    action_dim = int(np.asarray(transitions[0]["actions"]).shape[-1])
    buf = ReplayBuffer(obs_spec_of(first), action_dim, 2 * len(transitions) + 2, gamma, reward.negative)
    successes = episodes = 0
    for i, t in enumerate(transitions):
        raw = float(np.asarray(t["rewards"]))
        if raw not in (0.0, 1.0):
            raise ValueError(f"transition {i}: reward {raw}, SERL's sparse rewards are 0 or 1")
        done = bool(np.asarray(t["dones"]))
        buf.insert(
            Transition(
                observations=_obs(t["observations"], keys),
                actions=np.asarray(t["actions"], np.float32).reshape(action_dim),
                rewards=float(reward.apply(raw)),
                next_observations=_obs(t["next_observations"], keys),
                masks=float(np.asarray(t["masks"])),
                dones=done,
            )
        )
        episodes += done
        successes += done and raw == 1.0
    summary = {
        "transitions": len(transitions),
        "episodes": episodes,
        "success_rate": round(successes / episodes, 3) if episodes else None,
        "keys": keys,
        "sources": [str(s) for s in sources],
    }
    buf.save(out, info={"source": "serl", "summary": summary})
    return summary


@dataclass(frozen=True)
class ConvertResnetConfig:
    """``wsrl-convert-serl resnet``: its ``convert_resnet:`` section."""

    src: str | None = option(None, "SERL's resnet10_params.pkl (required)", positional=True)
    out: str | None = option(None, "the trunk .npz to write (required)")


@dataclass(frozen=True)
class ConvertTransitionsConfig:
    """``wsrl-convert-serl transitions``: its ``convert_transitions:`` section."""

    src: tuple[str, ...] = option((), "SERL transition pickles (required)", positional=True)
    out: str | None = option(None, "the dataset .npz to write (required)")
    gamma: float = option(0.98, "discount of the stored Monte-Carlo returns")
    keys: tuple[str, ...] = option((), "observation keys to keep (default: all)")
    reward_scale: float = option(RewardConfig.scale, "reward = scale * SERL's reward + bias")
    reward_bias: float = option(RewardConfig.bias, "reward = scale * SERL's reward + bias")


SUBCOMMANDS: dict[str, tuple[type, str, str]] = {
    "resnet": (
        ConvertResnetConfig,
        "convert_resnet",
        "resnet10_params.pkl -> a trunk .npz (EncoderConfig.pretrained_path)",
    ),
    "transitions": (ConvertTransitionsConfig, "convert_transitions", "SERL transition pickles -> one dataset .npz"),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    parsers = {}
    for name, (cls, section, help_text) in SUBCOMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_text)
        add_options(parsers[name], cls)
        add_config_options(parsers[name], section)
    cli = p.parse_args(argv)
    cls, section, _ = SUBCOMMANDS[cli.what]
    args: ConvertResnetConfig | ConvertTransitionsConfig = command_config(parsers[cli.what], cli, cls, section)
    if cli.print_config:
        print_config(section, args)
        return
    if not args.src or args.out is None:
        parsers[cli.what].error(f"src and --out are required (or a config file's {section}.src and .out)")
    try:
        if isinstance(args, ConvertResnetConfig):
            summary = convert_resnet(args.src, args.out)
        else:
            reward = RewardConfig(args.reward_scale, args.reward_bias)
            summary = convert_transitions(list(args.src), args.out, args.gamma, reward, list(args.keys) or None)
    except ValueError as e:  # UnsafePickleError included: a clear message, no traceback
        raise SystemExit(f"convert_serl: {e}") from None
    print(json.dumps({"out": args.out, **summary}))


if __name__ == "__main__":
    main()

"""The actor <-> learner wire format: msgpack with numpy arrays as raw bytes, never pickle.

One place for the message types, the protocol version and the limits. Every message is a map
with ``type`` (one of ``MessageType``) and ``v`` (``PROTOCOL_VERSION``). Arrays travel as
``{"__ndarray__": 1, "dtype": name, "shape": [...], "data": bytes}`` with the dtype from an
allow-list and the shape checked against the byte count, so a decoder never allocates more than
the message it was given, and nothing that arrives is ever executed (no pickle, no object dtype).

Big messages (chunks of camera frames) travel as several ZeroMQ frames instead
(``encode_frames`` / ``decode_frames``): a msgpack header where each large array is a
``{"__frame__": i, "dtype", "shape"}`` reference, then the arrays' raw bytes, one frame each.
Sender and receiver then never copy pixels through msgpack, and the receiver's arrays are
read-only views of the received frames. The same checks apply (dtype allow-list, shape against
byte count, total size cap); every data frame must be referenced exactly once.

The transport (sockets, chunking, acknowledgements) is built on top of this by the runtime.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 2  # 2: a chunk's intervention flag is "intervened" (was "interventions")
MAX_MESSAGE_BYTES = 64 * 2**20  # a chunk of transitions is a few MB; weights of a ResNet policy fit too
MAX_NDIM = 8
MAX_DEPTH = 32  # nesting of maps/lists
MAX_FRAMES = 64  # data frames of one multipart message
FRAME_MIN_BYTES = 4096  # arrays at least this big get a frame of their own
_ARRAY_TAG = "__ndarray__"
_FRAME_TAG = "__frame__"
ALLOWED_DTYPES = frozenset(
    {
        "bool",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float16",
        "float32",
        "float64",
    }
)


class MessageType(str, enum.Enum):
    HELLO = "hello"  # actor -> learner: actor id, session id, config fingerprint and the contract it hashes
    WELCOME = "welcome"  # learner -> actor: what it already has from this actor, weights version
    CHUNK = "chunk"  # actor -> learner: a numbered batch of transitions
    ACK = "ack"  # learner -> actor: chunk numbers inserted
    STATS = "stats"  # actor -> learner: episode statistics, no reply
    WEIGHTS = "weights"  # learner -> actor (PUB/SUB): versioned policy parameters
    ERROR = "error"  # either way: a refusal with a reason


class ProtocolError(ValueError):
    """A message that cannot be encoded or that arrived malformed; it names what is wrong."""


class VersionError(ProtocolError):
    """A well-formed message from a peer that speaks another protocol version."""


def make_message(kind: MessageType, **fields: Any) -> dict[str, Any]:
    if "type" in fields or "v" in fields:
        raise ProtocolError("'type' and 'v' are set by make_message")
    return {"type": MessageType(kind).value, "v": PROTOCOL_VERSION, **fields}


def encode(message: Mapping[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Serialise a message (a map with ``type`` and ``v``) to bytes."""
    _check_header(message)
    try:
        data = msgpack.packb(message, default=_pack_array, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"cannot encode message of type {message.get('type')!r}: {e}") from None
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    return data


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse and validate a message from the wire; any defect is a ``ProtocolError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    message = _unpack(bytes(data), max_bytes, "message")
    _check_header(message)
    return _restore(message, 0)


def _unpack(data: bytes | memoryview, max_bytes: int, what: str) -> dict[str, Any]:
    """One msgpack map, every length bounded by ``max_bytes``, no extension types (nothing on
    the wire becomes an object but maps, lists, strings, numbers and bytes)."""
    try:
        message = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"not a valid msgpack {what}: {type(e).__name__}: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    return message


def _check_header(message: Mapping[str, Any]) -> None:
    if not isinstance(message, Mapping):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    if message.get("v") != PROTOCOL_VERSION:
        raise VersionError(f"protocol version {message.get('v')!r}, this side speaks {PROTOCOL_VERSION}")
    try:
        MessageType(message.get("type"))
    except ValueError:
        raise ProtocolError(f"unknown message type {message.get('type')!r}") from None


def _pack_array(obj: Any) -> Any:
    if isinstance(obj, np.generic) and obj.dtype.name in ALLOWED_DTYPES:
        return obj.item()  # numpy scalars travel as plain numbers
    if isinstance(obj, (np.ndarray, np.generic)):
        obj = np.asarray(obj)
        if obj.dtype.name not in ALLOWED_DTYPES:
            raise ProtocolError(f"dtype {obj.dtype} is not allowed on the wire ({sorted(ALLOWED_DTYPES)})")
        if obj.ndim > MAX_NDIM:
            raise ProtocolError(f"array with {obj.ndim} dimensions (at most {MAX_NDIM})")
        little = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<"))
        return {_ARRAY_TAG: 1, "dtype": obj.dtype.name, "shape": list(obj.shape), "data": little.tobytes()}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _restore(obj: Any, depth: int, frames: list | None = None, used: set | None = None) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        if _ARRAY_TAG in obj:
            return _unpack_array(obj)
        if _FRAME_TAG in obj:
            if frames is None or used is None:
                raise ProtocolError("a frame reference in a single-frame message")
            return _frame_array(obj, frames, used)
        return {k: _restore(v, depth + 1, frames, used) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, depth + 1, frames, used) for v in obj]
    return obj


# ------------------------------------------------------------------- multipart (zero-copy)


def encode_frames(message: Mapping[str, Any], max_bytes: int = MAX_MESSAGE_BYTES) -> list[Any]:
    """Serialise to ``[header, data...]``: big arrays become frames of their own (no copy of
    their bytes here; send with ``copy=False``)."""
    _check_header(message)
    data: list[Any] = []

    def split(obj: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
        if isinstance(obj, Mapping):
            return {k: split(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [split(v, depth + 1) for v in obj]
        if isinstance(obj, np.ndarray) and obj.nbytes >= FRAME_MIN_BYTES and obj.dtype.name in ALLOWED_DTYPES:
            if obj.ndim > MAX_NDIM:
                raise ProtocolError(f"array with {obj.ndim} dimensions (at most {MAX_NDIM})")
            if len(data) >= MAX_FRAMES:
                raise ProtocolError(f"more than {MAX_FRAMES} large arrays in one message")
            little = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<"))
            data.append(memoryview(little.data).cast("B"))
            return {_FRAME_TAG: len(data), "dtype": obj.dtype.name, "shape": list(obj.shape)}
        return obj

    header = encode(split(message, 0), max_bytes)
    total = len(header) + sum(d.nbytes for d in data)
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the {max_bytes}-byte limit")
    return [header, *data]


def decode_frames(frames: list[Any], max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse ``[header, data...]`` (bytes or buffers); arrays in data frames come back as
    read-only views of those frames."""
    if not frames:
        raise ProtocolError("no frames")
    if len(frames) - 1 > MAX_FRAMES:
        raise ProtocolError(f"{len(frames) - 1} data frames (at most {MAX_FRAMES})")
    views = [memoryview(f).cast("B") for f in frames]
    total = sum(v.nbytes for v in views)
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the {max_bytes}-byte limit")
    message = _unpack(views[0], max_bytes, "header")
    _check_header(message)
    used: set[int] = set()
    out = _restore(message, 0, views, used)
    if len(used) != len(views) - 1:
        raise ProtocolError(f"{len(views) - 1 - len(used)} data frame(s) not referenced by the header")
    return out


def _frame_array(obj: dict[str, Any], frames: list[memoryview], used: set[int]) -> np.ndarray:
    if set(obj) != {_FRAME_TAG, "dtype", "shape"}:
        raise ProtocolError(f"frame record has keys {sorted(obj)}")
    index = obj[_FRAME_TAG]
    if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index < len(frames):
        raise ProtocolError(f"frame reference {index!r} outside the message's {len(frames) - 1} data frames")
    if index in used:
        raise ProtocolError(f"data frame {index} referenced twice")
    used.add(index)
    dtype, shape = _check_dtype_shape(obj["dtype"], obj["shape"])
    buf = frames[index]
    expected = math.prod(shape) * dtype.itemsize
    if expected != buf.nbytes:
        raise ProtocolError(
            f"array of dtype {obj['dtype']} and shape {shape} needs {expected} bytes, frame {index} has {buf.nbytes}"
        )
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def _check_dtype_shape(name: Any, shape: Any) -> tuple[np.dtype, list[int]]:
    if not isinstance(name, str) or name not in ALLOWED_DTYPES:
        raise ProtocolError(f"array dtype {name!r} is not allowed")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ProtocolError(f"array shape {shape!r} is not a list of at most {MAX_NDIM} sizes")
    return np.dtype(name).newbyteorder("<"), shape


def _unpack_array(obj: dict[str, Any]) -> np.ndarray:
    if set(obj) != {_ARRAY_TAG, "dtype", "shape", "data"}:
        raise ProtocolError(f"array record has keys {sorted(obj)}")
    name, data = obj["dtype"], obj["data"]
    dtype, shape = _check_dtype_shape(name, obj["shape"])
    if not isinstance(data, bytes):
        raise ProtocolError("array data must be bytes")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
    if expected != len(data):
        raise ProtocolError(f"array of dtype {name} and shape {shape} needs {expected} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(np.dtype(name), copy=True)  # native byte order, writable, owns its memory

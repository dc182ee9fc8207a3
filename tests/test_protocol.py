"""The wire format: round trips, and a clear ProtocolError for every kind of malformed input."""

import pickle

import msgpack
import numpy as np
import pytest

from shared.wire.protocol import (
    ALLOWED_DTYPES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    MessageType,
    ProtocolError,
    decode,
    encode,
    make_message,
)


def _raw(**fields):
    return msgpack.packb({"type": "chunk", "v": PROTOCOL_VERSION, **fields}, use_bin_type=True)


def _array_record(dtype="float32", shape=(2,), data=b"\0" * 8):
    return {"__ndarray__": 1, "dtype": dtype, "shape": list(shape), "data": data}


def test_round_trip_keeps_arrays_exactly():
    arrays = {name: (np.arange(12) % 2).astype(name).reshape(3, 4) for name in sorted(ALLOWED_DTYPES)}
    img = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    msg = make_message(
        MessageType.CHUNK,
        seq=7,
        session="abc",
        arrays=arrays,
        batch={"obs": {"state": np.linspace(0, 1, 19, dtype=np.float32), "wrist_1": img}},
        scalars=[np.float32(1.5), np.int64(3), True, None],
        empty=np.zeros((0, 6), np.float32),
    )
    out = decode(encode(msg))
    assert out["type"] == "chunk" and out["v"] == PROTOCOL_VERSION and out["seq"] == 7
    for name, arr in arrays.items():
        assert out["arrays"][name].dtype == arr.dtype and np.array_equal(out["arrays"][name], arr)
    np.testing.assert_array_equal(out["batch"]["obs"]["wrist_1"], img)
    assert out["batch"]["obs"]["state"].flags.writeable
    assert out["scalars"] == [1.5, 3, True, None]
    assert out["empty"].shape == (0, 6)


def test_big_endian_and_strided_arrays_arrive_native():
    arr = np.arange(6, dtype=">f8").reshape(2, 3)[:, ::2]
    out = decode(encode(make_message(MessageType.WEIGHTS, w=arr)))["w"]
    assert out.dtype == np.float64 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array(["a", "b"]), "not allowed"),
        (np.array([object()], dtype=object), "not allowed"),
        (np.zeros((1,) * 9, np.float32), "dimensions"),
        ({1, 2}, "cannot encode"),
    ],
)
def test_encode_refuses_what_cannot_travel(bad, match):
    with pytest.raises(ProtocolError, match=match):
        encode(make_message(MessageType.CHUNK, x=bad))


def test_encode_checks_header_and_size():
    with pytest.raises(ProtocolError, match="unknown message type"):
        encode({"type": "shell", "v": PROTOCOL_VERSION})
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(make_message(MessageType.CHUNK, x=np.zeros(1000, np.uint8)), max_bytes=500)
    with pytest.raises(ProtocolError, match="set by make_message"):
        make_message(MessageType.ACK, v=2)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\xc1\xc1\xc1", "not a valid msgpack"),
        (b"", "not a valid msgpack"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"type": "chunk", "v": 99}), "protocol version 99"),
        (msgpack.packb({"type": "reboot", "v": PROTOCOL_VERSION}), "unknown message type"),
        (msgpack.packb({1: 2}), "not a valid msgpack"),  # non-string keys
        (_raw(x=_array_record(dtype="object")), "not allowed"),
        (_raw(x=_array_record(dtype="<U4")), "not allowed"),
        (_raw(x=_array_record(shape=(3,))), "needs 12 bytes, got 8"),
        (_raw(x=_array_record(shape=(2**40, 2**40))), "needs"),
        (_raw(x=_array_record(shape=(-1,))), "shape"),
        (_raw(x=_array_record(shape=(1,) * 9, data=b"\0" * 4)), "shape"),
        (_raw(x={**_array_record(), "extra": 1}), "keys"),
        (_raw(x=_array_record(data="text")), "bytes"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "not a valid msgpack"),
    ],
)
def test_decode_names_what_is_wrong(data, match):
    with pytest.raises(ProtocolError, match=match):
        decode(data)


def test_decode_limits_size_and_depth():
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\0" * 101, max_bytes=100)
    deep = {"type": "stats", "v": PROTOCOL_VERSION, "x": []}
    node = deep["x"]
    for _ in range(40):
        node.append([])
        node = node[0]
    with pytest.raises(ProtocolError, match="nested deeper"):
        decode(msgpack.packb(deep))


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle was executed')",))


def test_a_pickle_is_never_unpickled():
    with pytest.raises(ProtocolError):
        decode(pickle.dumps(_Boom()))
    # smuggled inside a valid message it stays inert bytes
    out = decode(_raw(payload=pickle.dumps(_Boom())))
    assert isinstance(out["payload"], bytes)


def test_multipart_frames_round_trip_without_copies():
    from shared.wire.protocol import decode_frames, encode_frames

    img = np.random.default_rng(0).integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
    small = np.arange(6, dtype=np.float32)
    frames = encode_frames(make_message(MessageType.CHUNK, seq=1, frames={"wrist_1": img}, actions=small))
    assert len(frames) == 2  # the header and one frame for the image block; small arrays inline
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), img)
    out = decode_frames([bytes(f) for f in frames])
    np.testing.assert_array_equal(out["frames"]["wrist_1"], img)
    np.testing.assert_array_equal(out["actions"], small)
    assert not out["frames"]["wrist_1"].flags.writeable  # a view of the received frame


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f + [b"\0" * 10], "not referenced"),
        (lambda f: f[:1], "outside"),
        (lambda f: [f[0], f[1][:-1]], "needs"),
        (
            lambda f: [encode(make_message(MessageType.CHUNK, a={"__frame__": 1, "dtype": "uint8", "shape": [4096]}))],
            "outside",
        ),
        (
            lambda f: [
                encode(make_message(MessageType.CHUNK, a={"__frame__": 1, "dtype": "object", "shape": [1]})),
                b"x",
            ],
            "not allowed",
        ),
        (lambda f: [f[0]] + [b""] * 65, "at most 64"),
        (lambda f: [], "no frames"),
    ],
)
def test_multipart_defects_are_protocol_errors(edit, match):
    from shared.wire.protocol import decode_frames, encode_frames

    frames = [bytes(x) for x in encode_frames(make_message(MessageType.CHUNK, a=np.zeros(4096, np.uint8)))]
    with pytest.raises(ProtocolError, match=match):
        decode_frames(edit(frames), max_bytes=MAX_MESSAGE_BYTES)


def test_multipart_size_cap():
    from shared.wire.protocol import decode_frames, encode_frames

    big = make_message(MessageType.CHUNK, a=np.zeros(10_000, np.uint8))
    with pytest.raises(ProtocolError, match="limit"):
        encode_frames(big, max_bytes=5_000)
    with pytest.raises(ProtocolError, match="limit"):
        decode_frames(encode_frames(big), max_bytes=5_000)

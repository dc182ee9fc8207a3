"""ZeroMQ sockets for the actor <-> learner runtime: addresses, CURVE keys, the config fingerprint.

Both processes build their sockets here so the security rules live in one place:
- the learner binds a ROUTER (data) and a PUB (weights); the actor connects a DEALER and a SUB;
- with keys, the learner is a CURVE server and only actor public keys found in its allow-list
  directory may connect (ZAP, via pyzmq's authenticator thread); without keys the learner may
  bind loopback addresses only;
- receive sizes are capped (``MAXMSGSIZE``) so an oversized frame drops the peer in libzmq,
  before Python sees a byte.

Key files are made by ``python -m shared.wire.transport keys --dir DIR`` (``launch/make_keys.sh``).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from shared.command_line import add_config_options, add_options, command_config, option, print_config
from shared.wire.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION

LEARNER_KEY = "learner"  # learner.key (public) and learner.key_secret
ACTOR_KEY = "actor"
ALLOWED_DIR = "allowed_actors"  # the learner's allow-list: public keys of actors


class TransportError(RuntimeError):
    """Sockets cannot be set up as asked (bad address, missing keys, insecure binding)."""


# ---------------------------------------------------------------------------- fingerprint


def fingerprint(contract: Mapping[str, Any]) -> str:
    """A short hash of everything both sides must agree on (canonical JSON, sorted keys)."""
    blob = json.dumps({"protocol": PROTOCOL_VERSION, **contract}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def policy_contract(
    agent_config: Any, obs_spec: Mapping[str, Any], action_dim: int, reward: Any, task: str | None
) -> dict[str, Any]:
    """What the actor's data and the learner's policy weights must match: observation spec,
    action size, reward transform, task, and the policy network (architecture and input
    normalisation). Critic settings are the learner's business and are left out."""
    from shared.config import to_dict

    agent = to_dict(agent_config)
    # Where each machine keeps its copy of the pretrained trunk is not part of the contract.
    agent["encoder"].pop("pretrained_path", None)
    return {
        "obs_spec": {k: [list(s), str(d)] for k, (s, d) in sorted(obs_spec.items())},
        "action_dim": int(action_dim),
        "reward": to_dict(reward),
        "task": task,
        "policy": {k: agent[k] for k in ("actor_net", "encoder", "log_std_min", "log_std_max")},
    }


def contract_differences(
    mine: Mapping[str, Any], theirs: Any, names: tuple[str, str] = ("learner", "actor"), limit: int = 8
) -> list[str]:
    """The dotted paths where two policy contracts differ, with both values named by ``names``
    (``theirs`` came off the wire: anything that is not a map is reported as such, long values are cut)."""
    if not isinstance(theirs, Mapping):
        return ["the peer sent no contract (an older release?)"]
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | {k for k in b if isinstance(k, str)}):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            out.append(f"{path}: {_short(a)} ({names[0]}) vs {_short(b)} ({names[1]})")

    walk(plain_contract(mine), theirs, "")
    return out


def plain_contract(contract: Mapping[str, Any]) -> dict[str, Any]:
    """The contract as plain JSON values (tuples become lists), as it travels in HELLO."""
    return json.loads(json.dumps(contract, sort_keys=True, default=str))


def _short(value: Any, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


# ------------------------------------------------------------------------------- addresses


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint(host: str, port: int) -> str:
    if not 0 < int(port) < 65536:
        raise TransportError(f"port {port} is out of range")
    return f"tcp://{host}:{int(port)}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and the one-machine pipeline)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class CurveKeys:
    public: bytes
    secret: bytes
    server_public: bytes | None = None  # clients: the learner's public key
    allowed_dir: Path | None = None  # the learner: directory of allowed actor public keys


def make_keys(directory: str | Path, actor_names: tuple[str, ...] = (ACTOR_KEY,)) -> dict[str, Path]:
    """Create the learner's key pair and one pair per actor, and allow those actors.

    Copy ``learner.key`` and ``<actor>.key_secret`` (plus ``<actor>.key``) to the robot PC;
    the learner keeps ``learner.key_secret`` and ``allowed_actors/``. Existing files are kept.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    allowed = directory / ALLOWED_DIR
    allowed.mkdir(exist_ok=True)
    made = {}
    for name in (LEARNER_KEY, *actor_names):
        public = directory / f"{name}.key"
        if not public.exists():
            zmq.auth.create_certificates(directory, name)
        made[name] = public
        if name != LEARNER_KEY:
            shutil.copy(public, allowed / public.name)
    for f in directory.glob("*.key_secret"):
        f.chmod(0o600)
    return made


def _load(path: Path, secret: bool) -> tuple[bytes, bytes]:
    if not path.is_file():
        raise TransportError(f"key file {path} not found (make keys with launch/make_keys.sh --dir DIR)")
    try:
        public, sec = zmq.auth.load_certificate(path)
    except Exception as e:
        raise TransportError(f"key file {path} is not a CURVE certificate: {e}") from e
    if secret and sec is None:
        raise TransportError(f"{path} holds no secret key")
    return public, sec or b""  # b"": a public key file, read for its public key only


def learner_keys(directory: str | Path) -> CurveKeys:
    directory = Path(directory)
    public, secret = _load(directory / f"{LEARNER_KEY}.key_secret", True)
    allowed = directory / ALLOWED_DIR
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise TransportError(f"{allowed} holds no actor public keys: no actor could connect")
    return CurveKeys(public, secret, allowed_dir=allowed)


def actor_keys(directory: str | Path, name: str = ACTOR_KEY) -> CurveKeys:
    directory = Path(directory)
    public, secret = _load(directory / f"{name}.key_secret", True)
    server_public, _ = _load(directory / f"{LEARNER_KEY}.key", False)
    return CurveKeys(public, secret, server_public=server_public)


# ---------------------------------------------------------------------------------- sockets


class LearnerSockets:
    """The learner's bound sockets: ROUTER (data) and PUB (weights), with CURVE when keyed."""

    def __init__(
        self, host: str, data_port: int, weights_port: int, keys: CurveKeys | None, max_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        if keys is None and not is_loopback(host):
            raise TransportError(
                f"binding {host} (not loopback) needs CURVE keys: pass --keys DIR "
                "(made by launch/make_keys.sh); without keys the learner binds 127.0.0.1 only"
            )
        self.context = zmq.Context()
        self.authenticator = None
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.authenticator = ThreadAuthenticator(self.context)
            self.authenticator.start()
            self.authenticator.configure_curve(domain="*", location=str(keys.allowed_dir))
        self.data = self.context.socket(zmq.ROUTER)
        self.weights = self.context.socket(zmq.PUB)
        for s in (self.data, self.weights):
            s.setsockopt(zmq.LINGER, 0)
            if keys is not None:
                s.curve_secretkey = keys.secret
                s.curve_publickey = keys.public
                s.curve_server = True
        self.data.setsockopt(zmq.MAXMSGSIZE, max_bytes + 4096)
        self.data.setsockopt(zmq.RCVHWM, 1000)
        self.weights.setsockopt(zmq.MAXMSGSIZE, 4096)  # subscribers only send subscriptions
        self.weights.setsockopt(zmq.CONFLATE, 1)  # never queue stale weights
        try:
            self.data.bind(endpoint(host, data_port))
            self.weights.bind(endpoint(host, weights_port))
        except zmq.ZMQError as e:
            self.close()
            raise TransportError(f"cannot bind {host}:{data_port}/{weights_port}: {e}") from e

    def close(self) -> None:
        for s in (self.data, self.weights):
            s.close(0)
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()


def _client_socket(context: zmq.Context, kind: int, keys: CurveKeys | None) -> zmq.Socket:
    s = context.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        s.curve_secretkey = keys.secret
        s.curve_publickey = keys.public
        s.curve_serverkey = keys.server_public
    return s


def data_client(context: zmq.Context, host: str, port: int, keys: CurveKeys | None) -> zmq.Socket:
    """The actor's DEALER: never queues for a peer that is not connected (``IMMEDIATE``), so a
    send during an outage fails at once instead of blocking; the actor resends later."""
    s = _client_socket(context, zmq.DEALER, keys)
    s.setsockopt(zmq.IMMEDIATE, 1)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    s.setsockopt(zmq.RECONNECT_IVL, 100)
    s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    s.connect(endpoint(host, port))
    return s


def weights_client(context: zmq.Context, host: str, port: int, keys: CurveKeys | None) -> zmq.Socket:
    """The actor's SUB: ``CONFLATE`` keeps only the newest weights message."""
    s = _client_socket(context, zmq.SUB, keys)
    s.setsockopt(zmq.CONFLATE, 1)
    s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    s.setsockopt(zmq.RECONNECT_IVL, 100)
    s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint(host, port))
    return s


@dataclass(frozen=True)
class MakeKeysConfig:
    """What ``wsrl-make-keys`` makes (its ``make_keys:`` section)."""

    dir: str | None = option(None, "directory for the key files (required)")
    actors: tuple[str, ...] = option((ACTOR_KEY,), "actor key names (one pair each)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Make CURVE key files for the learner and its actors.")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="create learner and actor key pairs and the learner's allow-list")
    add_options(k, MakeKeysConfig)
    add_config_options(k, "make_keys")
    cli = p.parse_args(argv)
    args = command_config(k, cli, MakeKeysConfig, "make_keys")
    if cli.print_config:
        print_config("make_keys", args)
        return
    if args.dir is None:
        k.error("--dir is required (or a config file's make_keys.dir)")
    made = make_keys(args.dir, tuple(args.actors))
    d = Path(args.dir)
    print(f"keys in {d}:")
    print(f"  learner (GPU box):  {d / (LEARNER_KEY + '.key_secret')} and {d / ALLOWED_DIR}/")
    for name in args.actors:
        print(f"  actor '{name}' (robot PC): {d / (name + '.key_secret')}, {d / (name + '.key')}, {made[LEARNER_KEY]}")


def keys_main(argv: list[str] | None = None) -> None:
    """``wsrl-make-keys --dir keys/``: ``main``'s ``keys`` command."""
    main(["keys", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

"""Configuration dataclasses for agents and training phases, with the paper's presets.

Configs are frozen dataclasses so they can be static arguments of compiled functions, and they
round-trip through JSON (``to_dict`` / ``from_dict``) so every checkpoint carries the config
that made it. Commands read them from experiment files (``read_config_file``: a section per
command, ``learner:``, ``actor:``, ``pretrain:``), take dotted overrides (``apply_overrides``) and
save the resolved config (``write_config_file``), which their ``--config`` reads back. The
paper's named settings are in ``shared/presets.py``.

Over 400 lines on purpose: every config dataclass of the project is here, so each default is
written once and one file is the schema that experiment files are checked against.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import draccus
import mergedeep
import yaml
from draccus.cfgparsing import parse_string
from draccus.utils import ParsingError, deflatten

from shared import defaults

Algo = Literal["sac", "cql", "calql", "iql"]
ALGOS: tuple[Algo, ...] = typing.get_args(Algo)
ENCODER_KINDS = ("state", "small_conv", "resnet10")


@dataclass(frozen=True)
class NetworkConfig:
    """An MLP trunk. ``residual_blocks > 0`` gives the MLP-ResNet used on the robot."""

    hidden_dims: tuple[int, ...] = (256, 256)
    use_layer_norm: bool = True
    residual_blocks: int = 0
    # The trunk's matmul inputs: "bfloat16" halves their cost on CPUs with bf16 units (AVX-512
    # BF16, AMX) and on GPUs; parameters, accumulation, LayerNorm statistics, the output layer
    # and the optimizer state stay float32.
    matmul_dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass(frozen=True)
class EncoderConfig:
    """How observations become a feature vector.

    ``kind="state"`` uses only the ``state`` key. Image kinds encode each key in ``image_keys``
    with its own trunk, pool it with learned spatial embeddings and concatenate the proprio
    ``state`` vector when present.
    """

    kind: Literal["state", "small_conv", "resnet10"] = "state"
    image_keys: tuple[str, ...] = ()
    use_state: bool = True
    # ResNet-10: a local .npz of trunk parameters (see shared/learning/encoders.py); frozen if asked.
    pretrained_path: str | None = None
    freeze_trunk: bool = True
    base_filters: int = 64  # ResNet width; tiny tests use 8
    num_spatial_features: int = 8
    bottleneck_dim: int = 256
    # DrQ random shift (pixels of edge padding); 0 disables augmentation.
    augment_pad: int = 4
    # Scale the state by the offline dataset's mean/std (pre-training fills state_mean/state_std;
    # they travel with the checkpoint and the hand-off). Proprio mixes metres with newtons, so
    # millimetre-scale positions are otherwise drowned by forces four orders of magnitude larger.
    normalize_state: bool = False
    state_mean: tuple[float, ...] | None = None
    state_std: tuple[float, ...] | None = None
    # The actor reads the critic's encoder (gradients stopped: only the critic's loss trains it),
    # as SERL and the paper's robot code do; the actor's own encoder parameters are kept equal
    # to the critic's, so the robot-side actor runs the same network either way.
    share_encoder: bool = False

    def __post_init__(self) -> None:
        if self.share_encoder and self.kind == "state":
            raise ValueError("share_encoder needs an image encoder (kind small_conv or resnet10)")
        if (self.state_mean is None) != (self.state_std is None):
            raise ValueError("state_mean and state_std must be set together")
        if (
            self.state_mean is not None
            and self.state_std is not None
            and (len(self.state_mean) != len(self.state_std) or min(self.state_std) <= 0)
        ):
            raise ValueError("state_mean and state_std need equal lengths and a positive std")


@dataclass(frozen=True)
class CQLConfig:
    """CQL / Cal-QL regulariser settings (used when ``algo`` is ``cql`` or ``calql``)."""

    alpha: float = 5.0
    lagrange: bool = False  # tune alpha to keep the CQL gap at ``target_action_gap``
    target_action_gap: float = 0.8
    alpha_lr: float = 3e-4
    num_actions: int = 10  # sampled per source: uniform, pi(s), pi(s')
    importance_sample: bool = True
    temperature: float = 1.0
    clip_diff_min: float = float("-inf")
    clip_diff_max: float = float("inf")
    # The official WSRL code applies the penalty to a random subset of the critics each step
    # (2 of 10), which also makes the sampled-action Q evaluations 5x cheaper; None: all critics.
    penalty_critics: int | None = None


@dataclass(frozen=True)
class IQLConfig:
    expectile: float = 0.7
    beta: float = 3.0  # inverse temperature of the advantage weights
    max_weight: float = 100.0
    value_lr: float = 3e-4


@dataclass(frozen=True)
class AgentConfig:
    """Everything that defines an agent's networks and its update rule."""

    algo: Algo = "sac"
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    utd: int = 4  # critic updates per env step; the actor is updated once per ``utd``
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    num_critics: int = 10
    num_min_critics: int = 2  # size of the random subset the target takes the min over
    subsample_with_replacement: bool = False  # the official WSRL code draws with replacement
    num_backup_actions: int = 1  # >1: max over that many sampled next actions
    backup_entropy: bool = False
    critic_net: NetworkConfig = field(default_factory=NetworkConfig)
    actor_net: NetworkConfig = field(default_factory=NetworkConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    cql: CQLConfig = field(default_factory=CQLConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    # Where the official WSRL code chose otherwise (docs/study.md); the paper_sim preset takes its
    # choices. The actor maximises the ensemble's mean Q ("mean") or its min over all critics ("min");
    # the actor and temperature step on the last of the UTD minibatches ("last") or on all of them
    # ("all": the official launch's UTD x batch).
    actor_q: Literal["mean", "min"] = "mean"
    actor_batch: Literal["last", "all"] = "last"
    # One output layer per critic member ("per_member") or one shared by all ("shared", the
    # official code's ensemble: the members differ only in their trunks).
    critic_output: Literal["per_member", "shared"] = "per_member"
    # None: fuse the UTD critic steps in one lax.scan call unless the encoder is convolutional
    # and the backend is CPU (XLA:CPU runs scanned convolutions ~18x slower).
    fuse_utd: bool | None = None

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.encoder.kind not in ENCODER_KINDS:
            raise ValueError(f"encoder.kind must be one of {ENCODER_KINDS}, got {self.encoder.kind!r}")
        if not 1 <= self.num_min_critics <= self.num_critics:
            raise ValueError("need 1 <= num_min_critics <= num_critics")
        if self.cql.penalty_critics is not None and not 1 <= self.cql.penalty_critics <= self.num_critics:
            raise ValueError("need 1 <= cql.penalty_critics <= num_critics")
        if self.utd < 1 or self.batch_size < 1:
            raise ValueError("utd and batch_size must be positive")


@dataclass(frozen=True)
class RewardConfig:
    """The single place where the environment's raw sparse reward is scaled and shifted.

    The raw reward is 1 on success and 0 otherwise; the agent sees ``scale * raw + bias``.
    ``negative`` is what a failure step is worth after the transform: Cal-QL's Monte-Carlo
    bound for a never-successful episode is ``negative / (1 - gamma)``.
    """

    scale: float = 1.0
    bias: float = -1.0

    def apply(self, raw: Any) -> Any:
        return raw * self.scale + self.bias

    @property
    def negative(self) -> float:
        return self.apply(0.0)

    @property
    def bound(self) -> float:
        """The largest |reward| these settings produce (success or not)."""
        return float(max(abs(self.apply(0.0)), abs(self.apply(1.0))))


def check_reward_settings(learner: RewardConfig, actor: RewardConfig, actor_source: str) -> None:
    """The learner trains on the rewards the actor computes, so their settings must be equal;
    raises ``ValueError`` naming each setting that differs (at start-up, not later as a refused actor)."""
    diffs = [
        f"{f.name}: {getattr(learner, f.name)!r} in the learner's config, {getattr(actor, f.name)!r} in {actor_source}"
        for f in dataclasses.fields(RewardConfig)
        if getattr(learner, f.name) != getattr(actor, f.name)
    ]
    if diffs:
        sets = " ".join(
            f"--set reward.{f.name}={getattr(actor, f.name)!r}"
            for f in dataclasses.fields(RewardConfig)
            if getattr(learner, f.name) != getattr(actor, f.name)
        )
        raise ValueError(
            "reward settings differ between the learner and the actor: "
            + "; ".join(diffs)
            + f". The actor uses {actor_source}'s; give the learner the same ({sets})."
        )


@dataclass(frozen=True)
class PretrainConfig:
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(algo="calql", utd=1))
    reward: RewardConfig = field(default_factory=RewardConfig)
    steps: int = 40_000
    log_every: int = 1_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3
    seed: int = 0
    # With a frozen ResNet-10 trunk, pass the dataset's frames through it once before training and
    # train on the features (as the online learner does, OnlineConfig.cache_trunk_features).
    cache_trunk_features: bool = True


@dataclass(frozen=True)
class HealthConfig:
    """The learner's health monitor (learner/health.py): the paper's diagnostics on two fixed
    probes, and named alarms. Defaults and the runs they come from: docs/runtime.md, "For the
    operator"."""

    # Critic steps between diagnoses (0: no diagnostics, no Q or TD alarms). One diagnosis of two
    # 256-row probes costs about one update.
    every: int = 1_000
    probe_size: int = 256  # rows of each probe: offline (saved with the pre-trained checkpoint), first online
    # Q_COLLAPSE: the offline probe's Q below its value at the hand-off by more than this share of
    # the value range (reward scale / (1 - gamma)), on ``patience`` diagnoses in a row.
    q_drop: float = 0.25
    # TD_BLOWUP: a probe's TD error above this multiple of its value at the hand-off (and above
    # td_floor), on ``patience`` diagnoses in a row.
    td_factor: float = 5.0
    td_floor: float = 1.0
    patience: int = 2
    # SUCCESS_DROP: the actors' success rate over the last ``success_window`` episodes below the
    # best earlier window's by more than ``success_drop`` (windows after the warmup only).
    success_window: int = 20
    success_drop: float = 0.3
    # CHATTERING: the mean change between consecutive actions over the window above this multiple
    # of the warmup's (the pre-trained policy's), and above chattering_floor. A healthy fine-tuned
    # peg policy moves more boldly than the pre-trained one: 0.79 in the warmup, windows of 1.5
    # to 1.8 while succeeding 100 % (x 2.3); at x 2 it raised a false alarm.
    chattering_factor: float = 3.0
    chattering_floor: float = 1.0
    # On an alarm, reload the agent (with its optimiser state) of the best earlier snapshot and
    # publish it; the online data gathered since stays in the buffer.
    rollback: bool = False
    # Agent snapshots kept for rollback (one per learner checkpoint): the newest this many, the one
    # with the best success window, and the best of the older ones. Ten checkpoints cover 5,000
    # env steps at the default checkpoint_every and UTD; an alarm's evidence reaches back about
    # 20 episodes, and a rollback goes to before it (with 3 kept, a SUCCESS_DROP found none there
    # and fell back to the hand-off agent).
    keep_snapshots: int = 10

    def __post_init__(self) -> None:
        if self.every < 0 or min(self.probe_size, self.patience, self.success_window, self.keep_snapshots) < 1:
            raise ValueError("health: every >= 0; probe_size, patience, success_window, keep_snapshots >= 1")
        if not 0.0 < self.success_drop <= 1.0 or self.q_drop <= 0 or self.td_factor <= 1 or self.chattering_factor <= 1:
            raise ValueError("health: success_drop in (0, 1], q_drop > 0, td_factor and chattering_factor > 1")


@dataclass(frozen=True)
class SabotageConfig:
    """Test-only: the learner goes wrong on purpose for the critic steps in [start, stop), to show
    that the health monitor catches it (docs/runtime.md). ``flip_rewards``: every sampled row's
    reward is swapped (success <-> failure), a reward classifier gone wrong; ``lr_spike``: each
    update's change to the actor's and critics' parameters is multiplied by ``lr_factor``."""

    kind: Literal["none", "flip_rewards", "lr_spike"] = "none"
    start: int = 0
    stop: int = 0
    lr_factor: float = 30.0


@dataclass(frozen=True)
class OnlineConfig:
    """WSRL online fine-tuning: warmup with the frozen policy, then high-UTD SAC."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    warmup_steps: int = defaults.WARMUP_STEPS
    buffer_capacity: int = 1_000_000
    # Keep image frames in memory-mapped segments under the run's replay/frames/ instead of RAM
    # (shared/storage/frame_store.py): capacity bounded by disk; recently used frames stay in page cache.
    replay_frames_on_disk: bool = False
    # With a frozen ResNet-10 trunk, pass each frame through it once at ingest, store its features
    # beside the frame and train on those (learner/features.py); false recomputes the trunk for
    # every sampled row (the same function, docs/simulation.md has the measurements).
    cache_trunk_features: bool = True
    # Human interventions (actor.teleop): 0 treats intervened transitions as ordinary online data
    # (WSRL). A fraction > 0 gives each minibatch that share of intervened transitions, drawn
    # apart from the rest (HIL-SERL's demo buffer), once there are any.
    intervention_ratio: float = 0.0
    seed: int = 0
    # The distributed learner (learner/online_learner.py). An "update" is one compiled call: ``utd``
    # critic steps and one actor step, owed once per ingested env step after warmup.
    publish_every: int = 4  # updates between policy-weight publishes
    checkpoint_every: int = 2_000  # critic steps (during warmup: env steps x utd) between checkpoints
    keep_checkpoints: int = 3
    log_every: int = 100  # updates between learner log lines
    # Update as fast as possible after warmup instead of holding the UTD ratio (off: the
    # ratio is what WSRL's results rest on).
    free_running: bool = False
    # What ingest accepts (besides actions in [-1, 1]): |reward| at most this (None: the largest
    # reward RewardConfig can produce) and |float observation| at most max_abs_observation.
    max_abs_reward: float | None = None
    max_abs_observation: float = 1e4
    health: HealthConfig = field(default_factory=HealthConfig)
    sabotage: SabotageConfig = field(default_factory=SabotageConfig)  # test-only

    def __post_init__(self) -> None:
        if min(self.publish_every, self.checkpoint_every, self.keep_checkpoints, self.log_every) < 1:
            raise ValueError("publish_every, checkpoint_every, keep_checkpoints and log_every must be positive")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if not 0.0 <= self.intervention_ratio < 1.0:
            raise ValueError("intervention_ratio must be in [0, 1)")


@dataclass(frozen=True)
class ClassifierConfig:
    """The reward classifier: one image trunk per camera (``encoder``, images only), an MLP head,
    one success logit. Saved with its checkpoint, so the actor rebuilds exactly this network."""

    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            kind="resnet10", image_keys=("wrist_1", "wrist_2"), use_state=False, freeze_trunk=False
        )
    )
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.encoder.kind == "state" or not self.encoder.image_keys:
            raise ValueError("the reward classifier needs an image encoder with image_keys")
        if self.encoder.use_state:
            raise ValueError(
                "the reward classifier judges images only: set encoder.use_state=false "
                "(proprio would let it learn the pose check instead of what success looks like)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Training the reward classifier on labelled images (learner/train_reward_classifier.py)."""

    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    steps: int = 3_000
    batch_size: int = 64  # half success, half failure frames (class-balanced)
    lr: float = 3e-4
    val_fraction: float = 0.2  # of the frames, taken as whole episodes (neighbouring frames are near-copies)
    # Threshold: the highest recall whose validation precision is at least this (a false success
    # rewards the wrong behaviour and ends the episode, a miss only delays a reward).
    min_precision: float = 0.99
    brightness: float = 0.2  # colour jitter: each image scaled by a factor in [1 - b, 1 + b]
    eval_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.eval_every < 1:
            raise ValueError("steps and eval_every must be positive and batch_size at least 2")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in (0, 1)")
        if not 0.0 < self.min_precision <= 1.0:
            raise ValueError("min_precision must be in (0, 1]")


def without_state_stats(cfg: AgentConfig) -> AgentConfig:
    """``cfg`` with the state statistics cleared: pre-training fills them in from the data, so a
    config given on the command line and the one saved with a run differ there by design."""
    return replace(cfg, encoder=replace(cfg.encoder, state_mean=None, state_std=None))


# ------------------------------------------------------------------------------ serialisation
# Decoding, value parsing and files are draccus's (the dataclasses are the schema, as in lerobot's
# configs); nothing here coerces by hand.

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild a config dataclass from ``to_dict`` output (or a config file's section); unknown
    keys and wrong types are a ``ValueError`` naming the field."""
    try:
        return draccus.decode(cls, data)
    except ParsingError as e:
        # A config's own check (its __post_init__) says more than "couldn't instantiate": raise it
        # as it was; any other failure is draccus's message, which names the field's path.
        cause: BaseException | None = e
        while isinstance(cause, ParsingError):
            cause = cause.__cause__
        if isinstance(cause, (TypeError, ValueError)) and _raised_in_post_init(cause):
            raise cause from None
        raise ValueError(f"{getattr(cls, '__name__', cls)}: {e}") from e


def _raised_in_post_init(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__post_init__":
            return True
        tb = tb.tb_next
    return False


def add_override_argument(parser: Any, help: str, metavar: str = "agent.PATH=VALUE") -> None:
    """The repeatable ``--set PATH=VALUE`` option of every command that takes config overrides
    (collected into ``overrides`` for ``apply_overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar, help=help)


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``dotted.path=value`` overrides, each value read as YAML (so ``2``, ``true``,
    ``[64,64]``, ``null``, else a string), e.g. ``agent.num_critics=2`` or
    ``agent.critic_net.hidden_dims=[64,64]``."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form path=value")
        path, raw = item.split("=", 1)
        node: Any = to_dict(cfg)
        for k in path.split("."):
            if not isinstance(node, dict) or k not in node:
                raise ValueError(f"override {item!r}: no config field {path!r}")
            node = node[k]
        tree = mergedeep.merge(tree, deflatten({path: parse_string(raw)}, sep="."))
    return merge(cfg, tree)


def merge(cfg: T, tree: dict[str, Any]) -> T:
    """``cfg`` with the fields a (nested, possibly partial) mapping gives replaced."""
    return from_dict(type(cfg), mergedeep.merge(to_dict(cfg), tree))


def read_config_file(path: str | Path, cls: type[T], section: str, base: T | None = None) -> T:
    """The ``section`` of an experiment file (YAML or JSON: ``learner:``, ``actor:``, ...) as a
    ``cls``: over ``base`` (a preset) where the section names only some fields, whole otherwise.
    A file saved by ``write_config_file`` reproduces the config exactly."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable config file ({e})") from e
    if not isinstance(data, dict) or section not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: no '{section}' section (it has {found})")
    part = data[section] or {}
    if not isinstance(part, dict):
        raise ValueError(f"{path}: section '{section}' is not a mapping")
    try:
        return merge(base, part) if base is not None else from_dict(cls, part)
    except ValueError as e:
        raise ValueError(f"{path}: section '{section}': {e}") from e


def write_config_file(path: str | Path, sections: dict[str, Any]) -> Path:
    """Write configs as an experiment file, one section each (``{"learner": OnlineConfig(...)}``; a
    section may also be a plain mapping of some fields), that ``read_config_file`` (and every
    command's ``--config``) reads back to the same configs."""
    path = Path(path)
    data = {k: to_dict(v) if dataclasses.is_dataclass(v) else dict(v) for k, v in sections.items()}
    text = yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None)
    path.write_text(text)
    return path


def _plain(x: Any) -> Any:
    """Tuples as lists, so the file is plain YAML (safe_load reads every value back)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x

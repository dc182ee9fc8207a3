"""Every command's options come from its config dataclass: flags, ``--config FILE``, ``--set`` and
``--print-config`` behave the same on each, and a printed config read back is the same config."""

import argparse
import importlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from shared.command_line import add_config_options, add_options, command_config, option

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Example:
    out: str | None = option(None, "where")
    steps: int = option(5, "how many")
    mode: Literal["a", "b"] = option("a", "which")
    flavour: str | None = option(None, "checked against choices", choices=("x", "y"))
    sizes: tuple[int, ...] = option((1, 2), "several values")
    span: tuple[float, float] = option((0.5, 1.0), "exactly two", metavar=("LO", "HI"))
    extras: tuple[str, ...] = option((), "repeatable", flag="--extra", append=True)
    progress: bool = option(True, "a bar")


def parse(argv):
    p = argparse.ArgumentParser()
    add_options(p, Example)
    add_config_options(p, "example")
    return command_config(p, p.parse_args(argv), Example, "example")


def test_flags_come_from_the_fields_and_resolve_in_one_order(tmp_path):
    assert parse([]) == Example()
    got = parse(["--steps", "7", "--mode", "b", "--sizes", "3", "4", "5", "--span", "0", "2", "--no-progress"])
    assert got == Example(steps=7, mode="b", sizes=(3, 4, 5), span=(0.0, 2.0), progress=False)
    assert parse(["--extra", "p=1", "--extra", "q=2"]).extras == ("p=1", "q=2")
    # defaults < the file's section < flags given < --set
    f = tmp_path / "run.yaml"
    f.write_text("example:\n  steps: 9\n  out: runs/x\n  sizes: [8]\n")
    assert parse(["--config", str(f)]) == Example(steps=9, out="runs/x", sizes=(8,))
    assert parse(["--config", str(f), "--steps", "10"]).steps == 10
    assert parse(["--config", str(f), "--steps", "10", "--set", "steps=11"]).steps == 11
    assert parse(["--config", str(f), "--set", "flavour=y"]).flavour == "y"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--set", "flavour=z"], "flavour: 'z' is not one of x, y"),  # choices hold for files and --set too
        (["--set", "stepz=1"], "no config field 'stepz'"),
        (["--set", "steps=many"], "steps"),
        (["--config", "/nonexistent.yaml"], "not a readable config file"),
    ],
)
def test_bad_settings_end_the_command_with_the_reason(argv, says, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert says in capsys.readouterr().err


def test_help_shows_each_default_once_from_the_dataclass():
    p = argparse.ArgumentParser()
    add_options(p, Example)
    text = " ".join(p.format_help().split())
    assert "how many (default: 5)" in text and "--no-progress" in text and "--extra" in text


def named_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return sorted(scripts.items())


# The words before the options (a subcommand), and a dotted override each command takes with its
# expected effect in the printed section. The sim job's and the study's --set is the agent's.
SUBCOMMAND = {"wsrl-convert-serl": ["transitions"]}
OVERRIDE = {
    "wsrl-sim": ("agent.utd=2", ("overrides",), ["agent.utd=2"]),
    "wsrl-study": ("agent.utd=2", ("overrides",), ["agent.utd=2"]),
    "wsrl-learner": ("agent.utd=2", ("agent", "utd"), 2),
    "wsrl-pretrain": ("agent.num_critics=3", ("agent", "num_critics"), 3),
    "wsrl-actor": ("loop.hz=5", ("loop", "hz"), 5.0),
    "wsrl-train-classifier": ("steps=7", ("steps",), 7),
    "wsrl-make-keys": ("actors=[arm1,arm2]", ("actors",), ["arm1", "arm2"]),
}


def printed(main, argv, capsys):
    """What ``main(argv)`` printed, ``--print-config`` ending the command as ``--help`` does."""
    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), e.code
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("name", "target"), named_commands())
def test_every_command_prints_a_config_that_its_config_flag_reads_back(name, target, tmp_path, capsys):
    """``--print-config`` is an experiment file: ``--config`` on it resolves to the same config,
    and a dotted ``--set`` lands where its path says."""
    module, func = target.split(":")
    main = getattr(importlib.import_module(module), func)
    pre = SUBCOMMAND.get(name, [])
    first = printed(main, [*pre, "--print-config"], capsys)
    (section,) = first
    f = tmp_path / "experiment.yaml"
    f.write_text(json.dumps(first))
    assert printed(main, [*pre, "--config", str(f), "--print-config"], capsys) == first
    override, path, value = OVERRIDE.get(name, (None, None, None))
    if override is None:  # the first number of the section plus one, or else its first switch flipped
        items = first[section].items()
        key, v = next(((k, v) for k, v in items if type(v) in (int, float)), None) or next(
            (k, v) for k, v in items if isinstance(v, bool)
        )
        value = (not v) if isinstance(v, bool) else v + 1
        override, path = f"{key}={json.dumps(value)}", (key,)
    node = printed(main, [*pre, "--config", str(f), "--set", override, "--print-config"], capsys)[section]
    for k in path:
        node = node[k]
    assert node == value, (name, override)

"""Command-line options derived from a command's config dataclass.

A command describes its settings once, as a frozen dataclass whose fields carry their defaults
and help (``option``); ``add_options`` turns every field into a flag (``robot_url`` ->
``--robot-url``, a ``Literal`` -> choices, a ``bool`` -> ``--x/--no-x``, a ``tuple`` -> several
values), and ``command_config`` resolves the config in one order on every command: the
dataclass's defaults, then ``--config FILE``'s section, then the flags given, then ``--set
PATH=VALUE``. Flags default to ``None`` so "not given" is visible and no default is written twice.
Decoding and type checks are draccus's (``shared.config.merge``); a command saves what it ran
with ``write_config_file`` and ``--config`` reads that file back to the same config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from shared.config import add_override_argument, apply_overrides, merge, read_config_file, to_dict

T = TypeVar("T")


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    metavar: str | tuple[str, ...] | None = None,
    choices: Sequence[Any] | None = None,
    parse: Callable[[str], Any] | None = None,
    positional: bool = False,
    append: bool = False,
) -> Any:
    """A config field with what its flag needs: ``flag`` when the flag's name is not the field's,
    ``choices`` checked on the flag and on the resolved config, ``parse`` a flag's own reader (an
    ``argparse.ArgumentTypeError`` says why a value is refused), ``positional`` an argument
    without a flag (optional on the command line, so a config file may give it), ``append`` a
    repeatable flag (a tuple field, one value per use)."""
    meta = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": tuple(choices) if choices else None,
        "parse": parse,
        "positional": positional,
        "append": append,
    }
    return dataclasses.field(default=default, metadata=meta)


def flag_name(field: dataclasses.Field[Any]) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser | Any, cls: type, fill_defaults: bool = False) -> None:
    """One flag per field of ``cls`` (a dataclass), each defaulting to ``None`` (not given), or
    with ``fill_defaults`` to the field's default (for a command that reads ``args`` itself)."""
    hints = typing.get_type_hints(cls)
    own = vars(cls).get("__annotations__", {})  # the command's own settings first, shared groups after
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        kind = _unwrap_optional(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": f.default if fill_defaults else None}
        help_text = f.metadata.get("help", "")
        if f.default is not dataclasses.MISSING and f.default not in (None, (), False):
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        kw["help"] = help_text.replace("%", "%%")  # argparse formats help with %
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        origin = typing.get_origin(kind)
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            values = typing.get_args(kind)
            kw.update(choices=values, type=type(values[0]))
        elif origin is tuple and f.metadata.get("append"):
            kw.update(action="append", type=typing.get_args(kind)[0])
        elif origin is tuple:
            args = typing.get_args(kind)
            kw.update(nargs="+" if Ellipsis in args else len(args), type=args[0])
        elif kind in (int, float, str):
            kw["type"] = kind
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for type {kind!r}")
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if f.metadata.get("parse"):
            kw["type"] = f.metadata["parse"]
        if f.metadata.get("positional"):
            kw.pop("dest")
            kw["nargs"] = "*" if kw.get("nargs") == "+" else "?"
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument(flag_name(f), **kw)


def _unwrap_optional(kind: Any) -> Any:
    """``X`` for ``X | None`` (a flag not given is ``None`` anyway)."""
    args = typing.get_args(kind)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return kind


def add_config_options(parser: argparse.ArgumentParser | Any, section: str, overrides: bool = True) -> None:
    """``--config FILE``, ``--set PATH=VALUE`` (unless the command's ``--set`` is a field of its
    own, like the study's agent overrides) and ``--print-config``, worded the same everywhere."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"an experiment file (YAML or JSON): its {section}: section, e.g. a run's saved config.yaml "
        "(flags given override it)",
    )
    if overrides:
        add_override_argument(parser, f"a {section} setting, PATH=VALUE (repeatable; applied last)", "PATH=VALUE")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help=f"print the resolved config as a '{section}:' section (a file --config reads) and exit",
    )


def command_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, cls: type[T], section: str, overrides: bool = True
) -> T:
    """The defaults of ``cls``, then ``--config``'s section, then the flags given, then ``--set``.
    A bad file, flag value or override ends the command with ``parser.error`` naming it."""
    try:
        cfg = cls()
        if getattr(args, "config", None) is not None:
            cfg = read_config_file(args.config, cls, section, base=cfg)
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        # (an empty list is a positional not given)
        given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items() if v not in (None, [])}
        if given:
            cfg = merge(cfg, given)
        if overrides:
            cfg = apply_overrides(cfg, getattr(args, "overrides", []) or [])
    except ValueError as e:
        parser.error(str(e))
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        allowed, value = f.metadata.get("choices"), getattr(cfg, f.name)
        if allowed and value is not None and value not in allowed:
            parser.error(f"{f.name}: {value!r} is not one of {', '.join(map(str, allowed))}")
    return cfg


def parse_command(
    cls: type[T],
    section: str,
    argv: list[str] | None,
    description: str | None = None,
    overrides: bool = True,
) -> tuple[argparse.ArgumentParser, T]:
    """A command's parser and its resolved config (``command_config``), with ``--print-config``
    answered here: the section is printed and the command ends (exit status 0, as ``--help``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, cls)
    add_config_options(parser, section, overrides)
    args = parser.parse_args(argv)
    cfg = command_config(parser, args, cls, section, overrides)
    if args.print_config:
        print_config(section, cfg)
        raise SystemExit(0)
    return parser, cfg


def print_config(section: str, cfg: Any) -> None:
    """``--print-config``'s output: JSON, which YAML (and so ``--config``) reads."""
    print(json.dumps({section: to_dict(cfg)}, indent=2))

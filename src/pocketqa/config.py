"""Validated configuration dataclasses: one engine for every command's settings.

A command's settings are one dataclass (``TrainConfig``, ``DistillConfig``, ...). This
module gives them, once for all:

* type coercion from YAML and command-line text (YAML 1.1 reads ``3e-5`` as a string),
* "did you mean" for unknown keys, and every problem reported at once in one ConfigError,
* command-line flags built from the fields (``--learning-rate`` for ``learning_rate``),
  grouped in ``--help`` by the field's ``group`` metadata.

A config class opts in with ``__post_init__`` calling :func:`validate`, and may define
``problems(self, skip: set[str]) -> list[str]`` for range and consistency checks. Field
metadata (``setting(...)``) holds the help text, group, choices and extra flag spellings.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, field, fields
from typing import Any, TypeVar

from pocketqa.errors import ConfigError

T = TypeVar("T")



def setting(
    default: Any = None,
    help: str | None = None,  # noqa: A002 - argparse's own word
    *,
    group: str = "general",
    choices: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
    nargs: str | None = None,
    const: Any = None,
    path: str | None = None,
    metavar: str | None = None,
    check: Callable[[Any], str | None] | None = None,
    flag: bool = True,
    default_factory: Any = MISSING,
):
    """A dataclass field with the metadata the engine reads.

    Args:
        default: The default value (use ``default_factory`` for lists).
        help: One line for ``--help``.
        group: The ``--help`` section the flag is listed under.
        choices: Allowed values (checked by :func:`validate` and by argparse).
        aliases: Extra flag spellings, e.g. ``("--lr",)``.
        nargs / const: argparse's, for flags such as ``--resume [DIR]``.
        path: ``"input"`` for files or folders a recipe names relative to itself;
            ``"model"`` for a model that may be a hub id (resolved only if it exists there).
        metavar: The value's name in ``--help`` (default: the field's name in capitals).
        check: A rule on the converted value: returns None when it is fine, else what was
            expected and found (``"expected cpu, cuda, ... got 'gpu'"``); run by
            :func:`validate` and by the flag's parser.
        flag: False for settings that have no command-line flag.
    """
    metadata = {"help": help, "group": group, "choices": tuple(choices) if choices else None,
                "aliases": tuple(aliases), "nargs": nargs, "const": const, "path": path,
                "metavar": metavar, "check": check, "flag": flag}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- coercion and validation ---------------------------------------------------------------


def _kinds(hint) -> tuple[type, bool, bool]:
    """(scalar type, accepts None, is a list) of a field's type hint."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    optional = False
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        return (args[0] if args else str), optional, True
    return hint, optional, False


def convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float or str), or None when it cannot be read as one.

    Bools are never numbers; numeric text is read as a number (YAML's ``3e-5``); an int
    must be whole (``2.0`` is 2, ``2.5`` is not).
    """
    if kind is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind is str:
        return os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _article(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)


def coerce_fields(config) -> tuple[list[str], set[str]]:
    """Converts every field of ``config`` to its declared type, in place.

    Returns:
        The problems found (one message per bad value) and the names of the bad fields;
        a bad field is reset to its default so that later checks do not trip on it.
    """
    problems: list[str] = []
    bad: set[str] = set()
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        kind, optional, is_list = _kinds(hints[f.name])
        value = getattr(config, f.name)
        if value is None:
            if is_list:
                _set(config, f.name, [])
            elif not optional:
                problems.append(f"{f.name} must not be empty")
                bad.add(f.name)
                _set(config, f.name, _default(f))
            continue
        if is_list:
            converted, problem = _coerce_list(f, kind, value)
        else:
            converted, problem = _coerce_value(f, kind, value)
        if problem is None:
            _set(config, f.name, converted)
        else:
            problems.append(problem)
            bad.add(f.name)
            _set(config, f.name, _default(f))
    return problems, bad


def _set(config, name: str, value: Any) -> None:
    # object.__setattr__ works on frozen dataclasses too, as in their own __post_init__
    object.__setattr__(config, name, value)


def _coerce_value(f, kind: type, value: Any) -> tuple[Any, str | None]:
    """(the value as ``kind``, None) or (None, the problem) for one scalar field."""
    choices = f.metadata.get("choices")
    if kind is str and choices and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML reads `stage: 1` as a number
    converted = convert(value, kind)
    if converted is None:
        return None, f"{f.name} must be {_article(kind)}, found {value!r}"
    if kind is float and not math.isfinite(converted):  # inf/nan pass every > 0 check
        return None, f"{f.name} must be a finite number, found {value!r}"
    if choices and converted not in choices:
        return None, f"{f.name} must be one of {', '.join(choices)}, found {converted!r}"
    check = f.metadata.get("check")
    problem = check(converted) if check is not None else None
    if problem is not None:
        return None, f"{f.name}: {problem}"
    return converted, None


def _coerce_list(f, kind: type, value: Any) -> tuple[Any, str | None]:
    """A list field: one item may be given alone (``train: a.json``)."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    converted = [convert(v, kind) for v in items] if isinstance(items, (list, tuple)) else None
    if converted is None or any(c is None for c in converted):
        what = "a file or a list of files" if f.metadata.get("path") else f"{_article(kind)} or a list of them"
        return None, f"{f.name} must be {what}, found {value!r}"
    return converted, None


def _default(f) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None if f.default is MISSING else f.default


def validate(config) -> None:
    """Coerces and checks ``config``; raises one ConfigError listing every problem.

    Call it from the dataclass's ``__post_init__``. The class's ``problems(skip)`` method,
    if any, adds range and consistency checks; fields in ``skip`` were already reported.
    """
    problems, bad = coerce_fields(config)
    check = getattr(config, "problems", None)
    if check is not None:
        problems += check(bad)
    if problems:
        raise ConfigError(_summary(type(config).__name__, problems), problems=problems)


def _summary(source: str, problems: Sequence[str]) -> str:
    return f"{source}: {len(problems)} problem(s): " + "; ".join(problems)


def from_dict(cls: type[T], values: Mapping[str, Any], source: str = "config") -> T:
    """Builds ``cls`` from a mapping (a recipe, flags); unknown keys are reported, not dropped.

    Keys may be spelled with ``-`` or ``_``. Every problem (unknown keys with a "did you
    mean", bad types, bad values) comes in one ConfigError that starts with ``source``.
    """
    names = [f.name for f in fields(cls)]
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    problems = []
    unknown = [k for k in values if k not in names]
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
        problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    try:
        config = cls(**{k: v for k, v in values.items() if k in names})
    except ConfigError as e:
        problems += e.problems or [str(e)]
        config = None
    if problems:
        if unknown:
            problems.append(f"(known keys: {', '.join(names)})")
        count = sum(not p.startswith("(known keys") for p in problems)
        raise ConfigError(f"{source}: {count} problem(s): " + "; ".join(problems), problems=problems)
    return config


def to_dict(config) -> dict:
    """The settings as a plain dict (what pocketqa.json and log.jsonl record)."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


# -- value rules shared by several settings ---------------------------------------------

_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?")


def device_name(value: str) -> str | None:
    """A ``check`` for device settings: None for cpu, cuda, cuda:N, mps or xpu[:N], else the problem.

    Only the spelling is checked here; whether this machine has the device is checked
    where the model is placed (``pocketqa.models.check_device``).
    """
    if _DEVICE.fullmatch(value):
        return None
    return f"expected cpu, cuda, cuda:N or mps, got {value!r}"


# -- command-line flags -----------------------------------------------------------------


def add_flags(
    parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()
) -> dict[str, argparse._ArgumentGroup]:
    """Adds a flag for every field of ``cls``, grouped by the fields' ``group`` metadata.

    Every flag defaults to None, meaning "not given", so that a recipe's value stands unless
    the flag overrides it. Bools get ``--name`` / ``--no-name``; values are converted and
    checked as :func:`validate` would, so a bad one is argparse's one-line error.

    Returns:
        The argument groups by name, for hand-written flags that belong with them.
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("flag", True):
            continue
        group_name = meta.get("group", "general")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        kind, _, is_list = _kinds(hints[f.name])
        names = [f"--{f.name.replace('_', '-')}", *meta.get("aliases", ())]
        kwargs: dict[str, Any] = {"default": None, "dest": f.name, "help": _help(meta.get("help"), f)}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _flag_type(kind, meta.get("check"))
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            else:
                kwargs["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(kind, f.name.upper())
            if is_list:
                kwargs["nargs"] = "+"
            elif meta.get("nargs"):
                kwargs["nargs"] = meta["nargs"]
                kwargs["const"] = meta.get("const")
        groups[group_name].add_argument(*names, **kwargs)
    return groups


def _flag_type(kind: type, check: Callable[[Any], str | None] | None):
    """An argparse ``type`` that reads a flag's text as ``kind``, as :func:`validate` would."""

    def parse(text: str):
        value = convert(text, kind)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {_article(kind)}, got {text!r}")
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        problem = check(value) if check is not None else None
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _help(text: str | None, f) -> str:
    default = _default(f)
    if isinstance(default, bool):
        shown = f" (default: {'on' if default else 'off'})"
    elif default in (None, [], ()):
        shown = ""
    else:
        shown = f" (default: {default})"
    return ((text or "") + shown).strip().replace("%", "%%")


def flag_values(args: argparse.Namespace, cls: type) -> dict:
    """The settings given on the command line (flags left out are not in the dict)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}

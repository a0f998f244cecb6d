"""Recipe files: the shipped recipes by name, YAML reading, and relative paths resolved
against the recipe's folder, so a recipe works from any working directory.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pocketqa.config import from_dict
from pocketqa.errors import ConfigError

T = TypeVar("T")

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Recipe:
    """A recipe read from YAML.

    Attributes:
        values: Its settings, keys spelled with ``_``; relative input paths already resolved.
        source: A label for messages: the file, or ``recipe 'NAME'`` for a shipped one.
        shipped: Whether it ships inside the package (such recipes carry no data paths).
    """

    values: dict
    source: str
    shipped: bool


def shipped_recipes() -> dict[str, Path]:
    """The recipes that ship inside the package, by name (file name without .yaml), sorted."""
    folder = resources.files("pocketqa") / "recipes"
    found = {
        Path(entry.name).stem: Path(os.fspath(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(RECIPE_SUFFIXES)
    }
    return dict(sorted(found.items()))


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe: what it trains."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def find_recipe(name_or_path: str | os.PathLike) -> tuple[Path, bool]:
    """Resolves a recipe: a file path, or the name of a shipped recipe.

    A name may be written ``NAME``, ``NAME.yaml`` or ``recipes/NAME.yaml`` (the spelling
    from a source checkout). A path to one of the shipped files counts as shipped.

    Returns:
        The recipe file and whether it is a shipped one.
    """
    path = Path(name_or_path)
    shipped = shipped_recipes()
    if path.is_file():
        resolved = path.resolve()
        return path, any(resolved == p.resolve() for p in shipped.values())
    name = path.stem if path.suffix in RECIPE_SUFFIXES else path.name
    if name in shipped and (len(path.parts) == 1 or not path.parent.exists() or path.parent.name == "recipes"):
        return shipped[name], True
    close = difflib.get_close_matches(name, list(shipped), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"{name_or_path}: no such recipe file or shipped recipe{hint}; `pocketqa recipes` lists the shipped ones"
    )


def read_yaml(path: Path) -> dict:
    """Reads a recipe YAML file into a dict (keys as written); names the file and line on error."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); a recipe is a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the recipe ({e.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, found {type(values).__name__}")
    return values


def load_recipe(cls: type, name_or_path: str | os.PathLike) -> Recipe:
    """Reads a recipe for config class ``cls`` (a shipped recipe's name, or a YAML file).

    Relative input paths in a recipe file (fields with ``path="input"``) are read against
    the recipe's folder, so a recipe works from any working directory; a ``path="model"``
    field is resolved there only when it exists there (otherwise it may be a hub id or a
    run made from the working directory). Outputs stay relative to the working directory.
    """
    path, shipped = find_recipe(name_or_path)
    values = {str(k).replace("-", "_"): v for k, v in read_yaml(path).items()}
    if shipped:
        return Recipe(values, f"recipe {path.stem!r}", True)
    kinds = {f.name: f.metadata.get("path") for f in fields(cls)}
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is None or value is None:
            continue
        if isinstance(value, (list, tuple)):
            values[key] = [_resolve(v, path.parent, kind) for v in value]
        else:
            values[key] = _resolve(value, path.parent, kind)
    return Recipe(values, str(path), False)


def _resolve(value, base: Path, kind: str):
    if not isinstance(value, (str, os.PathLike)) or str(value).startswith(("pip:", "hf:")) or Path(value).is_absolute():
        return value
    candidate = base / value
    if kind == "input" or candidate.exists():
        return str(candidate)
    return value


def require_inputs(
    values: Mapping[str, Any], source: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """For a shipped recipe: its data paths must come from the command line.

    Raises:
        ConfigError: naming the flags to give when a ``required`` key has no value; keys in
            ``optional`` that have no value either are named as well, in brackets.
    """
    missing = [k for k in required if not values.get(k)]
    if not missing:
        return
    flags = " and ".join(f"--{k.replace('_', '-')} FILE" for k in missing)
    also = [f"--{k.replace('_', '-')} FILE" for k in optional if not values.get(k)]
    if also:
        flags += f" (and {' and '.join(also)})"
    raise ConfigError(f"{source} ships without data paths: give {flags}")


def from_recipe(
    cls: type[T],
    name_or_path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    *,
    inputs: Sequence[str] = (),
    optional_inputs: Sequence[str] = (),
) -> T:
    """Builds ``cls`` from a recipe; non-None ``overrides`` (flags) replace its values.

    Args:
        cls: The config class.
        name_or_path: A shipped recipe's name or a YAML file.
        overrides: Settings given on the command line.
        inputs: Data settings a shipped recipe leaves to the command line and that are
            required (see :func:`require_inputs`); ``optional_inputs`` are suggested with them.
    """
    recipe = load_recipe(cls, name_or_path)
    values = {**recipe.values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if recipe.shipped:
        require_inputs(values, recipe.source, inputs, optional_inputs)
    return from_dict(cls, values, source=recipe.source)

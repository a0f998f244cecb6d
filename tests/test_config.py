"""The config engine (pocketqa.config): coercion, problems, recipes and flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from pocketqa.config import add_flags, flag_values, from_dict, setting, validate
from pocketqa.recipe_files import find_recipe, from_recipe, load_recipe, require_inputs, shipped_recipes
from pocketqa.errors import ConfigError


@dataclass
class Toy:
    name: str | None = setting(None, "a name", group="data", path="model")
    train: list[str] = setting(help="files", group="data", path="input", default_factory=list)
    dev: str | None = setting(None, "dev file", group="data", path="input")
    out: str | None = setting(None, "output", group="output")
    steps: int = setting(10, "how many", group="loop")
    rate: float = setting(0.5, "a rate 100%", group="loop", aliases=("--r",))
    mode: str = setting("a", "which", group="loop", choices=("a", "b"))
    fast: bool = setting(False, "go fast", group="loop")
    slow: bool = setting(True, "go slow", group="loop")
    resume: str | None = setting(None, "resume", group="loop", nargs="?", const="latest")
    hidden: int = setting(3, flag=False)

    def __post_init__(self) -> None:
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
        out = []
        if "steps" not in skip and self.steps < 1:
            out.append(f"steps must be >= 1, found {self.steps}")
        return out


def test_text_and_yaml_values_are_coerced_to_the_field_types():
    toy = Toy(steps="4", rate="3e-5", fast="true", mode="b", train="one.json")
    assert toy.steps == 4 and isinstance(toy.steps, int)
    assert toy.rate == 3e-5 and isinstance(toy.rate, float)  # YAML 1.1 reads 3e-5 as a string
    assert toy.fast is True and toy.train == ["one.json"]
    assert Toy(steps=2.0).steps == 2 and Toy(train=None).train == []


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"steps": 2.5}, "steps must be an integer, found 2.5"),
        ({"steps": True}, "steps must be an integer, found True"),
        ({"rate": "fast"}, "rate must be a number, found 'fast'"),
        ({"rate": float("nan")}, "rate must be a finite number"),
        ({"fast": "yes"}, "fast must be true or false, found 'yes'"),
        ({"mode": "c"}, "mode must be one of a, b, found 'c'"),
        ({"train": ["a.json", 3]}, "train must be a file or a list of files"),
        ({"dev": ["d.json"]}, "dev must be a string, found ['d.json']"),
    ],
)
def test_bad_values_are_named(values, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        Toy(**values)
    assert fragment in str(err.value)


def test_every_problem_comes_in_one_error_and_bad_values_are_not_checked_twice():
    with pytest.raises(ConfigError) as err:
        from_dict(Toy, {"stesp": 3, "rate": "x", "steps": 0, "mode": "z"}, source="toy.yaml")
    message = str(err.value)
    assert message.startswith("toy.yaml: 4 problem(s)")
    assert "unknown key 'stesp' (did you mean 'steps'?)" in message
    assert "rate must be a number" in message and "steps must be >= 1, found 0" in message
    assert "mode must be one of a, b" in message and "(known keys:" in message
    assert len(err.value.problems) == 5  # the four, plus the list of known keys
    with pytest.raises(ConfigError) as err:
        Toy(steps="many")
    assert "steps must be >= 1" not in str(err.value)  # reset to its default, not checked again


def test_keys_may_be_spelled_with_dashes():
    assert from_dict(Toy, {"out": "o", "steps": 3}).steps == 3
    assert from_dict(Toy, {"resume": "latest"}).resume == "latest"


def test_a_recipe_file_reads_its_inputs_against_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "base").mkdir()
    recipe = folder / "r.yaml"
    recipe.write_text("name: base\ntrain: [a.json, /abs/b.json]\ndev: d.json\nout: runs/x\n", encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(Toy, recipe)
    assert not loaded.shipped and loaded.source == str(recipe)
    assert loaded.values["train"] == [str(folder / "a.json"), "/abs/b.json"]
    assert loaded.values["dev"] == str(folder / "d.json")
    assert loaded.values["name"] == str(folder / "base")  # a model path resolves only where it exists
    assert loaded.values["out"] == "runs/x"  # outputs stay relative to the working directory
    recipe.write_text("name: some/hub-id\n", encoding="utf-8")
    assert load_recipe(Toy, recipe).values["name"] == "some/hub-id"


def test_shipped_recipes_resolve_by_name():
    shipped = shipped_recipes()
    assert "minilm-l6-squad2" in shipped and all(p.is_file() for p in shipped.values())
    for spelling in ("minilm-l6-squad2", "minilm-l6-squad2.yaml", "recipes/minilm-l6-squad2.yaml"):
        path, is_shipped = find_recipe(spelling)
        assert is_shipped and path == shipped["minilm-l6-squad2"]
    with pytest.raises(ConfigError, match="did you mean 'minilm-l6-squad2'"):
        find_recipe("minilm-l6-squad")


def test_a_shipped_recipe_needs_its_data_from_the_command_line():
    with pytest.raises(ConfigError) as err:
        require_inputs({"dev": None}, "recipe 'x'", ("train",), ("dev",))
    assert str(err.value) == "recipe 'x' ships without data paths: give --train FILE (and --dev FILE)"
    require_inputs({"train": "t.json"}, "recipe 'x'", ("train",), ("dev",))


def test_flags_are_generated_from_the_fields_and_grouped():
    parser = argparse.ArgumentParser()
    groups = add_flags(parser, Toy)
    assert set(groups) == {"data", "output", "loop"}
    help_text = parser.format_help()
    assert "--r X" in help_text and "(default: 0.5)" in help_text and "100%" in help_text
    assert "--no-fast" in help_text and "--hidden" not in help_text
    args = parser.parse_args(["--train", "a", "b", "--r", "0.1", "--no-slow", "--resume", "--steps", "7"])
    assert flag_values(args, Toy) == {"train": ["a", "b"], "rate": 0.1, "slow": False, "resume": "latest", "steps": 7}
    assert flag_values(parser.parse_args([]), Toy) == {}  # flags left out do not override a recipe
    assert parser.parse_args(["--resume", "ckpt"]).resume == "ckpt"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["--steps", "2.5"], "expected an integer, got '2.5'"), (["--r", "inf"], "must be a finite number"),
     (["--mode", "c"], "invalid choice")],
)
def test_bad_flag_values_are_argparse_errors(argv, fragment, capsys):
    parser = argparse.ArgumentParser()
    add_flags(parser, Toy)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert fragment in capsys.readouterr().err


def test_from_recipe_puts_flags_over_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 5\nrate: 1e-3\n", encoding="utf-8")
    toy = from_recipe(Toy, recipe, {"steps": 9, "rate": None})
    assert toy.steps == 9 and toy.rate == 1e-3

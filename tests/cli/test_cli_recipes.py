"""Recipes from the command line: shipped by name, files from any folder, generated flags."""

from __future__ import annotations

import pytest

import pocketqa.recipes.distill
import pocketqa.recipes.finetune
from pocketqa.cli.main import main
from pocketqa.recipe_files import shipped_recipes


@pytest.fixture
def captured(monkeypatch):
    """Replaces the training loops with a stub that keeps the config it was given."""
    seen = {}

    def fake_train(config):
        seen["config"] = config
        return {"metrics": None, "rank": 0, "steps": 0, "out": config.out}

    def fake_distill(config, progress=True):
        seen["config"] = config
        return {"out": config.out}

    monkeypatch.setattr(pocketqa.recipes.finetune, "train", fake_train)
    monkeypatch.setattr(pocketqa.recipes.distill, "distill", fake_distill)
    return seen


def test_a_shipped_recipe_by_name_needs_the_data_flags(tmp_path, capsys, captured, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", "minilm-l6-squad2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pocketqa train: error: recipe 'minilm-l6-squad2' ships without data paths: "
                   "give --train FILE (and --dev FILE)")
    assert "config" not in captured
    assert main(["train", "--recipe", "minilm-l6-squad2", "--train", "t.json", "--dev", "d.json"]) == 0
    config = captured["config"]
    assert (config.model, config.train, config.dev) == ("pip:all-MiniLM-L6-v2", "t.json", "d.json")
    assert config.learning_rate == 1e-4 and config.out == "runs/minilm-l6-squad2"


def test_a_shipped_distill_recipe_needs_train(tmp_path, capsys, captured, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["distill", "--recipe", "mpnet-to-minilm-l3-squad2"]) == 2
    assert "give --train FILE (and --dev FILE)" in capsys.readouterr().err
    assert main(["distill", "--recipe", "mpnet-to-minilm-l3-squad2", "--train", "a.json", "b.json"]) == 0
    assert captured["config"].train == ["a.json", "b.json"] and captured["config"].student_layers == 3


def test_a_recipe_file_reads_its_data_against_its_folder_from_any_cwd(tmp_path, captured, monkeypatch):
    folder = tmp_path / "experiments"
    (folder / "data").mkdir(parents=True)
    recipe = folder / "mine.yaml"
    recipe.write_text("model: hub/model\ntrain: data/train.json\ndev: data/dev.json\nout: runs/mine\nepochs: 1\n",
                      encoding="utf-8")
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert main(["train", "--recipe", str(recipe), "--lr", "2e-5"]) == 0
    config = captured["config"]
    assert config.train == str(folder / "data" / "train.json") and config.dev == str(folder / "data" / "dev.json")
    assert config.model == "hub/model" and config.out == "runs/mine"  # not there: a hub id; outputs stay in cwd
    assert config.learning_rate == 2e-5 and config.epochs == 1


def test_recipes_lists_every_shipped_recipe(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(shipped_recipes()) == 8
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert rows["minilm-l6-squad2"] == "train" and rows["tinybert-6l-768d-squad2"] == "distill"
    assert rows["mpnet-to-minilm-l6-squad2"] == "distill" and rows["bert-base-uncased-squad2"] == "train"
    assert any("all-MiniLM-L6-v2" in line for line in lines if line.startswith("minilm-l6-squad2 "))


def test_train_help_groups_the_generated_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for section in ("data:", "windows:", "optimisation:", "checkpoints:", "runtime:"):
        assert f"\n{section}\n" in out
    optimisation = out.split("\noptimisation:\n")[1].split("\n\n")[0]
    assert "--adam-epsilon" in optimisation and "--learning-rate X, --lr X" in optimisation
    assert "--eval-batch-size" in out and "--resume [DIR]" in out and "--no-compile" in out


def test_distill_keeps_its_flag_spellings(tmp_path, captured, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["distill", "--teacher", "t", "--out", "o", "--train", "x.json", "--stage1-lr", "1e-4", "--stage2-lr", "2e-5",
            "--distillation-loss-weight", "0.5", "--no-attention-loss", "--resume", "--save-steps", "0",
            "--keep-checkpoints", "3"]
    assert main(argv) == 0
    c = captured["config"]
    assert (c.stage1_learning_rate, c.stage2_learning_rate, c.kd_weight) == (1e-4, 2e-5, 0.5)
    assert c.attention_loss is False and c.resume == "latest" and c.save_steps == 0 and c.keep_checkpoints == 3


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["train", "--lr", "fast"], "argument --learning-rate/--lr: expected a number, got 'fast'"),
        (["train", "--device", "gpu"], "argument --device: expected cpu, cuda, cuda:N or mps, got 'gpu'"),
        (["distill", "--stage", "3"], "argument --stage: invalid choice: '3'"),
        (["augment", "--out", "o.json", "--factor", "many"], "argument --factor: expected an integer"),
    ],
)
def test_a_bad_flag_value_exits_2_with_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


def test_an_out_of_range_setting_is_one_line_too(tmp_path, capsys, captured, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "m", "--train", "t", "--out", "o", "--adam-epsilon", "0", "--eval-batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "adam_epsilon must be > 0, found 0.0" in err and "eval_batch_size must be >= 1, found 0" in err

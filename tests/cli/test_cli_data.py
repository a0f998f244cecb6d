"""The data side of the CLI: --format / --offsets, predict's outputs, convert, evaluate's extras."""

from __future__ import annotations

import json
import re

import pytest

from helpers import one_line_exit_2, squad_dict
from pocketqa.cli.main import main
from pocketqa.data.formats import load_examples, write_examples
from pocketqa.data.predictions import read_prediction_rows
from pocketqa.data.rows import example_row
from pocketqa.data.squad import load_squad


def _dirty_file(tmp_path, empty_question: bool = True):
    """Rows with a wrong offset, an offset whose text is absent, and (for predict) an empty question."""
    rows = [example_row(ex) for ex in load_squad_dict()]
    rows[0]["answers"]["answer_start"] = [2]  # "France" is elsewhere
    rows[1]["answers"] = {"text": ["Sweden"], "answer_start": [0]}  # not in the context
    if empty_question:
        rows[2]["question"] = "  "
    path = tmp_path / "dirty.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, rows


def load_squad_dict():
    from pocketqa.data.squad import squad_examples

    return squad_examples(squad_dict(), "<tiny>")[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_predict_on_dirty_data_writes_rows_with_one_warning(tmp_path, tiny_bert_dir, capsys, suffix):
    path, rows = _dirty_file(tmp_path)
    out = tmp_path / f"preds{suffix}"
    assert main(["predict", "--model", str(tiny_bert_dir), "--data", str(path), "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == ["pocketqa predict: warning: 1 question(s) with an empty context or question get no answer "
                   "(abstained): ids 'q3'"]
    written, meta = read_prediction_rows(out)
    assert [r["id"] for r in written] == [r["id"] for r in rows]
    assert set(written[0]) >= {"id", "answer", "start", "end", "score", "null_odds", "abstained"}
    assert written[2]["abstained"] is True and written[2]["answer"] == "" and written[2]["start"] is None
    if suffix == ".parquet":
        assert meta["data"] == str(path)


def test_predict_with_null_odds_writes_best_spans(tmp_path, tiny_bert_dir, capsys):
    data = tmp_path / "d.json"
    data.write_text(json.dumps(squad_dict()), encoding="utf-8")
    plain, best, odds = tmp_path / "plain.json", tmp_path / "best.json", tmp_path / "odds.json"
    model = ["--model", str(tiny_bert_dir), "--data", str(data), "--threshold=-1e9"]  # abstain everywhere
    assert main(["predict", *model, "--out", str(plain)]) == 0
    assert set(json.loads(plain.read_text()).values()) == {""}
    capsys.readouterr()
    assert main(["predict", *model, "--out", str(best), "--null-odds", str(odds)]) == 0
    out = capsys.readouterr().out
    assert "best span (not thresholded" in out
    spans = json.loads(best.read_text())
    assert all(spans.values()) and set(spans) == set(json.loads(odds.read_text()))


def test_evaluate_repairs_by_default_and_strict_refuses(tmp_path, tiny_bert_dir, capsys):
    path, rows = _dirty_file(tmp_path, empty_question=False)  # evaluation refuses an empty question
    assert main(["evaluate", "--model", str(tiny_bert_dir), "--data", str(path)]) == 0
    captured = capsys.readouterr()
    warns = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warns) == 1 and "moved 1 answer_start(s)" in warns[0] and "'q2'" in warns[0]
    assert json.loads(captured.out[captured.out.index("{"):])["total"] == len(rows) - 1
    one_line_exit_2(["evaluate", "--model", str(tiny_bert_dir), "--data", str(path), "--offsets", "strict"],
                    capsys, str(path), "2 problem(s)", "line 1 (id 'q1')", "--offsets repair")


def test_evaluate_same_scores_from_parquet_and_saves_predictions(tmp_path, tiny_bert_dir, capsys):
    squad = tmp_path / "d.json"
    squad.write_text(json.dumps(squad_dict()), encoding="utf-8")
    parquet = tmp_path / "d.parquet"
    assert main(["convert", str(squad), str(parquet)]) == 0
    results = []
    for data in (squad, parquet):
        capsys.readouterr()
        saved = tmp_path / f"saved-{data.suffix[1:]}"
        assert main(["evaluate", "--model", str(tiny_bert_dir), "--data", str(data), "--save-predictions", str(saved)]) == 0
        captured = capsys.readouterr()
        scores = json.loads(captured.out[captured.out.index("{"):])
        assert "seconds" not in scores  # the scores JSON holds no timing: same data, same bytes
        assert re.search(r"\d+ questions in [\d.]+ s \([\d.]+ questions/s\)", captured.out)
        assert "window" in captured.err  # the bar counts windows, and says so
        results.append(scores)
        preds = json.loads((saved / "predictions.json").read_text())
        odds = json.loads((saved / "null_odds.json").read_text())
        rows, _ = read_prediction_rows(saved / "predictions.jsonl")
        assert list(preds) == list(odds) == [r["id"] for r in rows]
        assert [r["abstained"] for r in rows] == [odds[r["id"]] > scores["threshold"] for r in rows]
    assert results[0] == results[1]


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl.gz", "c.csv", "c.json"])
def test_convert_round_trip(tmp_path, capsys, name):
    squad = tmp_path / "d.json"
    squad.write_text(json.dumps(squad_dict()), encoding="utf-8")
    middle, back = tmp_path / name, tmp_path / "back.json"
    to = ["--to", "json"] if name == "c.json" else []  # rows in a JSON array
    assert main(["convert", str(squad), str(middle), *to]) == 0
    assert main(["convert", str(middle), str(back)]) == 0
    assert load_squad(back) == load_squad(squad)
    if name == "c.json":
        assert isinstance(json.loads(middle.read_text()), list)


def test_convert_bad_input_exits_2_with_one_line(tmp_path, capsys):
    path, _ = _dirty_file(tmp_path, empty_question=False)
    out = tmp_path / "out.parquet"
    one_line_exit_2(["convert", str(path), str(out)], capsys, str(path), "2 problem(s)", "line 1 (id 'q1')")
    assert not out.exists()
    one_line_exit_2(["convert", str(path), str(tmp_path / "x.txt")], capsys, "x.txt", "--format")
    assert main(["convert", str(path), str(out), "--offsets", "repair"]) == 0
    assert [ex.id for ex in load_examples(out)] == ["q1", "q3", "q4", "q5", "q6", "q7"]  # q2's only answer is absent


def test_train_and_distill_take_format_and_offsets(capsys):
    for command in ("train", "distill", "augment"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--format" in text and "--offsets" in text


def test_train_features_from_rows_with_repair(tmp_path, tiny_tokenizer):
    from pocketqa.data.cache import load_train_features
    from pocketqa.data.features import WindowConfig
    from pocketqa.errors import SquadFormatError

    path, rows = _dirty_file(tmp_path, empty_question=False)
    window = WindowConfig(64, 16, 16)
    with pytest.raises(SquadFormatError, match="line 1"):
        load_train_features(path, tiny_tokenizer, window, cache_dir=tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="moved 1"):
        data = load_train_features(path, tiny_tokenizer, window, cache_dir=tmp_path / "cache", progress=False,
                                   offsets="repair")
    assert data.n_examples == len(rows) - 1
    good = tmp_path / "good.parquet"
    write_examples(load_squad_dict(), good)
    assert load_train_features(good, tiny_tokenizer, window, cache_dir=tmp_path / "cache", progress=False).n_examples == 7


def test_recipe_keeps_hub_ids_and_reads_format_and_offsets(tmp_path):
    from pocketqa.recipe_files import load_recipe
    from pocketqa.recipes.configs import TrainConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: hf:rajpurkar/squad_v2:train\ndev: dev.parquet\noffsets: repair\nformat: parquet\n")
    values = load_recipe(TrainConfig, recipe).values
    assert values["train"] == "hf:rajpurkar/squad_v2:train"  # not taken for a path beside the recipe
    assert values["dev"] == str(tmp_path / "dev.parquet")
    config = TrainConfig(**values, model="m", out=str(tmp_path / "o"))
    assert (config.format, config.offsets) == ("parquet", "repair")

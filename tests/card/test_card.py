"""Model cards: README.md numbers equal the evaluation's, plots are real PNGs, errors exit 2."""

import importlib.util
import json
import re
import shutil
import sys

import pytest
import yaml

from helpers import one_line_exit_2
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.card.facts import count_parameters, describe_backend
from pocketqa.card.write import write_card
from pocketqa.cli.main import main
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.models import dir_size_mb
from pocketqa.data.squad import load_squad

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _model(tmp_path, src, meta=None):
    model = tmp_path / "my-model"
    shutil.copytree(src, model)
    if meta is not None:
        (model / "pocketqa.json").write_text(json.dumps(meta), encoding="utf-8")
    return model


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _table(text: str) -> dict[str, str]:
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", text, flags=re.M)
    return {k: v for k, v in rows if k != "Metric" and not k.startswith("---")}


def test_card_with_dev_reports_the_official_scores(tmp_path, tiny_bert_dir, tiny_squad_file):
    meta = {
        "name": "tiny-squad2",
        "threshold": 0.25,
        "base_model": "pip:all-MiniLM-L6-v2",
        "recipe": {"learning_rate": 3e-5, "epochs": 2},
        "data": {"train": {"path": "train-v2.0.json.gz", "sha256": "ab" * 32}},
        "command": ["pocketqa", "train", "--recipe", "recipes/minilm.yaml"],
    }
    model = _model(tmp_path, tiny_bert_dir, meta)
    size = dir_size_mb(model)
    path = write_card(model, dev_path=tiny_squad_file, bench_questions=3, threads=1)

    examples = load_squad(tiny_squad_file)
    qa = QuestionAnswerer.from_pretrained(model, device="cpu")
    expected = score_decoded(examples, qa.decode_examples(examples), qa.threshold)
    assert expected["threshold"] == 0.25

    stored = json.loads((model / "eval_results.json").read_text())
    for key, value in expected.items():
        assert stored[key] == pytest.approx(value), key
    assert stored["speed"]["questions"] == 3 and stored["speed"]["questions_per_s"] > 0

    text = path.read_text(encoding="utf-8")
    front = _front_matter(text)
    assert front["language"] == "en" and front["datasets"] == ["squad_v2"]
    assert {"question-answering", "pocketqa"} <= set(front["tags"])
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["f1"] == pytest.approx(expected["f1"], abs=1e-4)
    assert metrics["exact_match"] == pytest.approx(expected["exact"], abs=1e-4)

    table = _table(text)
    for label, key in [("EM", "exact"), ("F1", "f1"), ("HasAns EM", "HasAns_exact"), ("HasAns F1", "HasAns_f1"),
                       ("NoAns EM", "NoAns_exact"), ("NoAns F1", "NoAns_f1")]:
        assert float(table[label]) == pytest.approx(expected[key], abs=0.005), label
    assert float(table["no-answer threshold used"]) == pytest.approx(0.25)
    assert table["best F1"] == f"{expected['best_f1']:.2f} at threshold {expected['best_f1_thresh']:.4f}"
    assert table["size (MB)"] == f"{size:.2f}"
    assert float(table["CPU questions/s (batch 1, 1 threads)"]) > 0
    # What pocketqa.json says about the model's making shows up on the card.
    assert "pocketqa train --recipe recipes/minilm.yaml" in text
    assert "pip:all-MiniLM-L6-v2" in text and "learning_rate: 3.0e-05" in text
    assert 'QuestionAnswerer.from_pretrained("my-model")' in text and "pocketqa ask --model my-model" in text

    for name in ("threshold_curve.png", "has_no_ans.png"):
        png = model / name
        if HAS_MATPLOTLIB:
            assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_SIGNATURE
            assert f"]({name})" in text
        else:
            assert not png.exists() and f"]({name})" not in text


def test_card_without_dev_says_not_evaluated(tmp_path, tiny_bert_dir):
    model = _model(tmp_path, tiny_bert_dir)
    text = write_card(model, bench_questions=5).read_text(encoding="utf-8")
    assert "model-index" not in _front_matter(text)
    table = _table(text)
    assert table["EM / F1"] == "not evaluated"
    assert table["size (MB)"] == f"{dir_size_mb(model):.2f}"
    assert "EM" not in table and "F1" not in table
    assert not (model / "eval_results.json").exists() and not list(model.glob("*.png"))
    # Parameter count read from the safetensors header, without loading the weights.
    assert "bert, 2 layers, hidden 32, heads 2" in text


def test_card_without_dev_shows_metrics_stored_in_pocketqa_json(tmp_path, tiny_bert_dir):
    stored = {"exact": 61.234, "f1": 64.5, "total": 10, "HasAns_exact": 50.0, "HasAns_f1": 57.0, "HasAns_total": 6,
              "NoAns_exact": 77.5, "NoAns_f1": 77.5, "NoAns_total": 4, "best_f1": 66.0, "best_f1_thresh": -1.5}
    model = _model(tmp_path, tiny_bert_dir, {"metrics": {"dev": stored}, "threshold": -1.5})
    text = write_card(model).read_text(encoding="utf-8")
    table = _table(text)
    assert (table["EM"], table["F1"], table["NoAns EM"]) == ("61.23", "64.50", "77.50")
    assert table["no-answer threshold used"] == "-1.5000"
    assert "not evaluated" not in text
    assert (model / "has_no_ans.png").exists() == HAS_MATPLOTLIB


def test_cli_card_skips_plots_without_matplotlib(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch, capsys):
    model = _model(tmp_path, tiny_bert_dir)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    rc = main(["card", "--model", str(model), "--dev", str(tiny_squad_file), "--bench-questions", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and "pocketqa[plots]" in out
    assert (model / "README.md").is_file() and (model / "eval_results.json").is_file()
    assert not list(model.glob("*.png"))
    assert _table((model / "README.md").read_text())["CPU questions/s (batch 1)"] == "not measured"


def test_cli_card_missing_model_dir_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = main(["card", "--model", str(missing)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1
    assert not missing.exists()


def test_cli_card_reports_all_bad_flags_at_once(tmp_path, tiny_bert_dir, capsys):
    model = _model(tmp_path, tiny_bert_dir)
    assert main(["card", "--model", str(model), "--bench-questions", "-1", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--bench-questions" in err and "--threads" in err
    assert not (model / "README.md").exists()


def test_parameters_and_backend_come_from_the_directory(tmp_path, tiny_bert_dir):
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    assert count_parameters(tiny_bert_dir, {}) == (sum(p.numel() for p in model.parameters()), False)
    assert describe_backend(tiny_bert_dir, {}) == "PyTorch (safetensors)"
    onnx_dir = tmp_path / "exported"
    onnx_dir.mkdir()
    (onnx_dir / "model.onnx").write_bytes(b"not a real graph")
    int8_meta = {"export": {"format": "onnx", "int8": True}, "training": {"steps": 10}}
    assert describe_backend(onnx_dir, int8_meta) == "ONNX Runtime, int8"
    assert describe_backend(onnx_dir, {"export": {"format": "onnx", "int8": False}}) == "ONNX Runtime, fp32"
    assert count_parameters(onnx_dir, {"export": {"parameters": 1234}}) == (1234, False)


def test_card_on_broken_model_files_is_one_line_exit_2(tmp_path, tiny_bert_dir, capsys):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bert_dir, truncated)
    (truncated / "model.safetensors").write_bytes(b"")  # an interrupted copy
    one_line_exit_2(["card", "--model", str(truncated)], capsys, "model.safetensors")
    huge = tmp_path / "huge"
    shutil.copytree(tiny_bert_dir, huge)
    (huge / "model.safetensors").write_bytes(b"\xff" * 7 + b"\x7f" + b"{}")  # header length past the end
    one_line_exit_2(["card", "--model", str(huge)], capsys, "model.safetensors")
    listed = tmp_path / "listed"
    shutil.copytree(tiny_bert_dir, listed)
    (listed / "pocketqa.json").write_text("[1, 2]", encoding="utf-8")
    one_line_exit_2(["card", "--model", str(listed)], capsys, "pocketqa.json", "JSON object")

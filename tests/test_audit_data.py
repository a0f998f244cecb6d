"""Audit of the data path: SQuAD reading, official metrics with partial predictions, model cards."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings

import pytest
from helpers import squad_dict

from pocketqa.cli.main import main
from pocketqa.errors import SquadFormatError
from pocketqa.evaluation.scoring import evaluate_files
from pocketqa.evaluation.metrics import squad_v2_eval
from pocketqa.data.squad import load_squad


def _one_line_exit_2(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_utf8_bom_at_file_start_is_read(tmp_path):
    # Windows tools (Notepad, PowerShell's Out-File) save UTF-8 JSON with a byte-order mark.
    data = squad_dict()
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data), encoding="utf-8")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode("utf-8"))
    bom_gz = tmp_path / "bom.json.gz"
    bom_gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + json.dumps(data).encode("utf-8")))
    assert load_squad(bom) == load_squad(bom_gz) == load_squad(plain)
    preds = tmp_path / "preds.json"
    preds.write_bytes(b"\xef\xbb\xbf" + json.dumps({"q1": "France"}).encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other questions have no prediction
        assert evaluate_files(plain, preds)["exact"] == 100.0


def test_damaged_gzip_is_one_line_exit_2(tmp_path, capsys):
    raw = bytearray(gzip.compress(json.dumps({"data": [{"title": "x" * 5000, "paragraphs": []}] * 50}).encode()))
    for i in range(20, 60):  # flip bits inside the deflate stream: zlib.error, not OSError
        raw[i] ^= 0x55
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(SquadFormatError, match="bad.json.gz"):
        load_squad(bad)
    _one_line_exit_2(["evaluate", "--data", str(bad), "--predictions", str(bad)], capsys, "bad.json.gz")


def test_nfd_answer_vs_nfc_context_names_normalisation(tmp_path):
    data = squad_dict()
    paragraph = data["data"][0]["paragraphs"][0]
    paragraph["context"] = "He moved to Mu\u0308nchen in 1990."  # NFD: u + combining diaeresis
    paragraph["qas"] = [{"id": "x", "question": "Where?", "answers": [{"text": "M\u00fcnchen", "answer_start": 12}]}]
    path = tmp_path / "nfd.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SquadFormatError, match="Unicode normalisation"):
        load_squad(path)


def _partial_case():
    data = squad_dict()["data"]
    # q1-q3 and q5-q6 answerable, q4 and q7 unanswerable; predict only a few of them.
    preds = {"q1": "France", "q2": "Denmark", "q4": "Rollo"}
    na_probs = {f"q{i}": 0.1 * i for i in range(1, 8)}
    return data, preds, na_probs


def test_best_scores_skip_missing_predictions_like_every_other_total():
    data, preds, na_probs = _partial_case()
    with pytest.warns(UserWarning, match="Missing prediction"):
        out = squad_v2_eval(data, preds, na_probs)
    assert out["total"] == 3
    assert 0.0 <= out["best_exact"] <= 100.0 and 0.0 <= out["best_f1"] <= 100.0
    # Skipping the missing questions must equal scoring a file that holds only the predicted ones.
    subset = [
        {**a, "paragraphs": [{**p, "qas": [q for q in p["qas"] if q["id"] in preds]} for p in a["paragraphs"]]}
        for a in data
    ]
    full = squad_v2_eval(subset, preds, na_probs)
    for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
        assert out[key] == pytest.approx(full[key]), key


def test_cli_evaluate_partial_predictions_best_f1_at_most_100(tmp_path, tiny_squad_file, capsys):
    _, preds, na_probs = _partial_case()
    (tmp_path / "preds.json").write_text(json.dumps(preds), encoding="utf-8")
    (tmp_path / "odds.json").write_text(json.dumps(na_probs), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = ["evaluate", "--data", str(tiny_squad_file), "--predictions", str(tmp_path / "preds.json"),
                "--null-odds", str(tmp_path / "odds.json")]
        assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["best_f1"] <= 100.0 and scores["best_exact"] <= 100.0


def test_cli_evaluate_predictions_matching_no_question_exit_2(tmp_path, tiny_squad_file, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _one_line_exit_2(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(empty)], capsys,
                         "No question")


def test_card_on_broken_model_files_is_one_line_exit_2(tmp_path, tiny_bert_dir, capsys):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bert_dir, truncated)
    (truncated / "model.safetensors").write_bytes(b"")  # an interrupted copy
    _one_line_exit_2(["card", "--model", str(truncated)], capsys, "model.safetensors")
    huge = tmp_path / "huge"
    shutil.copytree(tiny_bert_dir, huge)
    (huge / "model.safetensors").write_bytes(b"\xff" * 7 + b"\x7f" + b"{}")  # header length past the end
    _one_line_exit_2(["card", "--model", str(huge)], capsys, "model.safetensors")
    listed = tmp_path / "listed"
    shutil.copytree(tiny_bert_dir, listed)
    (listed / "pocketqa.json").write_text("[1, 2]", encoding="utf-8")
    _one_line_exit_2(["card", "--model", str(listed)], capsys, "pocketqa.json", "JSON object")


def _two_shards(tmp_path):
    from pocketqa.augment.edits import AugmentConfig, FunctionSource, augment_squad_file

    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad_dict()), encoding="utf-8")
    source = FunctionSource(lambda text, spans: [["zebra", "walrus"] for _ in spans])
    shards = []
    for k in range(2):
        shards.append(tmp_path / f"s{k}.json")
        augment_squad_file(data, shards[-1], source, AugmentConfig(factor=2, seed=1, shard_index=k, num_shards=2),
                           progress=False)
    return shards


def test_merge_refuses_a_damaged_shard_instead_of_writing_bad_labels(tmp_path, capsys):
    shards = _two_shards(tmp_path)
    out = tmp_path / "merged.json"
    damaged = json.loads(shards[1].read_text(encoding="utf-8"))
    qa = damaged["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3  # hand-edited: the label no longer points at its text
    shards[1].write_text(json.dumps(damaged), encoding="utf-8")
    _one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s1.json", qa["id"])
    assert not out.exists()

    del damaged["data"][0]["paragraphs"]
    shards[1].write_text(json.dumps(damaged), encoding="utf-8")
    _one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s1.json", "paragraphs")
    damaged = json.loads(shards[0].read_text(encoding="utf-8"))
    damaged["pocketqa_augment"]["shard"] = 0
    shards[0].write_text(json.dumps(damaged), encoding="utf-8")
    _one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s0.json", "shard")
    assert not out.exists()

"""The pocketqa.json contract: updates keep the keys they do not own, also through evaluation."""

import json
import shutil

from pocketqa.evaluation.scoring import evaluate_model
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.modeldir import META_FILE, read_meta, update_meta, write_meta


def test_update_merges_a_mapping_one_level_deep(tmp_path):
    write_meta(tmp_path, {"name": "m", "old": 1, "calibration": {"backend": "onnx", "data": "old.json"}})
    meta = update_meta(tmp_path, calibration={"data": "new.json", "n_best": 20}, threshold=1.5, old=None)
    assert meta == {"name": "m", "threshold": 1.5, "calibration": {"backend": "onnx", "data": "new.json", "n_best": 20}}
    assert read_meta(tmp_path) == meta


def test_save_threshold_keeps_keys_it_does_not_own(tmp_path, tiny_bert_dir, tiny_squad_file):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    write_meta(model_dir, {
        "name": "tiny", "owner": "team-qa", "threshold": 3.0,
        "calibration": {"backend": "onnxruntime", "data": "old.json", "best_f1": 1.0, "align_to_words": True},
    })
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    assert not qa.align_to_words

    report = evaluate_model(qa, tiny_squad_file, save_threshold=True, model_arg=str(model_dir))

    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    scores = report["scores"]
    assert meta["name"] == "tiny" and meta["owner"] == "team-qa"  # top-level keys survive
    assert meta["threshold"] == scores["best_f1_thresh"]
    calibration = meta["calibration"]
    assert calibration["backend"] == "onnxruntime"  # a key evaluation does not write survives
    assert calibration["data"] == str(tiny_squad_file) and calibration["best_f1"] == scores["best_f1"]
    assert calibration["n_best"] == qa.n_best and calibration["max_answer_length"] == qa.max_answer_length
    # A setting evaluation does own is not left over from the old calibration.
    assert "align_to_words" not in calibration

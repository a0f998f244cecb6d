"""Domain thresholds in pocketqa.json: stored beside the default without dropping other keys,
read back by QuestionAnswerer.from_pretrained(domain=...), unknown domains named."""

import math
import shutil

import pytest
from helpers import CONTEXTS

from pocketqa.errors import PocketQAError
from pocketqa.evaluation.scoring import evaluate_model
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.modeldir import domain_threshold, read_meta, store_threshold, write_meta

BEFORE = {
    "name": "tiny", "owner": "team-qa", "window": {"max_seq_length": 384},
    "threshold": -1.0, "calibration": {"backend": "onnxruntime", "data": "dev.json", "best_f1": 70.0},
    "pipeline_threshold": 0.5,
    "domains": {"news": {"threshold": 2.0, "calibration": {"method": "answerable_rate", "owner": "ann"}}},
}


def test_a_domain_is_stored_beside_the_default_and_keeps_every_other_key(tmp_path):
    write_meta(tmp_path, BEFORE)
    store_threshold(tmp_path, "logits", 1.25, {"method": "labeled", "data": "reviews.json"}, domain="reviews")
    store_threshold(tmp_path, "pipeline", -0.5, {"method": "labeled", "data": "reviews.json"}, domain="reviews")
    meta = read_meta(tmp_path)
    assert {k: v for k, v in meta.items() if k != "domains"} == {k: v for k, v in BEFORE.items() if k != "domains"}
    assert meta["domains"]["news"] == BEFORE["domains"]["news"]
    assert meta["domains"]["reviews"] == {
        "threshold": 1.25, "calibration": {"method": "labeled", "data": "reviews.json"},
        "pipeline_threshold": -0.5, "pipeline_calibration": {"method": "labeled", "data": "reviews.json"},
    }
    # A new calibration of a domain replaces the calibration keys but keeps one it does not own.
    store_threshold(tmp_path, "logits", 3.0, {"method": "labeled", "data": "news2.json"}, domain="news")
    assert read_meta(tmp_path)["domains"]["news"] == {
        "threshold": 3.0, "calibration": {"method": "labeled", "data": "news2.json", "owner": "ann"}}


def test_the_default_threshold_is_replaced_and_stale_calibration_keys_go(tmp_path):
    write_meta(tmp_path, BEFORE)
    store_threshold(tmp_path, "logits", 0.75, {"method": "answerable_rate", "answerable_rate": 0.9, "questions": 9})
    meta = read_meta(tmp_path)
    assert meta["threshold"] == 0.75
    # best_f1 from the earlier labeled calibration would describe another threshold: it goes.
    assert meta["calibration"] == {"backend": "onnxruntime", "method": "answerable_rate", "answerable_rate": 0.9,
                                   "questions": 9}
    assert meta["domains"] == BEFORE["domains"] and meta["pipeline_threshold"] == 0.5 and meta["owner"] == "team-qa"


def test_evaluate_save_threshold_drops_the_keys_calibrate_wrote(tmp_path, tiny_bert_dir, tiny_squad_file):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    write_meta(model_dir, {"calibration": {"method": "answerable_rate", "answerable_rate": 0.9, "backend": "x"},
                           "domains": {"news": {"threshold": 2.0}}})
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    evaluate_model(qa, tiny_squad_file, save_threshold=True, model_arg=str(model_dir))
    meta = read_meta(model_dir)
    assert "method" not in meta["calibration"] and "answerable_rate" not in meta["calibration"]
    assert meta["calibration"]["backend"] == "x" and meta["domains"] == {"news": {"threshold": 2.0}}


def test_unknown_domain_lists_the_known_ones(tmp_path):
    with pytest.raises(PocketQAError, match=r"unknown domain 'sport' \(known: legal, news\)"):
        domain_threshold(tmp_path, {"domains": {"news": {"threshold": 1.0}, "legal": {"threshold": 0.0}}},
                         "sport", "logits")
    with pytest.raises(PocketQAError, match=r"unknown domain 'sport' \(known: none\)"):
        domain_threshold(tmp_path, {}, "sport", "logits")


@pytest.mark.parametrize("meta,needle", [
    ({"domains": {"news": {"threshold": 1.0}}}, "no threshold for scoring 'pipeline'"),
    ({"domains": {"news": {"pipeline_threshold": "high"}}}, "domains.news.pipeline_threshold must be a finite number"),
    ({"domains": {"news": 3}}, "domains.news must be a mapping"),
    ({"domains": []}, "'domains' must be a mapping"),
])
def test_bad_domain_entries_are_named(tmp_path, meta, needle):
    with pytest.raises(PocketQAError, match=needle.replace("(", r"\(")):
        domain_threshold(tmp_path, meta, "news", "pipeline")


@pytest.mark.parametrize("name", ["", "a b", "../up", "-x", "x" * 65])
def test_bad_domain_names_are_refused(tmp_path, name):
    with pytest.raises(PocketQAError, match="domain name"):
        store_threshold(tmp_path, "logits", 0.0, {}, domain=name)


def test_non_finite_thresholds_are_not_stored(tmp_path):
    with pytest.raises(PocketQAError, match="finite"):
        store_threshold(tmp_path, "logits", math.inf, {}, domain="news")
    assert read_meta(tmp_path) == {}


def test_from_pretrained_uses_the_domains_threshold(tmp_path, tiny_bert_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model_dir)
    question, answer, _ = CONTEXTS[1][2][0]
    context = CONTEXTS[1][1]
    odds = QuestionAnswerer.from_pretrained(model_dir, device="cpu")(question, context)["null_odds"]
    write_meta(model_dir, {"threshold": odds + 1.0, "domains": {"strict": {"threshold": odds - 1.0}}})

    default = QuestionAnswerer.from_pretrained(model_dir, device="cpu")
    strict = QuestionAnswerer.from_pretrained(model_dir, device="cpu", domain="strict")
    assert (default.threshold, strict.threshold) == (odds + 1.0, odds - 1.0)
    assert default(question, context)["answer"] != "" and strict(question, context)["answer"] == ""
    with pytest.raises(PocketQAError, match=r"unknown domain 'lenient' \(known: strict\)"):
        QuestionAnswerer.from_pretrained(model_dir, device="cpu", domain="lenient")
    with pytest.raises(PocketQAError, match="both set the no-answer threshold"):
        QuestionAnswerer.from_pretrained(model_dir, device="cpu", domain="strict", threshold=0.0)

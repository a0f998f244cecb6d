"""``pocketqa calibrate`` end to end on a tiny model, and --domain on the other commands."""

import json
import shutil

import pytest
from helpers import one_line_exit_2, squad_dict

from pocketqa.cli.main import main
from pocketqa.errors import PocketQAError
from pocketqa.modeldir import read_meta, write_meta
from pocketqa.models import default_model_path


@pytest.fixture()
def model(tmp_path, tiny_bert_dir):
    path = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, path)
    write_meta(path, {"name": "tiny", "threshold": -50.0, "calibration": {"backend": "torch"}})
    return path


@pytest.fixture()
def unlabeled_file(tmp_path):
    data = squad_dict()
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qa["answers"], qa["is_impossible"] = [], False
    path = tmp_path / "unlabeled.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_labeled_calibration_saved_as_a_domain_and_used_by_evaluate(model, tiny_squad_file, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["calibrate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--bootstrap", "50", "--seed", "3", "--save", "--domain", "reviews", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibrated" in printed and "95 % interval" in printed and "domain 'reviews'" in printed
    report = json.loads(out.read_text())
    assert report["method"] == "labeled" and report["current"]["threshold"] == -50.0
    assert report["interval"]["resamples"] == 50 and report["interval"]["seed"] == 3

    meta = read_meta(model)
    assert meta["threshold"] == -50.0 and meta["calibration"] == {"backend": "torch"}  # the default is untouched
    entry = meta["domains"]["reviews"]
    assert entry["threshold"] == report["threshold"]
    assert entry["calibration"]["method"] == "labeled" and entry["calibration"]["data"] == tiny_squad_file.name
    assert entry["calibration"]["questions"] == 7 and entry["calibration"]["interval"] == report["interval"]

    # evaluate finds the same best threshold, and scores at the domain's threshold with --domain.
    scores_file = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--domain", "reviews", "--out", str(scores_file)]) == 0
    scores = json.loads(scores_file.read_text())
    assert scores["best_f1_thresh"] == report["threshold"]
    assert scores["threshold"] == report["threshold"] and scores["f1"] == pytest.approx(report["f1"])


def test_unlabeled_calibration_replaces_the_default_threshold(model, unlabeled_file, tmp_path, capsys):
    one_line_exit_2(["calibrate", "--model", str(model), "--device", "cpu", "--data", str(unlabeled_file)],
                    capsys, "no question has a gold answer", "--answerable-rate")
    assert main(["calibrate", "--model", str(model), "--device", "cpu", "--data", str(unlabeled_file),
                 "--answerable-rate", "0.5", "--save"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{"):])
    assert report["f1"] is None and report["method"] == "answerable_rate"
    assert report["abstain_share"] == pytest.approx(4 / 7)  # 7 questions: round(3.5) = 4 abstain
    meta = read_meta(model)
    assert meta["threshold"] == report["threshold"] != -50.0
    assert meta["calibration"] == {"backend": "torch", "method": "answerable_rate", "answerable_rate": 0.5,
                                   "abstain_share": report["abstain_share"], "data": unlabeled_file.name,
                                   "questions": 7, "n_best": 20, "max_answer_length": 30}
    assert "domains" not in meta


def test_a_new_domain_is_compared_with_the_default_threshold(model, tiny_squad_file, capsys):
    assert main(["calibrate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--answerable-rate", "1", "--save", "--domain", "all-answerable"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{"):])
    assert report["current"]["threshold"] == -50.0 and report["abstain_share"] == 0.0
    # Now that it exists, --domain reads it (calibrating it again compares with it).
    assert main(["calibrate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--domain", "all-answerable", "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    again = json.loads(printed[printed.index("{"):])
    assert again["current"]["threshold"] == report["threshold"] and "interval" not in again


def test_unknown_domain_is_one_line_listing_the_known_ones(model, tiny_squad_file, capsys):
    write_meta(model, {"domains": {"news": {"threshold": 0.0}, "legal": {"threshold": 1.0}}})
    for command in (["evaluate", "--data", str(tiny_squad_file)], ["ask", "-q", "Who?", "-c", "Ann wrote it."],
                    ["calibrate", "--data", str(tiny_squad_file)]):
        one_line_exit_2([*command, "--model", str(model), "--device", "cpu", "--domain", "sport"], capsys,
                        "unknown domain 'sport'", "known: legal, news")


@pytest.mark.parametrize("argv,needle", [
    (["--save"], "needs an explicit --model"),
    (["--save", "--model", str(default_model_path())], "the bundled model is not changed"),
])
def test_saving_into_the_bundled_model_is_refused(argv, needle, tiny_squad_file, capsys):
    one_line_exit_2(["calibrate", "--data", str(tiny_squad_file), *argv], capsys, needle)


@pytest.mark.parametrize("argv,needle", [
    (["--answerable-rate", "0"], "--answerable-rate: must be in (0, 1]"),
    (["--answerable-rate", "1.2"], "--answerable-rate: must be in (0, 1]"),
    (["--bootstrap", "-1"], "--bootstrap: must be >= 0"),
    (["--domain", "a/b"], "--domain: domain name 'a/b'"),
])
def test_bad_calibrate_flags_are_refused_by_the_parser(argv, needle, tiny_squad_file, capsys):
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "--data", str(tiny_squad_file), *argv])
    err = capsys.readouterr().err
    assert done.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_serve_passes_the_domain_to_the_answerer(monkeypatch, capsys):
    from pocketqa.serve import server

    seen = {}

    def from_pretrained(*args, **kwargs):
        seen.update(kwargs)
        raise PocketQAError("stopped before serving")

    monkeypatch.setattr(server.QuestionAnswerer, "from_pretrained", from_pretrained)
    assert main(["serve", "--model", "m", "--port", "0", "--domain", "reviews"]) == 2
    assert seen["domain"] == "reviews" and "stopped before serving" in capsys.readouterr().err


def test_evaluate_save_threshold_stores_under_the_domain(model, tiny_squad_file, capsys):
    assert main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--save-threshold", "--domain", "wiki"]) == 0
    capsys.readouterr()
    meta = read_meta(model)
    assert meta["threshold"] == -50.0 and meta["calibration"] == {"backend": "torch"}  # the default is untouched
    assert "threshold" in meta["domains"]["wiki"] and meta["domains"]["wiki"]["calibration"]["data"] == str(tiny_squad_file)

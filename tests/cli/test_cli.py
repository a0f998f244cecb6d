import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from helpers import one_line_exit_2, squad_dict
from pocketqa.cli.main import main
from pocketqa.evaluation.metrics import squad_v2_eval
from pocketqa.modeldir import read_meta

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_ask_prints_answer_span(tiny_bert_dir, capsys):
    ctx = "Paris is the capital of France."
    rc = main(["ask", "--model", str(tiny_bert_dir), "--device", "cpu", "-q", "What is the capital?", "-c", ctx, "--json", "--no-abstain"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)["answers"][0]
    assert ctx[out["start"] : out["end"]] == out["answer"] != ""


def test_ask_n_best_and_max_answer_length(tiny_bert_dir, capsys):
    # The QA pipeline's max_answer_len and top_k=1 (n_best 1) reach the CLI, not only Python.
    ctx = "Paris is the capital of France and home to the Louvre, the Seine and many old bridges."
    base = ["ask", "--model", str(tiny_bert_dir), "--device", "cpu", "-q", "What?", "-c", ctx, "--json", "--no-abstain"]
    for length in (1, 2, 30):
        assert main([*base, "--top-k", "20", "--max-answer-length", str(length)]) == 0
        answers = json.loads(capsys.readouterr().out)["answers"]
        longest = max(len(a["answer"].split()) for a in answers)
        assert longest <= length if length < 30 else longest > 2
    assert main([*base, "--top-k", "5", "--n-best", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["answers"]) == 2


def test_ask_context_file_and_abstention(tiny_bert_dir, tmp_path, capsys):
    f = tmp_path / "ctx.txt"
    f.write_text("Paris is the capital of France.", encoding="utf-8")
    rc = main(["ask", "--model", str(tiny_bert_dir), "--device", "cpu", "-q", "What?", "--context-file", str(f), "--threshold=-1e9"])
    assert rc == 0
    assert "no answer in this passage" in capsys.readouterr().out


def test_predict_then_evaluate_matches_metrics(tiny_bert_dir, tiny_squad_file, tmp_path, capsys):
    preds, odds = tmp_path / "preds.json", tmp_path / "odds.json"
    rc = main(["predict", "--model", str(tiny_bert_dir), "--device", "cpu", "--data", str(tiny_squad_file), "--out", str(preds), "--null-odds", str(odds)])
    assert rc == 0
    p, o = json.loads(preds.read_text()), json.loads(odds.read_text())
    assert set(p) == set(o) == {f"q{i}" for i in range(1, 8)}
    capsys.readouterr()
    rc = main(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(preds), "--null-odds", str(odds)])
    assert rc == 0
    scores = json.loads(capsys.readouterr().out)
    expected = squad_v2_eval(squad_dict()["data"], p, na_probs=o, na_prob_thresh=1.0)
    assert scores == pytest.approx(dict(expected))
    assert list(scores)[:9] == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total"]


def test_evaluate_model_saves_calibrated_threshold(tmp_path, tiny_bert_dir, tiny_squad_file, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    out = tmp_path / "scores.json"
    rc = main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file), "--save-threshold", "--out", str(out)])
    assert rc == 0
    scores = json.loads(out.read_text())
    meta = read_meta(model)
    assert meta["threshold"] == scores["best_f1_thresh"]
    assert (meta["calibration"]["n_best"], meta["calibration"]["max_answer_length"]) == (20, 30)
    assert "HasAns" in capsys.readouterr().out
    # re-running at the stored threshold gives the best F1 as plain F1
    rc = main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file), "--out", str(out)])
    rescored = json.loads(out.read_text())
    assert rescored["threshold"] == meta["threshold"]
    assert rescored["f1"] == pytest.approx(scores["best_f1"])


def _bad_files(tmp_path):
    cases = {}

    def make(name, fn):
        d = squad_dict()
        fn(d)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d), encoding="utf-8")
        cases[name] = p

    qa = lambda d, a, q: d["data"][a]["paragraphs"][0]["qas"][q]  # noqa: E731
    make("mismatch", lambda d: qa(d, 0, 0).__setitem__("answers", [{"text": "Italy", "answer_start": 5}]))
    make("duplicate", lambda d: qa(d, 1, 1).__setitem__("id", "q2"))
    make("empty_question", lambda d: qa(d, 0, 0).__setitem__("question", ""))
    make("empty_context", lambda d: d["data"][0]["paragraphs"][0].__setitem__("context", " "))
    make("impossible_with_answer", lambda d: qa(d, 1, 2).__setitem__("answers", [{"text": "Paris", "answer_start": 0}]))
    make("missing_field", lambda d: qa(d, 0, 1).pop("question"))
    bad = tmp_path / "invalid.json"
    bad.write_text("{not json", encoding="utf-8")
    cases["invalid_json"] = bad
    return cases


PREDICT_REFUSES = ("duplicate", "missing_field", "invalid_json")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_input_exits_2_with_one_line(command, tmp_path, tiny_bert_dir, capsys):
    for name, path in _bad_files(tmp_path).items():
        if command == "predict" and name not in PREDICT_REFUSES:
            continue  # predict reads no gold answers and abstains on empty texts (tests/cli/test_cli_data.py)
        out = tmp_path / "preds.json"
        out.write_text('{"keep": "me"}')
        if command == "predict":
            argv = ["predict", "--model", str(tiny_bert_dir), "--data", str(path), "--out", str(out)]
        else:
            argv = ["evaluate", "--data", str(path), "--predictions", str(out), "--offsets", "strict"]
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2, name
        assert len(err.splitlines()) == 1, (name, err)
        assert str(path) in err and "Traceback" not in err
        assert out.read_text() == '{"keep": "me"}'  # nothing already written is lost


def test_cli_subprocess_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run(
        [sys.executable, "-m", "pocketqa", "evaluate", "--data", str(tmp_path / "missing.json"), "--predictions", "x.json"],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 2
    assert "no such file" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "pocketqa", "ask", "--bogus"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_predictions_file_errors(tmp_path, tiny_squad_file, capsys):
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"q1": "France", "zzz": "x"}))
    assert main(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(preds)]) == 2
    assert "'zzz'" in capsys.readouterr().err
    preds.write_text(json.dumps({"q1": 3}))
    assert main(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(preds)]) == 2
    assert "'q1'" in capsys.readouterr().err


# -- user mistakes found by an audit: one line, exit 2, nothing written is lost -----------


def _fail(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
        (["--threads", "-2"], "--threads: must be >= 1"),
        (["--threshold", "nan"], "--threshold: must be a finite number"),
        (["--device", "gpu"], "--device: expected cpu, cuda"),
        (["--n-best", "0"], "--n-best: must be >= 1"),
        (["--max-answer-length", "-1"], "--max-answer-length: must be >= 1"),
    ],
)
def test_bad_flag_values_are_refused_by_the_parser(tiny_bert_dir, flags, needle, capsys):
    with pytest.raises(SystemExit) as done:
        main(["ask", "--model", str(tiny_bert_dir), "-q", "What?", "-c", "Paris.", *flags])
    assert done.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_one_line(tiny_bert_dir, capsys):
    _fail(["ask", "--model", str(tiny_bert_dir), "--device", "cuda", "-q", "What?", "-c", "Paris."], capsys,
          "CUDA is not available")


def test_outputs_that_would_destroy_inputs_or_land_nowhere(tiny_bert_dir, tiny_squad_file, tmp_path, capsys):
    data = tiny_squad_file.read_bytes()
    model = ["--model", str(tiny_bert_dir), "--device", "cpu"]
    _fail(["predict", *model, "--data", str(tiny_squad_file), "--out", str(tiny_squad_file)], capsys, "same file as --data")
    _fail(["predict", *model, "--data", str(tiny_squad_file), "--out", str(tmp_path)], capsys, "is a directory")
    _fail(["predict", *model, "--data", str(tiny_squad_file), "--out", str(tmp_path / "p.json"),
           "--null-odds", str(tmp_path)], capsys, "--null-odds", "is a directory")
    _fail(["predict", *model, "--data", str(tiny_squad_file), "--out", str(tiny_squad_file / "p.json")], capsys,
          "parent directory")
    assert tiny_squad_file.read_bytes() == data and not (tmp_path / "p.json").exists()
    # A file with no questions does not replace earlier predictions with {}.
    empty, out = tmp_path / "empty.json", tmp_path / "old.json"
    empty.write_text('{"version": "v2.0", "data": []}', encoding="utf-8")
    out.write_text('{"q1": "kept"}', encoding="utf-8")
    _fail(["predict", *model, "--data", str(empty), "--out", str(out)], capsys, str(empty), "no questions")
    _fail(["evaluate", *model, "--data", str(empty)], capsys, "no questions")
    assert out.read_text(encoding="utf-8") == '{"q1": "kept"}'


def test_evaluate_never_calibrates_the_bundled_model_implicitly(tiny_squad_file, capsys):
    from pocketqa.models import default_model_path

    before = (default_model_path() / "pocketqa.json").read_bytes()
    _fail(["evaluate", "--data", str(tiny_squad_file), "--save-threshold"], capsys, "needs an explicit --model")
    assert (default_model_path() / "pocketqa.json").read_bytes() == before


def test_model_writers_refuse_a_non_empty_out_dir(tiny_bert_dir, tiny_squad_file, tmp_path, capsys):
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "pocketqa.json").write_text('{"threshold": -1.5}', encoding="utf-8")
    _fail(["mlm-head", "--encoder", str(tiny_bert_dir), "--data", str(tiny_squad_file), "--out", str(other)], capsys,
          "not empty", "--overwrite")
    _fail(["export", "--model", str(tiny_bert_dir), "--out", str(other)], capsys, "not empty", "--overwrite")
    assert [p.name for p in other.iterdir()] == ["pocketqa.json"]
    assert (other / "pocketqa.json").read_text(encoding="utf-8") == '{"threshold": -1.5}'


def test_broken_model_dirs_and_files_name_what_is_wrong(tiny_bert_dir, tiny_squad_file, tmp_path, capsys):
    import shutil

    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_bert_dir, no_tok)
    for f in no_tok.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    _fail(["ask", "--model", str(no_tok), "-q", "What?", "-c", "Paris."], capsys, str(no_tok), "no tokenizer files")
    (tmp_path / "empty-model").mkdir()
    _fail(["ask", "--model", str(tmp_path / "empty-model"), "-q", "What?", "-c", "Paris."], capsys, "empty-model")
    typo = tmp_path / "typo"
    shutil.copytree(tiny_bert_dir, typo)
    (typo / "pocketqa.json").write_text('{"window": {"max_seq_lenght": 384}}', encoding="utf-8")
    _fail(["ask", "--model", str(typo), "-q", "What?", "-c", "Paris."], capsys, "pocketqa.json", "max_seq_lenght")
    (typo / "pocketqa.json").write_text('{"threshold": "high"}', encoding="utf-8")
    _fail(["ask", "--model", str(typo), "-q", "What?", "-c", "Paris."], capsys, "pocketqa.json", "threshold")
    # string null odds: the message names the expected types
    preds, odds = tmp_path / "p.json", tmp_path / "o.json"
    ids = [q["id"] for a in squad_dict()["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds.write_text(json.dumps({i: "" for i in ids}), encoding="utf-8")
    odds.write_text(json.dumps({i: "x" for i in ids}), encoding="utf-8")
    _fail(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(preds), "--null-odds", str(odds)], capsys,
          str(odds), "int or float")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"learning_rate: \xff\xfe\n")
    _fail(["train", "--recipe", str(recipe)], capsys, str(recipe), "not UTF-8")
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("  \n", encoding="utf-8")
    _fail(["ask", "--model", str(tiny_bert_dir), "-q", "What?", "--context-file", str(ctx)], capsys, str(ctx), "empty")


def test_lone_surrogates_are_named_not_passed_to_the_tokenizer(tiny_bert_dir, tmp_path, capsys):
    _fail(["ask", "--model", str(tiny_bert_dir), "-q", "Who\udcff?", "-c", "Paris."], capsys, "question 0", "surrogate")
    data = squad_dict()
    data["data"][0]["paragraphs"][0]["qas"][0]["question"] = "Who\ud800?"
    qid = data["data"][0]["paragraphs"][0]["qas"][0]["id"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # json escapes it as \ud800
    _fail(["predict", "--model", str(tiny_bert_dir), "--data", str(path), "--out", str(tmp_path / "p.json")], capsys,
          str(path), qid, "'question'", "surrogate")


def test_port_and_teacher_out_are_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["serve", "--port", "99999"])
    assert done.value.code == 2 and "--port: must be 0-65535" in capsys.readouterr().err
    taken = tmp_path / "teacher.json"
    taken.write_text("{}", encoding="utf-8")
    _fail(["assemble-teacher", "--out", str(taken)], capsys, str(taken), "is a file")
    assert taken.read_text(encoding="utf-8") == "{}"


def test_an_unwritable_path_is_one_line(tiny_bert_dir, tiny_squad_file, tmp_path, monkeypatch, capsys):
    import pocketqa.data.squad

    def refuse(obj, path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pocketqa.data.squad, "write_json_atomic", refuse)
    out = tmp_path / "p.json"
    argv = ["predict", "--model", str(tiny_bert_dir), "--device", "cpu", "--data", str(tiny_squad_file), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err  # the progress bar's lines, then the error as the last line
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"pocketqa predict: error: [Errno 13] Permission denied: '{out}'"


def test_a_failed_stream_move_leaves_no_temp_file(tmp_path):
    from pocketqa.augment.runner import SquadStreamWriter

    target = tmp_path / "aug.json"
    target.mkdir()  # os.replace of a file onto a directory fails
    writer = SquadStreamWriter(target)
    with pytest.raises(OSError):
        writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["aug.json"]


def test_api_refuses_bad_batch_size_threads_and_device(tiny_bert_dir):
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.errors import PocketQAError

    for kwargs, needle in (({"batch_size": 0}, "batch_size"), ({"threads": -1}, "threads"),
                           ({"device": "gpu"}, "device 'gpu'")):
        with pytest.raises(PocketQAError, match=needle):
            QuestionAnswerer.from_pretrained(tiny_bert_dir, **kwargs)
    with pytest.raises(PocketQAError, match="max_answer_length must be"):  # before looking for the model
        QuestionAnswerer.from_pretrained("/no/such/model", max_answer_length=0)


def test_cli_evaluate_predictions_matching_no_question_exit_2(tmp_path, tiny_squad_file, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("{}", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_line_exit_2(["evaluate", "--data", str(tiny_squad_file), "--predictions", str(empty)], capsys,
                         "No question")


def test_version_flag_prints_the_package_version(capsys):
    from pocketqa import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"pocketqa {__version__}"


@pytest.mark.parametrize("command, flags", [
    ("ask", ["--question", "--top-k", "--threshold"]),
    ("predict", ["--threshold", "--max-seq-length", "--doc-stride", "--max-query-length"]),
])
def test_every_answering_flag_has_help_text(command, flags):
    from pocketqa.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    helps = {opt: a.help for a in sub._actions for opt in a.option_strings}
    assert all(helps.get(flag) for flag in flags), {flag: helps.get(flag) for flag in flags}


def test_missing_predictions_warn_in_one_line(tmp_path, tiny_squad_file):
    from pocketqa.data.squad import load_squad

    ids = [ex.id for ex in load_squad(tiny_squad_file)]
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({qid: "" for qid in ids[1:]}))
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "pocketqa", "evaluate", "--data", str(tiny_squad_file),
                        "--predictions", str(preds)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    # Python's default warning display is two lines with a source path ("metrics.py:247: UserWarning: ...").
    assert r.stderr.strip().splitlines() == [
        f"pocketqa evaluate: warning: Missing prediction for 1 question(s), skipped: {ids[0]}"]

"""ONNX export, int8, the ONNX Runtime backend and the parity check, on tiny models."""

import json
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from helpers import WORDS, build_bert, build_tokenizer  # noqa: E402

from pocketqa.inference.answerer import QuestionAnswerer  # noqa: E402
from pocketqa.inference.backends import TorchBackend  # noqa: E402
from pocketqa.cli.main import main  # noqa: E402
from pocketqa.errors import PocketQAError  # noqa: E402
from pocketqa.export.exporter import EXPORT_FILE, FP32_FILE, export_model, qa_head_nodes  # noqa: E402
from pocketqa.export.parity import FP32_TOLERANCE, check_parity, compare_answerers  # noqa: E402
from pocketqa.inference.onnx_backend import MODEL_FILE, OnnxBackend, open_session  # noqa: E402
from pocketqa.data.features import WindowConfig, make_features  # noqa: E402
from pocketqa.data.model_inputs import pad_batch  # noqa: E402
from pocketqa.models import load_qa_model  # noqa: E402
from pocketqa.data.squad import Answer, Example, load_squad  # noqa: E402

MODELS = ["tiny_bert_dir", "tiny_mobilebert_dir"]


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory):
    """Exports each tiny model once per module: {(fixture name, int8): out dir}."""
    cache = {}

    def get(name: str, int8: bool = False):
        if (name, int8) not in cache:
            out = tmp_path_factory.mktemp(f"{name}_{'int8' if int8 else 'fp32'}")
            export_model(request.getfixturevalue(name), out, int8=int8)
            cache[name, int8] = out
        return cache[name, int8]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_fp32_export_gives_pytorch_answers_and_logits(name, request, exported, tiny_squad_file):
    torch_dir, onnx_dir = request.getfixturevalue(name), exported(name)
    examples = load_squad(tiny_squad_file)
    onnx_qa = QuestionAnswerer.from_pretrained(onnx_dir)
    torch_qa = QuestionAnswerer.from_pretrained(torch_dir, device="cpu")
    assert isinstance(onnx_qa.backend, OnnxBackend)
    (onnx_preds, onnx_odds), (torch_preds, torch_odds) = onnx_qa.predict(examples), torch_qa.predict(examples)
    assert onnx_preds == torch_preds
    assert onnx_odds == pytest.approx(torch_odds, abs=1e-4)
    result = check_parity(torch_dir, onnx_dir, examples)
    assert result["max_abs_diff"] < FP32_TOLERANCE
    assert result["answers_identical"] == 1.0 and result["passed_fp32"]
    assert result["examples"] == len(examples)


@pytest.mark.parametrize("name", MODELS)
def test_export_dir_layout_and_report(name, exported):
    out = exported(name)
    assert {"model.onnx", "config.json", "pocketqa.json", EXPORT_FILE, "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob(".*.onnx")), "temporary graphs must be cleaned up"
    report = json.loads((out / EXPORT_FILE).read_text())
    assert report["exporter"] == "torchscript" and report["int8"] is False
    assert report["output_names"] == ["start_logits", "end_logits"]
    assert sorted(report["input_names"]) == ["attention_mask", "input_ids", "token_type_ids"]
    assert report["sizes_mb"]["fp32_onnx"] == pytest.approx((out / MODEL_FILE).stat().st_size / 1e6, abs=1e-3)
    assert report["parity"]["fp32"]["passed"] is True
    assert json.loads((out / "pocketqa.json").read_text())["export"]["format"] == "onnx"


def test_bert_graph_is_fused_and_mobilebert_is_skipped(exported):
    bert = json.loads((exported("tiny_bert_dir") / EXPORT_FILE).read_text())["optimization"]
    mobile = json.loads((exported("tiny_mobilebert_dir") / EXPORT_FILE).read_text())["optimization"]
    assert bert["applied"] and bert["fused"].get("Attention") == 2  # one per layer
    assert not mobile["applied"] and "mobilebert" in mobile["reason"]


def test_residual_adds_stay_out_of_skip_layer_norm(exported):
    """SkipLayerNormalization is slower than Add + LayerNormalization on the CPU (SLOW_CPU_FUSIONS)."""
    import onnx

    out = exported("tiny_bert_dir")
    ops = [n.op_type for n in onnx.load(str(out / MODEL_FILE)).graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 4  # two per layer
    # ONNX Runtime fuses them again while building a session unless told not to.
    optimized = out.parent / f"{out.name}-as-run.onnx"
    open_session(out / MODEL_FILE, save_optimized=optimized)
    assert "SkipLayerNormalization" not in {n.op_type for n in onnx.load(str(optimized)).graph.node}


def test_no_optimize_keeps_plain_graph(tiny_bert_dir, tmp_path):
    import onnx

    report = export_model(tiny_bert_dir, tmp_path / "plain", optimize=False)
    assert report["optimization"]["applied"] is False
    ops = {n.op_type for n in onnx.load(str(tmp_path / "plain" / MODEL_FILE)).graph.node}
    assert "Attention" not in ops and "MatMul" in ops


@pytest.mark.parametrize("name", MODELS)
def test_int8_export_answers(name, exported, tiny_squad_file):
    out = exported(name, int8=True)
    assert not (out / FP32_FILE).exists()  # one graph per directory unless --keep-fp32
    examples = load_squad(tiny_squad_file)
    preds, odds = QuestionAnswerer.from_pretrained(out).predict(examples)
    assert set(preds) == {ex.id for ex in examples}
    assert all(np.isfinite(v) for v in odds.values())
    report = json.loads((out / EXPORT_FILE).read_text())
    assert report["int8"] is True and report["quantization"]["weight_type"] == "int8"
    assert 0.0 <= report["parity"]["int8"]["answers_identical"] <= 1.0
    assert report["parity"]["int8"]["max_abs_diff"] > 0  # really a different (quantized) graph


@pytest.mark.parametrize("name", MODELS)
def test_int8_answers_do_not_depend_on_the_batch(name, exported, tiny_squad_file):
    # Dynamic int8 takes one activation scale per call over all rows and padding: batched,
    # a window's logits (and so answers and null odds) changed with its neighbours.
    examples = load_squad(tiny_squad_file)
    int8 = QuestionAnswerer.from_pretrained(exported(name, int8=True), batch_size=64)
    fp32 = QuestionAnswerer.from_pretrained(exported(name), batch_size=64)
    assert not int8.backend.batch_invariant and fp32.backend.batch_invariant
    features = make_features(examples, int8.tokenizer, int8.window)
    assert len(set(features.lengths.tolist())) > 1  # batched, these windows would be padded
    batched = int8.logits(features)
    alone = [int8.logits(make_features([ex], int8.tokenizer, int8.window)) for ex in examples]
    flat = [(s, e) for starts, ends in alone for s, e in zip(starts, ends)]
    assert all(np.array_equal(s, a) and np.array_equal(e, b) for s, e, (a, b) in zip(*batched, flat))


def test_int8_graph_is_smaller_and_keep_fp32(tiny_tokenizer, tmp_path):
    import onnx

    src = tmp_path / "wider"
    build_bert(len(tiny_tokenizer), hidden=128, heads=4).save_pretrained(src)  # enough weights for sizes to tell
    tiny_tokenizer.save_pretrained(src)
    report = export_model(src, tmp_path / "int8", int8=True, keep_fp32=True)
    fp32, int8 = tmp_path / "int8" / FP32_FILE, tmp_path / "int8" / MODEL_FILE
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    assert report["sizes_mb"]["int8_onnx"] < 0.5 * report["sizes_mb"]["fp32_onnx"]
    assert any(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger", "QAttention")
               for n in onnx.load(str(int8)).graph.node)
    head = qa_head_nodes(fp32)
    assert head and report["quantization"]["nodes_to_exclude"] == head
    assert [n.op_type for n in onnx.load(str(int8)).graph.node if n.name == head[0]] == ["MatMul"]  # fp32 head
    # the loader takes model.onnx (int8) even with model_fp32.onnx beside it
    assert OnnxBackend.from_dir(tmp_path / "int8").path.name == MODEL_FILE


def test_dynamic_axes_batch_of_three_windows_of_different_length(tiny_bert_dir, exported, tiny_tokenizer):
    ctx = "Paris is the capital and most populous city of France, known for finance, fashion and science."
    examples = [
        Example(id="a", title="", context=ctx, question="What is the capital?"),
        Example(id="b", title="", context="Rome is in Italy.", question="Where?"),
        Example(id="c", title="", context=ctx * 3, question="Which city is known for fashion and science in France?"),
    ]
    feats = make_features(examples, tiny_tokenizer, WindowConfig(max_seq_length=96, doc_stride=16, max_query_length=24))
    lengths = sorted({len(ids) for ids in feats.input_ids})
    assert len(lengths) >= 3 and len(feats) >= 3
    torch_backend = TorchBackend(load_qa_model(str(tiny_bert_dir)))
    backend = OnnxBackend.from_dir(exported("tiny_bert_dir"))
    rows = [int(np.argmin([len(i) for i in feats.input_ids])), int(np.argmax([len(i) for i in feats.input_ids]))]
    rows.append(next(i for i in range(len(feats)) if len(feats.input_ids[i]) not in (lengths[0], lengths[-1])))
    for idx in (rows, rows[:1]):  # a padded batch of 3, then a batch of 1
        batch = pad_batch(feats, idx, tiny_tokenizer.pad_token_id, backend.input_names)
        start, end = backend(batch)
        ref_start, ref_end = torch_backend(batch)
        assert start.shape == end.shape == batch["input_ids"].shape and start.dtype == np.float32
        real = batch["attention_mask"].astype(bool)
        assert np.abs(start - ref_start)[real].max() < FP32_TOLERANCE
        assert np.abs(end - ref_end)[real].max() < FP32_TOLERANCE


def test_parity_detects_a_different_model(tiny_tokenizer, exported, tmp_path):
    other = tmp_path / "other"
    build_bert(len(tiny_tokenizer), seed=1).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    result = check_parity(other, exported("tiny_bert_dir"))  # built-in sample questions
    assert result["max_abs_diff"] > FP32_TOLERANCE and not result["passed_fp32"]


def test_compare_answerers_counts_changed_answers(tiny_bert_dir):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", threshold=1e9)  # never abstains

    class Shifted:
        input_names = qa.backend.input_names

        def __call__(self, batch):
            s, e = qa.backend(batch)
            s = s.copy()
            s[:, -2] += 100.0  # moves every best start to the second-last token
            return s, e

    other = qa.with_backend(Shifted())
    examples = [Example(id="x", title="", context="Paris is the capital of France.", question="What is the capital?")]
    result = compare_answerers(qa, {"shifted": other}, examples)["shifted"]
    assert result["max_abs_diff"] >= 99.0
    assert result["answers_identical"] == 0.0 and result["differing_ids"] == ["x"] and result["n_differing"] == 1


class WordPieceSpan:
    """A backend whose best span is always "The Norm": the first context token to the first "norm" piece."""

    input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def __init__(self, norm_id: int):
        self.norm_id = norm_id

    def __call__(self, batch):
        ids, context = batch["input_ids"], batch["token_type_ids"] == 1
        starts, ends = np.full(ids.shape, -20.0, np.float32), np.full(ids.shape, -20.0, np.float32)
        for row in range(len(ids)):
            starts[row, np.argmax(context[row])] = 5.0
            ends[row, np.argmax(context[row] & (ids[row] == self.norm_id))] = 5.0
        return starts, ends


def test_parity_decodes_with_the_answerers_own_settings():
    # "normans" is norm + ##ans here, so the span ends inside a word; only align_to_words
    # widens it to the gold answer. Parity used to decode with the default settings.
    tokenizer = build_tokenizer([w for w in WORDS if w not in ("normans", "normandy")] + ["norm", "##ans", "##andy"])
    context = "The Normans came to Normandy, led by Rollo."
    examples = [Example(id="n", title="", context=context, question="Who came?", answers=(Answer("The Normans", 0),))]
    backend = WordPieceSpan(tokenizer.convert_tokens_to_ids("norm"))
    qa = QuestionAnswerer(backend, tokenizer, threshold=1e9, scoring="pipeline", align_to_words=True)
    assert qa.decode_examples(examples)[0].answer(qa.threshold) == "The Normans"
    result = compare_answerers(qa, {"same": qa.with_backend(WordPieceSpan(backend.norm_id))}, examples)["same"]
    assert result["reference"]["exact"] == result["candidate"]["exact"] == 100.0
    assert result["max_abs_diff"] == 0.0 and result["answers_identical"] == 1.0


def test_compare_answerers_refuses_answerers_that_decode_differently(tiny_bert_dir):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", scoring="pipeline", align_to_words=True)
    plain = QuestionAnswerer(qa.backend, qa.tokenizer, window=qa.window, scoring="pipeline", n_best=5)
    examples = [Example(id="x", title="", context="Paris is the capital of France.", question="What is the capital?")]
    with pytest.raises(PocketQAError, match=r"backend only: candidate 'plain' has align_to_words=False.*n_best=5"):
        compare_answerers(qa, {"plain": plain}, examples)


def test_export_that_fails_parity_raises_and_records_it(tiny_bert_dir, tmp_path, monkeypatch):
    import pocketqa.export.parity as parity

    monkeypatch.setattr(parity, "FP32_TOLERANCE", -1.0)  # no graph can pass: exercises the failure path
    with pytest.raises(PocketQAError, match="fp32 graph does not match PyTorch"):
        export_model(tiny_bert_dir, tmp_path / "bad", int8=True)
    report = json.loads((tmp_path / "bad" / EXPORT_FILE).read_text())
    assert report["parity"]["fp32"]["passed"] is False
    assert (tmp_path / "bad" / FP32_FILE).exists()  # kept for inspection


def _garbage_copy(src, dst):
    shutil.copytree(src, dst)
    (dst / MODEL_FILE).write_bytes(b"\x08\x07not an onnx graph\xff" * 50)
    return dst


def test_corrupt_onnx_gives_clear_error(exported, tmp_path, capsys):
    broken = _garbage_copy(exported("tiny_bert_dir"), tmp_path / "broken")
    with pytest.raises(PocketQAError, match=r"model\.onnx: not a loadable ONNX model"):
        QuestionAnswerer.from_pretrained(broken)
    rc = main(["ask", "--model", str(broken), "-q", "Who?", "-c", "Ann wrote it."])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(broken / MODEL_FILE) in err and "Traceback" not in err


def test_missing_onnx_gives_clear_error(exported, tmp_path, capsys):
    with pytest.raises(PocketQAError, match="no such ONNX file"):
        OnnxBackend.from_file(tmp_path / "nowhere.onnx")
    two = tmp_path / "two"
    shutil.copytree(exported("tiny_bert_dir"), two)
    (two / MODEL_FILE).rename(two / "a.onnx")
    shutil.copy(two / "a.onnx", two / "b.onnx")
    with pytest.raises(PocketQAError, match=r"no model\.onnx \(other \.onnx files: a\.onnx, b\.onnx\)"):
        OnnxBackend.from_dir(two)
    rc = main(["predict", "--model", str(two), "--data", str(two / "missing.json"), "--out", str(tmp_path / "p.json")])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'pocketqa\[onnx\]'"):
        OnnxBackend.from_file(tmp_path / "model.onnx")


def test_export_rejects_bad_arguments(tiny_bert_dir, exported, tmp_path):
    with pytest.raises(PocketQAError, match="--opset must be between 11"):
        export_model(tiny_bert_dir, tmp_path / "x", opset=7)
    with pytest.raises(PocketQAError, match="already an ONNX export"):
        export_model(exported("tiny_bert_dir"), tmp_path / "y")
    with pytest.raises(PocketQAError, match="is the model directory"):
        export_model(tiny_bert_dir, tiny_bert_dir)
    with pytest.raises(PocketQAError, match="opset must be .*; --keep-fp32 needs --int8"):  # all problems at once
        export_model(tiny_bert_dir, tmp_path / "z", opset=99, keep_fp32=True)


def test_cli_export_check_then_predict_and_evaluate(tiny_mobilebert_dir, tiny_squad_file, tmp_path, capsys):
    out = tmp_path / "onnx"
    rc = main(["export", "--model", str(tiny_mobilebert_dir), "--out", str(out), "--int8", "--keep-fp32",
               "--check", str(tiny_squad_file), "--check-limit", "5"])
    printed = capsys.readouterr().out
    assert rc == 0 and "-> PASS" in printed and "parity int8 on 5 questions" in printed
    report = json.loads((out / EXPORT_FILE).read_text())
    assert report["check_data_examples"] == 5 and report["parity"]["fp32"]["examples"] == 5
    preds = tmp_path / "preds.json"
    assert main(["predict", "--model", str(out), "--data", str(tiny_squad_file), "--out", str(preds)]) == 0
    assert len(json.loads(preds.read_text())) == 7
    assert main(["evaluate", "--model", str(out), "--data", str(tiny_squad_file)]) == 0
    assert '"best_f1"' in capsys.readouterr().out


def test_cli_export_missing_model_exits_2(tmp_path, capsys):
    rc = main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope" in err


@pytest.mark.parametrize("meta, message", [
    ({"window": {"stride": 8}}, r"pocketqa.json: unknown window setting\(s\) \['stride'\]"),
    ({"threshold": "high"}, r"pocketqa.json: threshold must be a finite number, found 'high'"),
])
def test_export_checks_the_model_settings_as_loading_does(tiny_bert_dir, tmp_path, meta, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    (model / "pocketqa.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PocketQAError, match=message):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()

"""TinyBERT two-stage distillation on tiny models: checks, students, stage 1, stage 2, cache, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import WORDS, CountingTeacher, build_bert, build_tokenizer, bad_squad_file, poison_after_each_step, squad_dict

from pocketqa.cli.main import main
from pocketqa.config import from_dict
from pocketqa.models import build_student, load_projection, pick_layers
from pocketqa.recipes.configs import DistillConfig
from pocketqa.data.cache import load_data
from pocketqa.recipes.distill import distill, distill_intermediate
from pocketqa.training.attention import QueryKeyTap
from pocketqa.training.layer_map import parse_layer_map, uniform_layer_map
from pocketqa.training.pairing import check_pair
from pocketqa.training.teacher_cache import answer_mask
from pocketqa.recipes.distill import distill_prediction
from pocketqa.training.teacher_cache import TeacherLogits
from pocketqa.data.batching import batch_order, collate, epoch_seed
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import load_squad
from pocketqa.training.losses import span_loss

WINDOW = dict(max_seq_length=48, doc_stride=16, max_query_length=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def _config(tmp_path, teacher_dir, train_file, **overrides) -> DistillConfig:
    values = dict(
        teacher=str(teacher_dir), out=str(tmp_path / "out"), train=[str(train_file)], hidden=16, heads=2,
        intermediate=32, student_layers=2, batch_size=4, stage1_epochs=4, stage2_epochs=4,
        stage1_learning_rate=1e-3, stage2_learning_rate=1e-3, warmup=0.1, cache_dir=str(tmp_path / "cache"),
        log_steps=1, **WINDOW,
    )
    values.update(overrides)
    return DistillConfig(**values)


# -- layer maps, checks, config ----------------------------------------------------------


def test_layer_maps_and_picked_layers():
    assert uniform_layer_map(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert uniform_layer_map(4, 12) == [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    assert pick_layers(6, 3) == [1, 3, 5]  # 0-based: the uniform map's targets
    assert pick_layers(12, 4) == [2, 5, 8, 11]
    assert parse_layer_map("0:0, 1:3,2:5") == [(0, 0), (1, 3), (2, 5)]
    with pytest.raises(ConfigError, match="student:teacher pairs"):
        parse_layer_map("0-0,1:2")


def test_check_pair_reports_tokenizer_layer_and_head_problems_at_once(tok):
    teacher = build_bert(len(tok), layers=4, hidden=32, heads=2)
    other_tok = build_tokenizer(WORDS[:-5] + ["zebra", "quux"])
    student = build_bert(len(other_tok), layers=3, hidden=16, heads=4)
    with pytest.raises(ConfigError) as err:
        check_pair(teacher.config, student.config, tok, other_tok, teacher_model=teacher, student_model=student)
    message = str(err.value)
    assert "tokenizers differ" in message
    assert "4 layers and student 3" in message and "--layer-map" in message
    assert "2 attention heads and student 4" in message and "--no-attention-loss" in message
    assert "\n" not in message
    # Without the attention loss and with an explicit map only the tokenizer is wrong.
    with pytest.raises(ConfigError) as err:
        check_pair(teacher.config, student.config, tok, other_tok, layer_map="0:0,1:1,2:3,3:4", attention_loss=False)
    assert "tokenizers differ" in str(err.value) and "heads" not in str(err.value)
    pairs = check_pair(teacher.config, student.config, tok, tok, layer_map="0:0,1:1,2:3,3:4", attention_loss=False)
    assert pairs == [(0, 0), (1, 1), (2, 3), (3, 4)]


def test_check_pair_rejects_out_of_range_layer_map(tok):
    teacher, student = build_bert(len(tok), layers=4), build_bert(len(tok), layers=2)
    with pytest.raises(ConfigError, match="out of range"):
        check_pair(teacher.config, student.config, tok, tok, layer_map="0:0,1:2,2:9")


def test_config_errors_are_reported_together():
    with pytest.raises(ConfigError) as err:
        DistillConfig(teacher="t", out="o", train=["x"], stage="3", temperature=0, kd_weight=1.5, batch_size="many")
    message = str(err.value)
    for fragment in ("stage must be one of", "temperature must be > 0", "kd_weight must be in [0, 1]", "batch_size must be an integer"):
        assert fragment in message
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        from_dict(DistillConfig, {"teacher": "t", "out": "o", "train": ["x"], "temprature": 2})
    # An unknown key does not hide the bad values (train's recipes report both at once too).
    with pytest.raises(ConfigError) as err:
        from_dict(DistillConfig, {"teacher": "t", "out": "o", "train": ["x"], "kd_wieght": 0.5, "temperature": -1})
    assert "did you mean 'kd_weight'" in str(err.value) and "temperature must be > 0" in str(err.value)
    # warmup >= 1 counts steps, as in train: 1.5 must not silently become 1.
    with pytest.raises(ConfigError, match="warmup >= 1 counts steps and must be whole, found 1.5"):
        DistillConfig(teacher="t", out="o", train="x", warmup=1.5)
    assert DistillConfig(teacher="t", out="o", train="x", warmup=100).warmup == 100
    # YAML reads 5e-5 as a string; it must still be accepted as a number.
    assert DistillConfig(teacher="t", out="o", train="x", stage1_learning_rate="5e-5").stage1_learning_rate == 5e-5


def test_non_finite_numbers_and_mistyped_fields_are_config_problems():
    with pytest.raises(ConfigError) as err:
        from_dict(DistillConfig, {"teacher": "t", "out": "o", "train": ["x"], "max_grad_norm": float("nan"),
                          "stage2_learning_rate": float("inf"), "warmup": "nan", "temperature": float("-inf")})
    message = str(err.value)
    for name in ("max_grad_norm", "stage2_learning_rate", "warmup", "temperature"):
        assert f"{name} must be a finite number" in message
    assert "must be > 0" not in message  # one problem per bad value
    with pytest.raises(ConfigError) as err:
        from_dict(DistillConfig, {"teacher": 7, "out": "o", "train": 5, "stage1_train": ["a.json", 3], "dev": ["d.json"]})
    message = str(err.value)
    for fragment in ("train must be a file or a list of files, found 5", "stage1_train must be a file or a list of files",
                     "teacher must be a string, found 7", "dev must be a string, found ['d.json']"):
        assert fragment in message
    assert "train is required" not in message
    assert DistillConfig(teacher="t", out="o", train="x", stage1_train=None).stage1_train == []


# -- students ---------------------------------------------------------------------------


def test_build_student_copies_picked_layers(teacher_dir):
    student, info = build_student(str(teacher_dir), layers=2)
    teacher = build_bert(len(build_tokenizer()), seed=1, layers=4, hidden=32, heads=2)
    assert info["picked_layers"] == [1, 3] and student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate([1, 3]):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(new)], t[key.format(old)])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["qa_outputs.weight"], t["qa_outputs.weight"])
    fresh, info = build_student(str(teacher_dir), layers=2, hidden=16, heads=2, intermediate=32)
    assert fresh.config.hidden_size == 16 and fresh.config.num_hidden_layers == 2


def test_students_train_in_float32_when_checkpoints_hold_fp16(tok, teacher_dir, train_file, tmp_path):
    # transformers 5 loads a saved fp16 checkpoint (like the fp16 MiniLM base) as fp16; AdamW on
    # fp16 weights turned them nan in stage 2 within a few steps. Students must train in float32.
    base = tmp_path / "base-fp16"
    build_bert(len(tok), seed=3, layers=4, hidden=32, heads=2).half().save_pretrained(base)
    tok.save_pretrained(base)
    student, _ = build_student(str(base), layers=2)
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    student_dir = tmp_path / "student-fp16"
    student.half().save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    cfg = _config(
        tmp_path, teacher_dir, train_file, stage="2", student=str(student_dir), hidden=None, heads=None,
        intermediate=None, student_layers=None, stage2_epochs=3, stage2_learning_rate=1e-4,
    )
    summary = distill(cfg, progress=False)
    steps = [json.loads(line) for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    assert len(steps) == summary["stage2"]["steps"] >= 6 and all(np.isfinite(r["loss"]) for r in steps)
    from safetensors.torch import load_file

    weights = load_file(str(Path(cfg.out) / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


# -- stage 1 pieces ---------------------------------------------------------------------


def test_query_key_tap_matches_eager_attention_probabilities(tok):
    model = build_bert(len(tok), layers=2, hidden=32, heads=2, attn_implementation="eager")
    enc = tok(["who was the king of france", "paris"], padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    tap = QueryKeyTap(model, heads=2)
    with torch.no_grad():
        out = model.bert(**enc, output_attentions=True)
    try:
        for layer in (1, 2):
            probs = tap.attention(layer, mask, "probs")
            want = out.attentions[layer - 1]
            rows = mask[:, None, :, None].expand_as(probs)  # padded query rows are meaningless
            assert torch.allclose(probs[rows], want[rows], atol=1e-5)
            scores = tap.attention(layer, mask, "scores")
            assert torch.allclose(torch.softmax(scores.masked_fill(~mask[:, None, None, :], -1e9), -1)[rows], want[rows], atol=1e-5)
    finally:
        tap.close()


def test_answer_mask_is_context_plus_cls(tok, train_file, tmp_path):
    window = WindowConfig(**WINDOW)
    data = load_data([train_file], tok, window, tmp_path / "cache", progress=False)
    feats = make_features(load_squad(train_file), tok, window)
    mask = answer_mask(data, tok)
    assert len(feats) == len(data)
    for i in range(len(feats)):
        a = data.row_starts[i]
        want = np.array([o is not None for o in feats.offsets[i]])
        want[feats.cls_index[i]] = True
        assert np.array_equal(mask[a : a + data.lengths[i]], want), i
    # Question tokens really are excluded: every window has some.
    assert (~mask).sum() >= len(data) * 3


def test_stage2_kd_ignores_teacher_logits_at_question_and_padding(tok, train_file, tmp_path):
    from pocketqa.training.teacher_cache import gather_rows
    from pocketqa.training.losses import masked_kl_div

    data = load_data([train_file], tok, WindowConfig(**WINDOW), tmp_path / "cache", progress=False)
    mask = answer_mask(data, tok)
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=len(data.input_ids)).astype(np.float32)
    idx = np.arange(6)
    width = int(data.lengths[idx].max()) + 4  # some padding in every row
    valid = torch.from_numpy(gather_rows(mask, data, idx, width, False))
    student = torch.randn(len(idx), width)

    def kd(flat):
        return masked_kl_div(student, torch.from_numpy(gather_rows(flat, data, idx, width, 0.0)), valid).item()

    base = kd(teacher)
    moved = teacher.copy()
    moved[~mask] += 25.0  # every question and special token
    assert kd(moved) == pytest.approx(base, abs=1e-6)
    moved = teacher.copy()
    context = np.flatnonzero(mask[data.row_starts[0] : data.row_starts[0] + data.lengths[0]])
    moved[data.row_starts[0] + context[-1]] += 3.0  # one context token of window 0
    assert abs(kd(moved) - base) > 1e-4


def test_stage1_trains_the_projection_and_loss_falls(tok, teacher_dir, train_file, tmp_path):
    from pocketqa.models import load_qa_model

    window = WindowConfig(**WINDOW)
    data = load_data([train_file], tok, window, tmp_path / "cache", progress=False)
    teacher = load_qa_model(str(teacher_dir))
    student, _ = build_student(str(teacher_dir), layers=2, hidden=16, heads=2, intermediate=32)
    torch.manual_seed(0)
    projection = torch.nn.Linear(16, 32)
    before = projection.weight.detach().clone()
    losses = distill_intermediate(
        student, teacher, data, uniform_layer_map(2, 4), projection, "scores",
        epochs=6, learning_rate=2e-3, batch_size=8, warmup=0.1, progress=False,
    )
    assert not torch.equal(before, projection.weight.detach())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_stage1_runs_under_bf16_autocast_with_projection(tok, teacher_dir, train_file, tmp_path):
    from pocketqa.models import load_qa_model

    data = load_data([train_file], tok, WindowConfig(**WINDOW), tmp_path / "cache", progress=False)
    student, _ = build_student(str(teacher_dir), layers=2, hidden=16, heads=2, intermediate=32)
    losses = distill_intermediate(
        student, load_qa_model(str(teacher_dir)), data, uniform_layer_map(2, 4), torch.nn.Linear(16, 32),
        "probs", epochs=1, max_steps=2, batch_size=8, precision="bf16", progress=False,
    )
    assert len(losses) == 2 and all(np.isfinite(losses))


# -- end to end ---------------------------------------------------------------------------


def test_both_stages_end_to_end(tok, teacher_dir, train_file, tmp_path):
    from pocketqa.inference.answerer import QuestionAnswerer

    counter = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, train_file, dev=str(train_file), attention_target="probs")
    summary = distill(cfg, progress=False, load_teacher=counter)
    out = Path(cfg.out)
    for stage in ("stage1", "stage2"):
        assert summary[stage]["last_loss"] < 0.7 * summary[stage]["first_loss"], stage
    assert summary["stage1"]["projection"] and summary["stage1"]["layer_map"] == [[0, 0], [1, 2], [2, 4]]
    projection = load_projection(out / "stage1")
    assert projection is not None and projection.weight.shape == (32, 16)
    meta = json.loads((out / "pocketqa.json").read_text())
    assert meta["distill"]["stage2"]["teacher_cache"]["status"] == "miss"
    assert "threshold" in meta and "f1" in meta["metrics"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {1, 2}
    qa = QuestionAnswerer.from_pretrained(out, device="cpu")
    assert isinstance(qa("What is the capital of France?", squad_dict()["data"][1]["paragraphs"][0]["context"]), dict)


def test_second_run_hits_the_cache_and_never_calls_the_teacher(tok, teacher_dir, train_file, tmp_path):
    first = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, train_file, stage="2", stage2_epochs=1)
    assert distill(cfg, progress=False, load_teacher=first)["stage2"]["teacher_cache"]["status"] == "miss"
    assert first.loads == 1 and first.calls > 0
    second = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, train_file, stage="2", stage2_epochs=1, overwrite=True)
    summary = distill(cfg, progress=False, load_teacher=second)
    assert summary["stage2"]["teacher_cache"]["status"] == "hit"
    assert second.loads == 0 and second.calls == 0
    # A manifest that is JSON but not an object (a foreign file) is a miss, not an AttributeError.
    [manifest] = (Path(cfg.cache_dir) / "teacher-logits").glob("*/manifest.json")
    manifest.write_text("[]", encoding="utf-8")
    third = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, train_file, stage="2", stage2_epochs=1, overwrite=True)
    assert distill(cfg, progress=False, load_teacher=third)["stage2"]["teacher_cache"]["status"] == "miss"
    assert third.calls > 0


def test_stale_cache_is_detected_when_data_or_teacher_change(tok, teacher_dir, train_file, tmp_path):
    cfg = _config(tmp_path, teacher_dir, train_file, stage="2", max_steps=2)
    distill(cfg, progress=False, load_teacher=CountingTeacher())
    # Change the data: one more question.
    data = squad_dict()
    data["data"][1]["paragraphs"][0]["qas"].append(
        {"id": "extra", "question": "What is Paris?", "answers": [{"text": "the capital", "answer_start": 9}], "is_impossible": False}
    )
    train_file.write_text(json.dumps(data), encoding="utf-8")
    counter = CountingTeacher()
    summary = distill(_config(tmp_path, teacher_dir, train_file, stage="2", max_steps=2, overwrite=True), progress=False, load_teacher=counter)
    cache = summary["stage2"]["teacher_cache"]
    assert cache["status"] == "stale" and "data" in cache["reason"] and counter.calls > 0
    # Change the teacher's weights (same path and name).
    # (The key holds content, not names: a copy of the same teacher elsewhere would hit.)
    teacher2 = tmp_path / "teacher2"
    build_bert(len(tok), seed=3, layers=4, hidden=32, heads=2).save_pretrained(teacher2)
    tok.save_pretrained(teacher2)
    cfg = _config(tmp_path, teacher2, train_file, stage="2", max_steps=2, overwrite=True)
    distill(cfg, progress=False, load_teacher=CountingTeacher())
    build_bert(len(tok), seed=7, layers=4, hidden=32, heads=2).save_pretrained(teacher2)
    counter = CountingTeacher()
    summary = distill(cfg, progress=False, load_teacher=counter)
    cache = summary["stage2"]["teacher_cache"]
    assert cache["status"] == "stale" and "teacher" in cache["reason"] and counter.calls > 0


# -- bad input fails before anything is trained or lost ------------------------------------


def test_failed_overwrite_keeps_the_previous_run(teacher_dir, train_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous = {"pocketqa.json": "{}\n", "log.jsonl": '{"stage": 2}\n'}
    for name, text in previous.items():
        (out / name).write_text(text)
    with pytest.raises(PocketQAError, match="answer_start"):
        distill(_config(tmp_path, teacher_dir, bad_squad_file(tmp_path), overwrite=True), progress=False)
    assert {name: (out / name).read_text() for name in previous} == previous


def test_bad_teacher_or_dev_fails_up_front_without_an_out_dir(tok, teacher_dir, train_file, tmp_path):
    empty = tmp_path / "no-config"
    empty.mkdir()
    with pytest.raises(PocketQAError, match=f"cannot load a teacher from {str(empty)!r}"):
        distill(_config(tmp_path, empty, train_file), progress=False)
    counter = CountingTeacher()
    with pytest.raises(PocketQAError, match="answer_start"):
        distill(_config(tmp_path, teacher_dir, train_file, dev=str(bad_squad_file(tmp_path))), progress=False,
                load_teacher=counter)
    assert counter.loads == 0  # nothing trained
    with pytest.raises(PocketQAError, match="answer_start"):
        distill(_config(tmp_path, teacher_dir, bad_squad_file(tmp_path)), progress=False)
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_never_saved(teacher_dir, train_file, tmp_path, monkeypatch):
    import pocketqa.recipes.distill_stages as distill_mod

    poison_after_each_step(monkeypatch, distill_mod, float("nan"))
    cfg = _config(tmp_path, teacher_dir, train_file, stage="1", max_steps=1)
    with pytest.raises(PocketQAError, match=r"stage 1 .*qa_outputs\.weight"):
        distill(cfg, progress=False)
    assert not (Path(cfg.out) / "model.safetensors").exists()


# -- CLI ----------------------------------------------------------------------------------


def test_cli_distill_stage2_and_clear_errors(tok, teacher_dir, train_file, tmp_path, capsys):
    out = tmp_path / "cli-out"
    common = [
        "distill", "--teacher", str(teacher_dir), "--train", str(train_file), "--student-layers", "2",
        "--max-seq-length", "48", "--doc-stride", "16", "--max-query-length", "16", "--batch-size", "8",
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress",
    ]
    assert main([*common, "--out", str(out), "--stage", "2", "--max-steps", "2"]) == 0
    assert (out / "model.safetensors").is_file()
    capsys.readouterr()
    # 3 heads of 16 dims against a 2-head teacher, in a 3-layer student: two problems, one line.
    code = main([*common, "--out", str(tmp_path / "bad"), "--stage", "1", "--hidden", "18", "--heads", "3", "--student-layers", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "not a multiple of 3" in err and "--no-attention-loss" in err


def test_stage2_span_loss_leaves_padding_out(tmp_path, tiny_tokenizer, tiny_squad_file):
    # train's span loss masks padding out of the softmax; stage 2's hard loss did not, so
    # with kd_weight < 1 the loss depended on how far each length-grouped batch was padded.
    data = load_data([tiny_squad_file], tiny_tokenizer, WindowConfig(**WINDOW), tmp_path / "cache", progress=False)
    model = build_bert(len(tiny_tokenizer), seed=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    # A seed whose first batch holds windows of different lengths, so it is padded.
    seed = next(s for s in range(100) if len(set(data.lengths[batch_order(data.lengths, 4, epoch_seed(s, 0))[0]])) > 1)
    first = batch_order(data.lengths, 4, epoch_seed(seed, 0))[0]
    batch = {k: torch.from_numpy(v) for k, v in collate(data, first, tiny_tokenizer.pad_token_id, names).items()}
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**{k: batch[k] for k in names})
    args = (out.start_logits, out.end_logits, batch["start_positions"], batch["end_positions"])
    expected = span_loss(*args, mask=batch["attention_mask"]).item()
    assert span_loss(*args).item() != pytest.approx(expected, rel=1e-3)

    zeros = np.zeros(len(data.input_ids), dtype=np.float16)
    logits = TeacherLogits(zeros, zeros, tmp_path, "none", "hit")
    losses = distill_prediction(
        model, logits, data, answer_mask(data, tiny_tokenizer), kd_weight=0.0, batch_size=4, max_steps=1,
        embeds_dropout=0.0, device="cpu", pad_id=tiny_tokenizer.pad_token_id, seed=seed, progress=False,
    )
    assert losses[0] == pytest.approx(expected, rel=1e-5)

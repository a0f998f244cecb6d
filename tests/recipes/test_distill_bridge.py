"""`pocketqa distill` across vocabularies (issue 9) and the stage loops' device-side losses (issue 4).

Teacher: a tiny MPNet QA model whose tokenizer has the student's word pieces numbered
differently and MPNet's template ``<s> A </s></s> B </s>`` (tests/helpers.py's
builders), as all-mpnet-base-v2 is to MiniLM. Student: a fresh tiny BERT with helpers'
tokenizer ``[CLS] A [SEP] B [SEP]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, CountingTeacher, build_bert, build_mpnet, build_mpnet_style_tokenizer, squad_dict

from pocketqa.cli.main import main
from pocketqa.config import from_dict
from pocketqa.recipe_files import read_yaml
from pocketqa.recipes.configs import BRIDGES, DistillConfig
from pocketqa.data.cache import load_data
from pocketqa.recipes.distill import distill, distill_prediction
from pocketqa.training.attention import QueryKeyTap
from pocketqa.training.teacher_cache import TeacherLogits, answer_mask
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.models import load_projection, load_qa_model
from pocketqa.data.squad import load_squad

WINDOW = {"max_seq_length": 48, "doc_stride": 16, "max_query_length": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


def _save_teacher(path: Path, tokenizer, seed: int = 1) -> Path:
    model = build_mpnet(len(tokenizer), seed=seed)
    with torch.no_grad():  # sharper than random init: a clear target for stage 2
        model.qa_outputs.weight.mul_(30)
        model.mpnet.encoder.relative_attention_bias.weight.mul_(50)  # make the bias matter in stage 1
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teacher_tok():
    return build_mpnet_style_tokenizer()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, teacher_tok):
    return _save_teacher(tmp_path_factory.mktemp("mpnet_teacher"), teacher_tok)


@pytest.fixture()
def train_file(tmp_path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path


def _config(tmp_path, teacher_dir, student_base, train_file, **overrides) -> DistillConfig:
    values = dict(
        teacher=str(teacher_dir), student_base=str(student_base), out=str(tmp_path / "out"), train=[str(train_file)],
        hidden=16, heads=2, intermediate=32, student_layers=2, batch_size=4, stage1_epochs=4, stage2_epochs=4,
        stage1_learning_rate=2e-3, stage2_learning_rate=2e-3, warmup=0.1, cache_dir=str(tmp_path / "cache"),
        log_steps=1, **WINDOW,
    )
    values.update(overrides)
    return DistillConfig(**values)


def _log(out: Path, stage: int) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["stage"] == stage]


# -- stage 2 ------------------------------------------------------------------------------


def test_stage2_through_the_bridge_learns_caches_and_matches_the_teacher(
    tiny_tokenizer, tiny_bert_dir, teacher_dir, teacher_tok, train_file, tmp_path
):
    counter = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, tiny_bert_dir, train_file, stage="2")
    summary = distill(cfg, progress=False, load_teacher=counter)
    out = Path(cfg.out)
    assert "[CLS] A [SEP] B [SEP] -> teacher <s> A </s></s> B </s>" in summary["bridge"]
    assert json.loads((out / "pocketqa.json").read_text())["distill"]["bridge"] == summary["bridge"]
    losses = [r["loss"] for r in _log(out, 2)]
    assert len(losses) == summary["stage2"]["steps"] >= 20
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    cache = summary["stage2"]["teacher_cache"]
    entry = Path(cache["path"])
    assert cache["status"] == "miss" and (entry / "start.npy").is_file() and counter.calls > 0
    assert "bridge" in json.loads((entry / "manifest.json").read_text())["parts"]

    # A second run reads the cache and never loads or runs the teacher.
    again = CountingTeacher()
    cfg = _config(tmp_path, teacher_dir, tiny_bert_dir, train_file, stage="2", max_steps=2, overwrite=True)
    hit = distill(cfg, progress=False, load_teacher=again)["stage2"]["teacher_cache"]
    assert hit["status"] == "hit" and hit["key"] == cache["key"] and again.loads == again.calls == 0

    # The cached (gathered) logits are the teacher's own, run on its own tokenization of each
    # window (one position wider), at the positions holding the same characters.
    window = WindowConfig(**WINDOW)
    examples = load_squad(train_file)
    data = load_data([train_file], tiny_tokenizer, window, tmp_path / "cache", progress=False)
    feats = make_features(examples, tiny_tokenizer, window)
    own = make_features(examples, teacher_tok, WindowConfig(window.max_seq_length + 1, window.doc_stride, window.max_query_length))
    assert len(own) == len(feats) == len(data)
    start, end = np.load(entry / "start.npy"), np.load(entry / "end.npy")
    teacher = load_qa_model(str(teacher_dir))
    for row in (0, len(feats) // 2, len(feats) - 1):
        a = data.row_starts[row]
        assert data.input_ids[a : a + data.lengths[row]].tolist() == feats.input_ids[row]
        at = {off: q for q, off in enumerate(own.offsets[row]) if off is not None}
        pairs = [(p, at[off]) for p, off in enumerate(feats.offsets[row]) if off is not None]
        pairs.append((feats.cls_index[row], own.cls_index[row]))
        s_pos, t_pos = map(list, zip(*pairs))
        with torch.no_grad():
            got = teacher(input_ids=torch.tensor([own.input_ids[row]]))
        for cached, logits in ((start, got.start_logits), (end, got.end_logits)):
            np.testing.assert_allclose(cached[a + np.array(s_pos)], logits[0, t_pos].numpy(), rtol=2e-3, atol=1e-3)


# -- stage 1 ------------------------------------------------------------------------------


def test_stage1_through_the_bridge_trains_hidden_states_and_projection(tiny_bert_dir, teacher_dir, train_file, tmp_path):
    cfg = _config(tmp_path, teacher_dir, tiny_bert_dir, train_file, stage="1", attention_target="scores")
    summary = distill(cfg, progress=False, load_teacher=CountingTeacher())
    assert summary["bridge"] and summary["stage1"]["projection"]
    assert summary["stage1"]["layer_map"] == [[0, 0], [1, 1], [2, 2]]
    hidden = [r["hidden"] for r in _log(Path(cfg.out), 1)]
    assert len(hidden) == summary["stage1"]["steps"] >= 20
    assert np.mean(hidden[-3:]) < 0.7 * np.mean(hidden[:3])
    torch.manual_seed(cfg.seed)  # distill() makes the projection right after seeding
    initial = torch.nn.Linear(16, 32)
    trained = load_projection(cfg.out)
    assert trained.weight.shape == initial.weight.shape
    assert (trained.weight - initial.weight).abs().max() > 1e-3


def test_query_key_tap_includes_mpnet_relative_position_bias(teacher_tok):
    """The tap's probabilities equal MPNet's own attentions, and the bias changes them."""
    model = build_mpnet(len(teacher_tok), seed=3)
    enc = teacher_tok(["who was the king of france", "paris"], ["the normans", "paris is a city"], padding=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    rows = mask[:, None, :, None].expand(-1, 2, -1, mask.shape[1])  # padded query rows are meaningless
    tap = QueryKeyTap(model, heads=2)
    try:
        seen = []
        for scale in (50.0, 0.0):
            with torch.no_grad():
                model.mpnet.encoder.relative_attention_bias.weight.mul_(scale)
                out = model.mpnet(**enc, output_attentions=True)
            for layer in (1, 2):
                probs = tap.attention(layer, mask, "probs")
                assert torch.allclose(probs[rows], out.attentions[layer - 1][rows], atol=1e-5)
            seen.append(out.attentions[0][rows])
        assert (seen[0] - seen[1]).abs().max() > 0.05  # the bias is not negligible here
    finally:
        tap.close()


def test_cli_recipe_split_into_stage1_then_stage2_as_on_the_gpu(tiny_bert_dir, teacher_dir, train_file, tmp_path, capsys):
    """docs/teacher.md's GPU commands at tiny scale: a recipe with student_layers, stage 1 in one
    call, stage 2 from its output in the next (``--student`` replaces the recipe's student_base)."""
    import yaml

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "teacher": "runs/placeholder", "student_base": "pip:placeholder", "student_layers": 2, "stage": "both",
        "bridge": "auto", "train": ["placeholder.json.gz"], "out": "runs/placeholder", "batch_size": 4, **WINDOW,
    }))
    common = [
        "distill", "--recipe", str(recipe), "--teacher", str(teacher_dir), "--train", str(train_file),
        "--cache-dir", str(tmp_path / "cache"), "--max-steps", "2", "--device", "cpu", "--no-progress",
    ]
    stage1 = tmp_path / "stage1"
    assert main([*common, "--stage", "1", "--student-base", str(tiny_bert_dir), "--out", str(stage1)]) == 0
    assert main([*common, "--stage", "2", "--student", str(stage1), "--out", str(tmp_path / "final")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("vocabulary bridge: student [CLS] A [SEP] B [SEP] -> teacher <s> A </s></s> B </s>") == 2
    meta = json.loads((tmp_path / "final" / "pocketqa.json").read_text())
    assert meta["distill"]["student"] == {"checkpoint": str(stage1)} and meta["distill"]["stage2"]["steps"] == 2


# -- refusals and config ------------------------------------------------------------------


def test_bridge_off_gives_the_vocabulary_error(tiny_bert_dir, teacher_dir, train_file, tmp_path, capsys):
    cfg = _config(tmp_path, teacher_dir, tiny_bert_dir, train_file, stage="2", bridge="off")
    with pytest.raises(ConfigError, match=r"tokenizers differ.*--bridge auto"):
        distill(cfg, progress=False, load_teacher=CountingTeacher())
    assert not (tmp_path / "cache" / "teacher-logits").exists()
    code = main([
        "distill", "--teacher", str(teacher_dir), "--student-base", str(tiny_bert_dir), "--train", str(train_file),
        "--out", str(tmp_path / "cli"), "--stage", "2", "--bridge", "off", "--cache-dir", str(tmp_path / "cache"),
        "--device", "cpu", "--no-progress",
    ])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "tokenizers differ" in err


def test_a_teacher_that_segments_differently_is_refused_with_the_bridges_message(
    tiny_bert_dir, train_file, tmp_path
):
    no_paris = build_mpnet_style_tokenizer(with_paris=False)  # "paris" -> p ##a ##r ##i ##s
    teacher = _save_teacher(tmp_path / "no-paris", no_paris)
    # A 3-head student as well: both problems come in one message.
    cfg = _config(tmp_path, teacher, tiny_bert_dir, train_file, stage="1", hidden=18, heads=3)
    with pytest.raises(ConfigError) as err:
        distill(cfg, progress=False, load_teacher=CountingTeacher())
    message = str(err.value)
    assert "vocabulary bridge refused them" in message and "differently" in message and "'paris'" in message
    assert "2 attention heads and student 3" in message


def test_bridge_setting_is_validated_with_the_other_keys():
    base = {"teacher": "t", "out": "o", "train": ["x"]}
    assert BRIDGES == ("auto", "off")
    assert from_dict(DistillConfig, base).bridge == "auto"
    assert from_dict(DistillConfig, {**base, "bridge": False}).bridge == "off"  # YAML reads `bridge: off` as False
    with pytest.raises(ConfigError) as err:
        from_dict(DistillConfig, {**base, "bridge": "sometimes", "temperature": 0})
    assert "bridge must be one of auto, off, found 'sometimes'" in str(err.value)
    assert "temperature must be > 0" in str(err.value)


def test_every_distill_recipe_loads():
    recipes = sorted((REPO / "src" / "pocketqa" / "recipes").glob("*.yaml"))
    # Shipped recipes carry no data paths: the command line gives --train.
    distill_recipes = {p.name: {**read_yaml(p), "train": ["x"]} for p in recipes if "teacher" in read_yaml(p)}
    assert {"mpnet-to-minilm-l6-squad2.yaml", "mpnet-to-minilm-l3-squad2.yaml"} <= set(distill_recipes)
    for name, values in distill_recipes.items():
        cfg = from_dict(DistillConfig, values, source=name)
        if name.startswith("mpnet-to-minilm"):
            assert cfg.bridge == "auto" and cfg.stage == "both" and cfg.student_base == "pip:all-MiniLM-L6-v2"
    assert from_dict(DistillConfig, distill_recipes["mpnet-to-minilm-l3-squad2.yaml"]).student_layers == 3


# -- issue 4: losses stay on the device between log steps -----------------------------------


def test_stage2_losses_sync_at_log_steps_and_still_catch_nan(tiny_tokenizer, train_file, tmp_path):
    data = load_data([train_file], tiny_tokenizer, WindowConfig(**WINDOW), tmp_path / "cache", progress=False)
    zeros = np.zeros(len(data.input_ids), dtype=np.float16)
    logits = TeacherLogits(zeros, zeros, tmp_path, "none", "hit")
    mask = answer_mask(data, tiny_tokenizer)
    records = []
    losses = distill_prediction(
        build_bert(len(tiny_tokenizer)), logits, data, mask, max_steps=5, batch_size=4,
        log=lambda **r: records.append(r), log_steps=3, progress=False,
    )
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert [r["step"] for r in records] == [3, 5]
    # the logged loss is the mean of the steps since the previous log step
    assert [r["loss"] for r in records] == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:])], rel=1e-6)

    # A nan from step 2 on, with no log step before the end: caught at the end, naming step 2.
    broken = build_bert(len(tiny_tokenizer))
    step = {"n": 0}

    def nan_from_step_2(module, args, out):
        step["n"] += 1
        if step["n"] >= 2:
            out.start_logits = out.start_logits * float("nan")
        return out

    broken.register_forward_hook(nan_from_step_2)
    with pytest.raises(PocketQAError, match="stage 2 loss became nan at step 2"):
        distill_prediction(broken, logits, data, mask, max_steps=4, batch_size=4, log_steps=10, progress=False)

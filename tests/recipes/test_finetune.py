"""pocketqa train: the loop, its data pieces, checkpoints/resume, DDP, config errors, CLI."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pocketqa.data.cache as cache_mod
import pocketqa.recipes.finetune as train_mod
from helpers import REPO, build_bert, bad_squad_file, poison_after_each_step
from pocketqa.cli.main import main
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.model_inputs import pad_batch
from pocketqa.training.losses import span_loss
from pocketqa.data.squad import load_squad
from pocketqa.data.batching import batch_order, collate, split_batch
from pocketqa.data.cache import file_sha256, load_train_features
from pocketqa.recipes.finetune import train
from pocketqa.training.checkpoint import list_checkpoints
from pocketqa.training.optim import build_optimizer
from pocketqa.training.runlog import read_log
from pocketqa.recipe_files import from_recipe
from pocketqa.recipes.configs import TrainConfig

WINDOW = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def no_dropout_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny BERT QA model without dropout: runs that split batches differently must agree."""
    path = tmp_path_factory.mktemp("nodrop")
    model = build_bert(len(tiny_tokenizer), seed=1)
    model.config.hidden_dropout_prob = 0.0
    model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, tiny_tokenizer):
    """A bare encoder (BertModel, no QA head), as a base model is published."""
    path = tmp_path_factory.mktemp("encoder")
    build_bert(len(tiny_tokenizer), seed=2).bert.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def config(tmp_path, model_dir, data, out="out", **overrides) -> TrainConfig:
    values = dict(
        model=str(model_dir), train=str(data), out=str(tmp_path / out), batch_size=4, epochs=2,
        learning_rate=1e-3, log_steps=1, save_steps=0, cache_dir=str(tmp_path / "cache"), device="cpu", **WINDOW,
    )
    values.update(overrides)
    return TrainConfig(**values)


def weights(model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(model_dir) / "model.safetensors")


# Parameters whose exact gradient is zero: a constant added to every start (end) logit does
# not change a softmax, and these two only add constants (the QA bias directly, the last
# LayerNorm bias through the linear QA head). Adam divides their float-noise gradients by
# their own tiny magnitude, so they move by ~lr per step in random directions; runs that sum
# the same gradients in a different order cannot agree on them.
SHIFT_ONLY = ("qa_outputs.bias", "bert.encoder.layer.1.output.LayerNorm.bias")


def assert_same_training(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name not in SHIFT_ONLY:
            assert torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5), name


def losses(out_dir) -> list[float]:
    return [r["loss"] for r in read_log(out_dir) if "loss" in r]


# -- losses and data pieces -----------------------------------------------------------------


def test_span_loss_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    s, e = torch.tensor([0, 3, 6]), torch.tensor([0, 4, 6])
    naive = 0.0
    for row in range(3):
        naive += -math.log(math.exp(start[row, s[row]]) / sum(math.exp(x) for x in start[row]))
        naive += -math.log(math.exp(end[row, e[row]]) / sum(math.exp(x) for x in end[row]))
    assert span_loss(start, end, s, e, reduction="sum").item() == pytest.approx(naive / 2, rel=1e-5)
    assert span_loss(start, end, s, e).item() == pytest.approx(naive / 6, rel=1e-5)


def test_span_loss_with_mask_ignores_padding():
    g = torch.Generator().manual_seed(1)
    start, end = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    s, e = torch.tensor([1, 4]), torch.tensor([2, 4])
    padded_start = torch.cat([start, torch.full((2, 3), 9.0)], dim=1)  # padding with large logits
    padded_end = torch.cat([end, torch.randn(2, 3, generator=g)], dim=1)
    mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 3)], dim=1)
    expected = span_loss(start, end, s, e).item()
    assert span_loss(padded_start, padded_end, s, e, mask=mask).item() == pytest.approx(expected, rel=1e-6)
    assert span_loss(padded_start, padded_end, s, e).item() != pytest.approx(expected, rel=1e-3)


def test_batch_order_covers_every_window_in_full_length_grouped_batches():
    lengths = np.random.default_rng(0).integers(10, 300, size=103)
    batches = batch_order(lengths, 8, seed=5, chunk_batches=4)
    assert len(batches) == math.ceil(103 / 8) and all(len(b) == 8 for b in batches)
    seen = np.concatenate(batches)
    assert set(seen.tolist()) == set(range(103))  # every window, plus 1 refill to complete the last batch
    assert len(seen) - 103 == 1
    again = batch_order(lengths, 8, seed=5, chunk_batches=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, batch_order(lengths, 8, seed=6, chunk_batches=4)))
    # Grouping by length: far less padding than random batches of the same windows.
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.random.default_rng(1).permutation(np.concatenate(batches)).reshape(-1, 8)
    assert padded < 0.8 * sum(len(b) * lengths[b].max() for b in random_batches)


def test_split_batch_gives_disjoint_parts_that_cover_the_batch():
    batch = np.arange(12)
    parts = [p for rank in range(2) for p in split_batch(batch, rank, world_size=2, grad_accum=3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(12))
    assert all(len(p) == 2 for p in parts)


def test_features_are_cached_as_plain_arrays_and_collate_like_pad_batch(tmp_path, tiny_tokenizer, tiny_squad_file, monkeypatch):
    window = WindowConfig(**WINDOW)
    data = load_train_features(tiny_squad_file, tiny_tokenizer, window, tmp_path, progress=False)
    [cache_file] = list(tmp_path.glob("train-*.npz"))
    np.load(cache_file, allow_pickle=False)["input_ids"]  # no pickle inside

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(cache_mod, "make_features", no_tokenising)
    cached = load_train_features(tiny_squad_file, tiny_tokenizer, window, tmp_path, progress=False)
    for name in ("input_ids", "token_type_ids", "lengths", "start_positions", "end_positions", "example_index"):
        assert np.array_equal(getattr(data, name), getattr(cached, name))
    monkeypatch.undo()

    other = load_train_features(tiny_squad_file, tiny_tokenizer, WindowConfig(48, 8, 16), tmp_path, progress=False)
    assert len(list(tmp_path.glob("train-*.npz"))) == 2 and len(other) != len(data)

    features = make_features(load_squad(tiny_squad_file), tiny_tokenizer, window, labels=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    idx = np.array([3, 0, 5, 1])
    batch = collate(data, idx, tiny_tokenizer.pad_token_id, names, pad_to_multiple_of=1)
    reference = pad_batch(features, idx, tiny_tokenizer.pad_token_id, names)
    for name in names:
        assert np.array_equal(batch[name], reference[name]), name
    assert np.array_equal(batch["start_positions"], features.start_positions[idx])
    assert np.array_equal(batch["end_positions"], features.end_positions[idx])
    longest = int(data.lengths[idx].max())
    width = collate(data, idx, 0, names, pad_to_multiple_of=8)["input_ids"].shape[1]
    assert width == min(-(-longest // 8) * 8, int(data.lengths.max()))


# -- the loop -----------------------------------------------------------------------------


def test_cpu_optimizer_is_fused_adamw_and_steps_like_the_reference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    opt = build_optimizer(model, 1e-2, 0.1)
    assert opt.defaults["fused"] is True  # the CPU kernel (torch >= 2.4; docs/benchmarks.md)
    ref_opt = torch.optim.AdamW(
        [{"params": [p for p in reference.parameters() if p.ndim >= 2], "weight_decay": 0.1},
         {"params": [p for p in reference.parameters() if p.ndim < 2], "weight_decay": 0.0}],
        lr=1e-2, foreach=False,
    )
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loss_goes_down(tmp_path, tiny_bert_dir, tiny_squad_file):
    train(config(tmp_path, tiny_bert_dir, tiny_squad_file, epochs=10, learning_rate=3e-3))
    curve = losses(tmp_path / "out")
    assert len(curve) >= 20
    assert np.mean(curve[-4:]) < 0.6 * np.mean(curve[:4])


def test_resumed_run_ends_with_the_same_weights(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch):
    # Dropout is on in this model: equality needs the RNG state restored, not just the weights.
    common = dict(epochs=3, save_steps=5, keep_checkpoints=None)
    train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="straight", **common))

    real_save = train_mod.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        saved = real_save(path, *args, **kwargs)
        if Path(path).name == "step-10":
            raise KeyboardInterrupt  # the process is killed right after the checkpoint
        return saved

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="killed", **common))
    monkeypatch.undo()
    killed = tmp_path / "killed"
    assert not (killed / "model.safetensors").exists()
    state = json.loads((killed / "checkpoints" / "step-10" / "state.json").read_text())
    assert state["epoch"] == 1 and state["step_in_epoch"] == 2  # 29 windows = 8 steps/epoch: inside epoch 2

    train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="killed", resume="latest", **common))
    a, b = weights(tmp_path / "straight"), weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert losses(killed)[-3:] == losses(tmp_path / "straight")[-3:]


def test_resumed_run_logs_each_step_once(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch):
    # Killed at step 13, three steps after its last checkpoint: the resumed run trains
    # steps 11-13 again, and its log must not hold them twice.
    common = dict(epochs=2, save_steps=10, keep_checkpoints=None)
    train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="straight", **common))

    real_write = train_mod.RunLog.write

    def write_then_die(self, record):
        real_write(self, record)
        if record.get("step") == 13 and "loss" in record:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write('{"step": 14, "lo')  # a line cut off by the kill
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.RunLog, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="killed", **common))
    monkeypatch.undo()
    train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out="killed", resume="latest", **common))

    steps = [r["step"] for r in read_log(tmp_path / "killed") if "loss" in r]
    assert steps == list(range(1, 17))
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    starts = [r for r in read_log(tmp_path / "killed") if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 10] and starts[1]["dropped_records"] == 4


def test_grad_accum_splits_the_same_global_batch(tmp_path, no_dropout_dir, tiny_squad_file):
    train(config(tmp_path, no_dropout_dir, tiny_squad_file, out="one"))
    train(config(tmp_path, no_dropout_dir, tiny_squad_file, out="two", grad_accum=2))
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert_same_training(a, b)
    assert np.allclose(losses(tmp_path / "one"), losses(tmp_path / "two"), rtol=1e-5)
    assert not torch.equal(a["qa_outputs.weight"], weights(no_dropout_dir)["qa_outputs.weight"])  # it trained


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, no_dropout_dir, tiny_squad_file):
    args = [
        "train", "--model", str(no_dropout_dir), "--train", str(tiny_squad_file), "--batch-size", "4",
        "--epochs", "2", "--learning-rate", "1e-3", "--save-steps", "3", "--device", "cpu",
        "--cache-dir", str(tmp_path / "cache"), "--max-seq-length", "64", "--doc-stride", "16",
        "--max-query-length", "16", "--log-steps", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "pocketqa",
         *args, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    assert_same_training(weights(tmp_path / "single"), weights(tmp_path / "ddp"))
    ddp_log = read_log(tmp_path / "ddp")
    assert ddp_log[0]["world_size"] == 2
    assert np.allclose(losses(tmp_path / "ddp"), losses(tmp_path / "single"), rtol=1e-5)
    assert [p.name for p in list_checkpoints(tmp_path / "ddp")] == ["step-12", "step-15"]  # 16 steps: rank 0 saved, kept 2
    assert sorted(f.name for f in (tmp_path / "ddp" / "checkpoints" / "step-15").glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]


def test_output_loads_in_transformers_and_answers_the_same(tmp_path, encoder_dir, tiny_squad_file):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.inference.backends import TorchBackend

    result = train(config(tmp_path, encoder_dir, tiny_squad_file, dev=str(tiny_squad_file), epochs=3, save_steps=4))
    out = tmp_path / "out"
    meta = json.loads((out / "pocketqa.json").read_text())
    assert meta["window"] == WINDOW
    assert meta["threshold"] == result["threshold"] == meta["metrics"]["dev"]["best_f1_thresh"]
    assert meta["data"]["train"]["sha256"] == file_sha256(tiny_squad_file)
    assert meta["recipe"]["learning_rate"] == 1e-3

    ours = QuestionAnswerer.from_pretrained(out, device="cpu")
    assert ours.threshold == meta["threshold"] and ours.window == WindowConfig(**WINDOW)
    theirs = QuestionAnswerer(
        TorchBackend(AutoModelForQuestionAnswering.from_pretrained(out)),
        AutoTokenizer.from_pretrained(out),
        WindowConfig(**meta["window"]),
        threshold=meta["threshold"],
        batch_size=ours.batch_size,  # same padding, so the logits match bit for bit
    )
    examples = load_squad(tiny_squad_file)
    assert ours.predict(examples) == theirs.predict(examples)
    # The checkpoint of the last step is a usable model too, with the same weights.
    [last] = [p for p in list_checkpoints(out) if p.name == f"step-{result['steps']}"]
    ckpt = AutoModelForQuestionAnswering.from_pretrained(last)
    for name, tensor in weights(out).items():
        assert torch.equal(ckpt.state_dict()[name], tensor), name
    # The fresh head was trained, not left at its random start.
    assert "qa_outputs.weight" in weights(out) and "qa_outputs.weight" not in weights(encoder_dir)


def test_half_precision_checkpoints_train_in_float32(tmp_path, tiny_tokenizer, tiny_squad_file):
    # all-MiniLM-L6-v2 ships fp16 weights; transformers 5 would load them as fp16 and Adam
    # on fp16 weights turns the loss into NaN within a few steps.
    half = tmp_path / "half"
    build_bert(len(tiny_tokenizer)).half().save_pretrained(half)
    tiny_tokenizer.save_pretrained(half)
    train(config(tmp_path, half, tiny_squad_file, max_steps=3))
    assert {t.dtype for t in weights(tmp_path / "out").values()} == {torch.float32}
    assert all(math.isfinite(x) for x in losses(tmp_path / "out"))


def test_keep_checkpoints_deletes_older_ones(tmp_path, tiny_bert_dir, tiny_squad_file):
    result = train(config(tmp_path, tiny_bert_dir, tiny_squad_file, save_steps=1, keep_checkpoints=2))
    names = [p.name for p in list_checkpoints(tmp_path / "out")]
    assert names == [f"step-{result['steps'] - 1}", f"step-{result['steps']}"]
    assert not list((tmp_path / "out" / "checkpoints").glob(".tmp-*"))


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch):
    def nan_loss(*args, **kwargs):
        return span_loss(*args, **kwargs) * float("nan")

    monkeypatch.setattr(train_mod, "span_loss", nan_loss)
    with pytest.raises(PocketQAError, match=r"loss became nan at step 1"):
        train(config(tmp_path, tiny_bert_dir, tiny_squad_file, save_steps=1))
    assert list_checkpoints(tmp_path / "out") == []  # nothing bad was saved


def test_non_finite_weights_are_never_saved(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch):
    # The loss check sees the loss before the last update; an update that breaks the weights
    # (e.g. a huge learning rate) must still not reach a checkpoint or the final model.
    poison_after_each_step(monkeypatch, train_mod, float("inf"))
    for save_steps in (1, 0):
        out = f"out{save_steps}"
        with pytest.raises(PocketQAError, match=r"qa_outputs\.weight became nan or inf at step 1"):
            train(config(tmp_path, tiny_bert_dir, tiny_squad_file, out=out, max_steps=1, save_steps=save_steps))
        assert list_checkpoints(tmp_path / out) == [] and not (tmp_path / out / "model.safetensors").exists()


# -- config and CLI -------------------------------------------------------------------------


def test_every_recipe_problem_is_reported_at_once(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        "model: m\ntrain: t.json\nout: o\nlearning_rat: 1e-4\nepochs: 0\nprecision: fp8\n"
        "batch_size: lots\ndoc_stride: 500\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        from_recipe(TrainConfig, recipe)
    message = str(info.value)
    assert "5 problem(s)" in message and str(recipe) in message
    for expected in ("unknown key 'learning_rat' (did you mean 'learning_rate'?)", "epochs must be >= 1",
                     "precision must be one of", "batch_size must be an integer, found 'lots'", "doc_stride (500)"):
        assert expected in message


def test_non_finite_numbers_are_config_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        TrainConfig(model="m", train="t.json", out="o", learning_rate=float("inf"), warmup="nan",
                    max_grad_norm=float("-inf"), adam_epsilon=float("nan"), weight_decay="inf")
    message = str(info.value)
    assert "5 problem(s)" in message
    for name, found in (("learning_rate", "inf"), ("warmup", "'nan'"), ("max_grad_norm", "-inf"),
                        ("adam_epsilon", "nan"), ("weight_decay", "'inf'")):
        assert f"{name} must be a finite number, found {found}" in message


def test_recipe_values_are_typed_and_flags_override_them(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ntrain: t.json\nout: o\nlearning_rate: 3e-5\nwarmup: 0.1\nepochs: 3\n", encoding="utf-8")
    config = from_recipe(TrainConfig, recipe, {"epochs": 1, "batch_size": None})
    assert config.learning_rate == 3e-5 and isinstance(config.learning_rate, float)  # YAML reads 3e-5 as str
    assert config.epochs == 1 and config.batch_size == 16


TRAIN_RECIPES = ["mobilebert-uncased-squad2.yaml", "bert-base-uncased-squad2.yaml", "minilm-l6-squad2.yaml"]


@pytest.mark.parametrize("recipe", [REPO / "src" / "pocketqa" / "recipes" / name for name in TRAIN_RECIPES], ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    config = from_recipe(TrainConfig, recipe, {"train": "train.json", "dev": "dev.json"}, inputs=("train",))
    assert config.max_seq_length == 384 and config.doc_stride == 128


def test_cli_exits_2_on_a_bad_recipe(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: m\ntrain: t.json\nout: o\nbatchsize: 8\nwarmup: -1\n", encoding="utf-8")
    assert main(["train", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'batch_size'" in err and "warmup must be >= 0" in err


def test_existing_out_dir_needs_overwrite(tmp_path, tiny_bert_dir, tiny_squad_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier run")
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    args = ["train", "--model", str(tiny_bert_dir), "--train", str(tiny_squad_file), "--out", str(out),
            "--max-steps", "2", "--batch-size", "4", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
            "--max-seq-length", "64", "--doc-stride", "16", "--max-query-length", "16"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert (out / "pocketqa.json").is_file() and not (out / "checkpoints" / "step-1").exists()
    assert (out / "old.txt").is_file()  # only what a run writes is replaced


def test_failed_overwrite_keeps_the_previous_run(tmp_path, tiny_bert_dir, tiny_tokenizer, tiny_squad_file):
    out = tmp_path / "out"
    (out / "checkpoints" / "step-4").mkdir(parents=True)
    previous = {"pocketqa.json": "{}\n", "log.jsonl": '{"step": 4}\n', "checkpoints/step-4/state.json": "{}\n"}
    for name, text in previous.items():
        (out / name).write_text(text)
    no_weights = tmp_path / "no-weights"
    tiny_tokenizer.save_pretrained(no_weights)  # the tokenizer loads, the model does not
    bad_inputs = [
        (dict(train=str(bad_squad_file(tmp_path))), "answer_start"),
        (dict(model=str(no_weights)), "cannot load a QA model"),
        (dict(dev=str(bad_squad_file(tmp_path))), "answer_start"),
    ]
    for bad, match in bad_inputs:
        with pytest.raises(PocketQAError, match=match):
            train(config(tmp_path, tiny_bert_dir, tiny_squad_file, overwrite=True, max_steps=1, **bad))
        assert {name: (out / name).read_text() for name in previous} == previous


def test_failed_run_leaves_no_empty_out_dir(tmp_path, tiny_bert_dir, tiny_squad_file):
    with pytest.raises(PocketQAError, match="answer_start"):
        train(config(tmp_path, tiny_bert_dir, bad_squad_file(tmp_path), out="new/out"))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage", ["truncated", "bad-crc"])
def test_damaged_feature_cache_is_rebuilt_not_a_crash(tmp_path, tiny_tokenizer, tiny_squad_file, damage):
    # A cache file cut off by a full disk or a crash before the data reached the disk (or
    # damaged in a copy) made np.load raise zipfile.BadZipFile, which was not caught.
    window = WindowConfig(**WINDOW)
    fresh = load_train_features(tiny_squad_file, tiny_tokenizer, window, tmp_path, progress=False)
    [cache_file] = tmp_path.glob("train-*.npz")
    raw = bytearray(cache_file.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0xFF  # inside the input_ids member: its CRC-32 no longer matches
    cache_file.write_bytes(bytes(raw))

    again = load_train_features(tiny_squad_file, tiny_tokenizer, window, tmp_path, progress=False)
    for name in ("input_ids", "row_starts", "lengths", "start_positions", "end_positions", "example_index"):
        assert np.array_equal(getattr(again, name), getattr(fresh, name)), name
    with np.load(cache_file, allow_pickle=False) as z:  # rewritten whole
        assert np.array_equal(z["input_ids"], fresh.input_ids)


def test_resume_with_grad_accum_rotation_and_a_half_written_checkpoint(tmp_path, tiny_bert_dir, tiny_squad_file, monkeypatch):
    # Guard (passed before the audit): grad_accum 2, a checkpoint at an epoch boundary (29
    # windows = 8 steps/epoch), --keep-checkpoints 2, and a crash's leftovers that resume must skip.
    def config(out, **overrides):
        return TrainConfig(
            model=str(tiny_bert_dir), train=str(tiny_squad_file), out=str(tmp_path / out), batch_size=4,
            grad_accum=2, epochs=2, learning_rate=1e-3, warmup=0.25, log_steps=1, save_steps=4, keep_checkpoints=2,
            cache_dir=str(tmp_path / "cache"), device="cpu", **WINDOW, **overrides,
        )

    train(config("straight"))
    real_save = train_mod.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        saved = real_save(path, *args, **kwargs)
        if Path(path).name == "step-8":
            raise KeyboardInterrupt
        return saved

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config("killed"))
    monkeypatch.undo()
    killed = tmp_path / "killed"
    assert [p.name for p in list_checkpoints(killed)] == ["step-4", "step-8"]
    state = json.loads((killed / "checkpoints" / "step-8" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (0, 8)  # the end of the first epoch
    (killed / "checkpoints" / "step-12").mkdir()  # killed while writing: no state.json
    (killed / "checkpoints" / ".tmp-step-12").mkdir()

    train(config("killed", resume="latest"))
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [p.name for p in list_checkpoints(killed)] == ["step-12", "step-16"]

"""Audit regressions for the training and distillation loops: feature cache, stage-2 loss, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from helpers import build_bert

import pocketqa.recipes.finetune as train_mod
from pocketqa.recipes.distill import TeacherLogits, answer_mask, distill_prediction, load_data
from pocketqa.data.features import WindowConfig
from pocketqa.training.losses import span_loss
from pocketqa.recipes.finetune import batch_order, collate, epoch_seed, list_checkpoints, load_train_features, train
from pocketqa.recipes.configs import TrainConfig

WINDOW = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


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

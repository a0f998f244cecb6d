"""Tests for pocketqa.training.attention: which models the query/key taps can read."""

from __future__ import annotations

import pytest
import torch
from helpers import build_bert

from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.training.attention import QueryKeyTap, tap_problem
from pocketqa.training.pairing import check_pair


class _NoProjections(torch.nn.Module):
    """An encoder whose attention projections carry none of the names the taps look for."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(config.num_hidden_layers))


def test_absolute_position_bert_can_be_tapped():
    assert tap_problem(build_bert(50)) is None


def test_relative_position_terms_inside_attention_are_named_and_refused(tiny_tokenizer):
    model = build_bert(tiny_tokenizer.vocab_size)
    model.config.position_embedding_type = "relative_key"  # added inside BertSelfAttention: no hook sees it
    problem = tap_problem(model)
    assert problem.startswith("BertForQuestionAnswering adds relative-position terms")
    assert "position_embedding_type 'relative_key'" in problem and problem.endswith("pass --no-attention-loss")
    model.config.position_embedding_type = "absolute"
    model.config.relative_attention = True  # DeBERTa's flag
    assert "relative_attention (DeBERTa-style" in tap_problem(model)

    model.config.relative_attention = False
    teacher = build_bert(tiny_tokenizer.vocab_size, layers=4)
    teacher.config.position_embedding_type = "relative_key_query"
    with pytest.raises(ConfigError, match="teacher BertForQuestionAnswering adds relative-position terms"):
        check_pair(teacher.config, model.config, tiny_tokenizer, tiny_tokenizer, teacher_model=teacher, student_model=model)
    # Without the attention loss, the same pair is fine.
    assert check_pair(teacher.config, model.config, tiny_tokenizer, tiny_tokenizer, attention_loss=False,
                      teacher_model=teacher, student_model=model) == [(0, 0), (1, 2), (2, 4)]


def test_a_model_without_query_key_projections_is_named_with_what_was_looked_for():
    model = _NoProjections(build_bert(50).config)
    problem = tap_problem(model)
    assert problem == (
        "_NoProjections: no per-layer query/key projections found (looked for query/key, q_lin/k_lin, q/k); "
        "pass --no-attention-loss"
    )
    with pytest.raises(PocketQAError, match="_NoProjections: no per-layer query/key projections to hook"):
        QueryKeyTap(model, heads=2)

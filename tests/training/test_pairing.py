"""Tests for pocketqa.training.pairing: bridge sample texts and the vocabulary plan."""

from __future__ import annotations

import json

from helpers import CONTEXTS, WORDS, build_tokenizer, squad_dict

from pocketqa.training.pairing import bridge_samples, plan_vocabulary


def test_bridge_samples_take_questions_and_contexts_from_every_file(tmp_path):
    paths = []
    for i, contexts in enumerate((CONTEXTS[:1], CONTEXTS[1:])):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(squad_dict(contexts)), encoding="utf-8")
    texts = bridge_samples([*paths, paths[0]], limit=6)  # a repeated file counts once
    # per file: two thirds questions, spread over the file, then one context
    first, second = [[q for q, _, _ in qas] for _, _, qas in CONTEXTS]
    assert texts == [first[0], first[2], CONTEXTS[0][1], second[0], second[1], CONTEXTS[1][1]]


def test_same_vocabularies_need_no_bridge_and_off_reports_the_difference():
    tok = build_tokenizer()
    assert plan_vocabulary(tok, tok, "auto") == (None, None)
    other = build_tokenizer(["zebra", *WORDS])  # every id shifted by one
    bridge, problem = plan_vocabulary(tok, other, "off")
    assert bridge is None and "tokenizers differ" in problem

"""Shared fixtures: a tiny WordPiece tokenizer, tiny random QA models, tiny SQuAD files.

Everything is built here, offline, in a fraction of a second; no hub access.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "squad2"

WORDS = (
    "the a an of in on at to for by with from and or is was were be been are it its this that "
    "who what when where which why how many much did does do has have had not no yes "
    "city capital country river mountain king queen war year years century people company "
    "founded built wrote written born died university school music film book church state "
    "paris france london england germany berlin rome italy normans normandy denmark "
    "first second third new old large small north south east west one two three ten hundred "
    "named called known became led won lost made used began ended between during after before"
).split()

CONTEXTS = [
    (
        "Normans",
        "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
        "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland "
        "and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III.",
        [
            ("In what country is Normandy located?", "France", False),
            ("From which countries did the Norse originate?", "Denmark, Iceland and Norway", False),
            ("Who was the leader of the Norse?", "Rollo", False),
            ("Who gave their name to Italy?", None, True),
        ],
    ),
    (
        "Paris",
        "Paris is the capital and most populous city of France. Since the 17th century, Paris has been "
        "one of Europe's major centres of finance, diplomacy, commerce, fashion and science.",
        [
            ("What is the capital of France?", "Paris", False),
            ("Since when has Paris been a major centre?", "the 17th century", False),
            ("What is the capital of Germany?", None, True),
        ],
    ),
]


def build_tokenizer(words: list[str] = WORDS):
    """A lowercasing BERT-style WordPiece tokenizer over letters, digits and a few words."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits)
    vocab = specials + chars + ["##" + c for c in chars] + list(string.punctuation) + sorted(set(words))
    ids = {w: i for i, w in enumerate(dict.fromkeys(vocab))}
    tk = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tk.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]",
    )


def build_bert(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 2, **config_kwargs):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=hidden * 2, max_position_embeddings=512, **config_kwargs,
    )
    return BertForQuestionAnswering(config).eval()


def build_mobilebert(vocab_size: int, seed: int = 0):
    import torch
    from transformers import MobileBertConfig, MobileBertForQuestionAnswering

    torch.manual_seed(seed)
    config = MobileBertConfig(
        vocab_size=vocab_size, hidden_size=32, embedding_size=16, true_hidden_size=16,
        intra_bottleneck_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_feedforward_networks=1, max_position_embeddings=512,
    )
    return MobileBertForQuestionAnswering(config).eval()


def squad_dict(contexts=CONTEXTS) -> dict:
    data = []
    n = 0
    for title, context, qas in contexts:
        items = []
        for question, answer, impossible in qas:
            n += 1
            answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
            items.append({"id": f"q{n}", "question": question, "answers": answers, "is_impossible": impossible})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": items}]})
    return {"version": "v2.0", "data": data}


@pytest.fixture()
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and a busy 2-core box thrashes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer):
    """A saved 2-layer, 32-dim random BERT QA model with its tokenizer."""
    path = tmp_path_factory.mktemp("tiny_bert")
    build_bert(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mobilebert_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny_mobilebert")
    build_mobilebert(len(tiny_tokenizer)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_squad_file(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shared_dev() -> Path:
    path = SHARED_DATA / "dev-v2.0.json.gz"
    if not path.is_file():
        pytest.skip(f"real SQuAD data not found at {path}")
    return path


class CountingTeacher:
    """Loads the teacher and counts loads and forward calls."""

    def __init__(self):
        self.loads = 0
        self.calls = 0

    def __call__(self, path, device):
        from pocketqa.models import load_qa_model

        self.loads += 1
        model = load_qa_model(path, device=device)

        def count(module, args, kwargs):
            self.calls += 1

        model.register_forward_pre_hook(count, with_kwargs=True)
        return model



def poison_after_each_step(monkeypatch, module, value: float) -> None:
    """Patches ``module.build_optimizer`` so every optimizer step leaves the QA head weight
    filled with ``value`` (nan/inf): what a diverging update does to the weights."""
    real = module.build_optimizer

    def poisoning(model, *args, **kwargs):
        optimizer = real(model, *args, **kwargs)
        optimizer.register_step_post_hook(lambda *_: model.qa_outputs.weight.data.fill_(value))
        return optimizer

    monkeypatch.setattr(module, "build_optimizer", poisoning)


class SlowBackend:
    """Wraps a backend and takes 0.3 s per model call, so that questions sent meanwhile queue up."""

    def __init__(self, real):
        self.real = real
        self.input_names = real.input_names

    def __call__(self, batch):
        import time

        time.sleep(0.3)
        return self.real(batch)


def bad_squad_file(tmp_path) -> Path:
    """A SQuAD file whose first answer_start is a string: load_squad refuses it, naming the question."""
    data = squad_dict()
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "12"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path

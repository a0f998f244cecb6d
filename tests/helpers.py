"""Plain builders and constants shared by the tests: tiny tokenizers, tiny random QA models,
tiny SQuAD data, and small test doubles.

Everything is built here, offline, in a fraction of a second; no hub access. Fixtures that wrap
these live in conftest.py; test modules import from here, never from each other or conftest.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from pocketqa.cli.main import main
from pocketqa.data.features import WindowConfig
from pocketqa.data.squad import Example

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


def word_pieces(words=WORDS, with_paris=True) -> list[str]:
    """The non-special word pieces of build_tokenizer's vocabulary, in its order."""
    chars = list(string.ascii_lowercase + string.digits)
    pieces = chars + ["##" + c for c in chars] + list(string.punctuation) + sorted(set(words))
    pieces = list(dict.fromkeys(pieces))
    return pieces if with_paris else [p for p in pieces if p != "paris"]


def build_mpnet_style_tokenizer(
    with_paris: bool = True, lowercase: bool = True, strip_accents: bool = True, words=WORDS, extra=()
):
    """Same word pieces as build_tokenizer, reversed ids, MPNet specials and template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = word_pieces(words, with_paris=with_paris) + list(extra)
    vocab = ["<s>", "<pad>", "</s>", "<unk>"] + pieces[::-1] + ["<mask>"]
    ids = {w: i for i, w in enumerate(vocab)}
    tk = Tokenizer(models.WordPiece(ids, unk_token="<unk>"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # MPNet's own tokenizer.json uses RobertaProcessing: <s> A </s></s> B </s>
    tk.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]))
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_input_names=["input_ids", "attention_mask"],
    )


def build_mpnet(vocab_size: int, seed: int = 0):
    import torch
    from transformers import MPNetConfig, MPNetForQuestionAnswering

    torch.manual_seed(seed)
    config = MPNetConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, pad_token_id=1,
    )
    return MPNetForQuestionAnswering(config).eval()


# Windows and examples that make long contexts overflow into several windows and cut long questions.
WINDOW = WindowConfig(max_seq_length=48, doc_stride=12, max_query_length=10)
LONG = " ".join(f"Sentence {i} tells that the river of Paris flows north, not south." for i in range(25))


def build_bpe_tokenizer():
    """A RoBERTa-style byte-level BPE tokenizer (<s> A </s></s> B </s>, no token types), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [ctx for _, ctx, _ in CONTEXTS] + [q for _, _, qs in CONTEXTS for q, _, _ in qs] + [LONG]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.RobertaProcessing(("</s>", tk.token_to_id("</s>")), ("<s>", tk.token_to_id("<s>")),
                                                     trim_offsets=True, add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])


def examples() -> list[Example]:
    """Every question of CONTEXTS, plus a long context, a long question and accented text."""
    out = [Example(id=f"{title}-{i}", title=title, context=ctx, question=q)
           for title, ctx, qs in CONTEXTS for i, (q, _, _) in enumerate(qs)]
    out.append(Example(id="long", title="t", context=LONG, question="   Which way does the river of Paris flow?"))
    out.append(Example(id="longq", title="t", context=LONG, question=" ".join(["where is the city"] * 8) + "?"))
    out.append(Example(id="accents", title="t", context="Café Zoë — naïve façade, 10–12 €.", question="Whose café?"))
    return out


def reference_features(tokenizer, exs, window: WindowConfig):
    """What transformers' own tokenizer call gives (the run_qa.py way), with questions cut the same way."""
    questions = [ex.question.lstrip() for ex in exs]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    questions = [q[: offs[window.max_query_length - 1][1]] if len(offs) > window.max_query_length else q
                 for q, offs in zip(questions, enc["offset_mapping"])]
    wants_types = "token_type_ids" in tokenizer.model_input_names
    enc = tokenizer(questions, [ex.context for ex in exs], truncation="only_second", max_length=window.max_seq_length,
                    stride=window.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    return_token_type_ids=wants_types, padding=False)
    offsets = [[tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
               for i in range(len(enc["input_ids"]))]
    word_ids = [enc.word_ids(i) for i in range(len(enc["input_ids"]))]
    return (enc["input_ids"], enc["token_type_ids"] if wants_types else None, offsets,
            list(enc["overflow_to_sample_mapping"]), word_ids)


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


def one_line_exit_2(argv, capsys, *needles):
    """Runs the CLI and checks it exits 2 with one line on stderr, no traceback, naming each needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err

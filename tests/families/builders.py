"""Tiny random QA models of every popular extractive-QA family, each with a tokenizer of its real style.

Each family gets a 2-layer, 32-dim random model made with its own transformers config class
and ``AutoModelForQuestionAnswering.from_config``, and a tokenizer trained here, on a small
corpus holding the test contexts, with the ``tokenizers`` library in the family's style:

- WordPiece, BertNormalizer + BertPreTokenizer: BERT, DistilBERT, ELECTRA, MobileBERT, MPNet;
- byte-level BPE (ByteLevel pre-tokenizer): RoBERTa (RobertaProcessing, trimmed offsets) and
  ModernBERT (OLMo-style: a [CLS]/[SEP] template whose offsets keep the word's leading space);
- SentencePiece-style Unigram with Metaspace: XLM-RoBERTa, DeBERTa-v2 (with its convolution
  layer) and -v3, ALBERT (lowercased).

Each is wrapped in the family's fast tokenizer class and saved with the model into one HF
directory. Everything is built once per session: the matrix reuses the directories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from helpers import CONTEXTS, LONG

from pocketqa.export.parity import SAMPLE_EXAMPLES
from pocketqa.training.bridge import BUILTIN_SAMPLES

# Contexts whose spans must map back exactly: CJK, German sharp s, combining marks,
# full-width punctuation, accents (NFC and NFD), a tab and a double space.
# Contexts whose spans must map back exactly: CJK, German sharp s, combining marks,
# full-width punctuation and letters, accents, a tab and runs of spaces. Each intended answer
# is whitespace-delimited, so that every tokenizer style has token boundaries around it.
UNICODE_CONTEXTS = (
    ("cjk", "首都は東京です。 人口は約千四百万人。", "人口は約千四百万人。"),
    ("german", "Die Straße führt über die Brücke nach Gießen und weiter.", "Gießen"),
    ("combining", "The cafe\u0301 in Zu\u0308rich opened in 1921.", "Zu\u0308rich"),
    ("fullwidth", "Ｔｏｋｙｏ （東京） is big，ｖｅｒｙ big！", "（東京）"),
    ("accents", "Beyoncé Giselle Knowles-Carter was born in Houston.", "Knowles-Carter"),
    ("spaces", "The  river\tflows   to Sweden.", "flows   to Sweden."),
)

CORPUS = (
    [ctx for _, ctx, _ in CONTEXTS]
    + [q for _, _, qs in CONTEXTS for q, _, _ in qs]
    + [LONG]
    + [ex.context for ex in SAMPLE_EXAMPLES]
    + [ex.question for ex in SAMPLE_EXAMPLES]
    + list(BUILTIN_SAMPLES)
    + [ctx for _, ctx, _ in UNICODE_CONTEXTS]
    + ["Which city is the capital?", "Where does the river flow?", "Who opened the cafe?"]
)
VOCAB_SIZE = 700  # trainers stop below it on this corpus; big enough for whole words


@dataclass(frozen=True)
class Family:
    """One model family: its config, its tokenizer style and the specials of its template.

    Attributes:
        name: Short name (the matrix's row).
        style: "wordpiece", "bytelevel" or "unigram".
        config: The transformers config class name.
        tokenizer_class: The family's fast tokenizer class name (transformers).
        specials: Role -> token string (cls, sep, pad, unk, mask, and bos/eos where used).
        template: "bert" ([CLS] A [SEP] B [SEP], token types) or "roberta" (<s> A </s></s> B </s>).
        config_kwargs: Family-specific sizes on top of the shared tiny ones.
        lowercase: Whether the tokenizer lowercases (uncased checkpoints, ALBERT).
        input_names: The tokenizer's model_input_names.
    """

    name: str
    style: str
    config: str
    tokenizer_class: str
    specials: dict
    template: str
    config_kwargs: dict = field(default_factory=dict)
    lowercase: bool = False
    input_names: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")


BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>", "bos": "<s>", "eos": "</s>"}
DEBERTA_SPECIALS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]", "bos": "[CLS]", "eos": "[SEP]"}
ALBERT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
NO_TYPES = ("input_ids", "attention_mask")

FAMILIES = {
    f.name: f
    for f in (
        Family("bert", "wordpiece", "BertConfig", "BertTokenizerFast", BERT_SPECIALS, "bert", lowercase=True),
        Family("distilbert", "wordpiece", "DistilBertConfig", "DistilBertTokenizerFast", BERT_SPECIALS, "bert",
               {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}, lowercase=True, input_names=NO_TYPES),
        Family("roberta", "bytelevel", "RobertaConfig", "RobertaTokenizerFast", ROBERTA_SPECIALS, "roberta",
               {"max_position_embeddings": 514}, input_names=NO_TYPES),
        Family("xlm-roberta", "unigram", "XLMRobertaConfig", "XLMRobertaTokenizerFast", ROBERTA_SPECIALS, "roberta",
               {"max_position_embeddings": 514}, input_names=NO_TYPES),
        Family("deberta-v3", "unigram", "DebertaV2Config", "DebertaV2TokenizerFast", DEBERTA_SPECIALS, "bert",
               {"relative_attention": True, "position_buckets": 64, "max_relative_positions": -1,
                "pos_att_type": ["p2c", "c2p"], "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                "share_att_key": True, "type_vocab_size": 0}),
        Family("deberta-v2", "unigram", "DebertaV2Config", "DebertaV2TokenizerFast", DEBERTA_SPECIALS, "bert",
               {"relative_attention": True, "position_buckets": 64, "max_relative_positions": -1,
                "pos_att_type": ["p2c", "c2p"], "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                "share_att_key": True, "type_vocab_size": 0, "conv_kernel_size": 3, "conv_act": "gelu"}),
        Family("electra", "wordpiece", "ElectraConfig", "ElectraTokenizerFast", BERT_SPECIALS, "bert",
               {"embedding_size": 16}, lowercase=True),
        Family("albert", "unigram", "AlbertConfig", "AlbertTokenizerFast", ALBERT_SPECIALS, "bert",
               {"embedding_size": 16}, lowercase=True),
        Family("mobilebert", "wordpiece", "MobileBertConfig", "MobileBertTokenizerFast", BERT_SPECIALS, "bert",
               {"embedding_size": 16, "true_hidden_size": 16, "intra_bottleneck_size": 16,
                "num_feedforward_networks": 1, "intermediate_size": 32}, lowercase=True),
        Family("mpnet", "wordpiece", "MPNetConfig", "MPNetTokenizerFast", ROBERTA_SPECIALS, "roberta",
               {"max_position_embeddings": 514}, lowercase=True, input_names=NO_TYPES),
        Family("modernbert", "bytelevel", "ModernBertConfig", "PreTrainedTokenizerFast", BERT_SPECIALS, "bert",
               {"global_attn_every_n_layers": 1, "local_attention": 64}, input_names=NO_TYPES),
    )
}


def _special_list(family: Family) -> list[str]:
    """The five specials in the family's id order (so pad/cls ids are what its config says)."""
    sp = family.specials
    if family.template == "roberta":
        roles = ("cls", "pad", "sep", "unk", "mask")  # <s> <pad> </s> <unk>, as fairseq's dictionary
    elif family.specials is DEBERTA_SPECIALS:
        roles = ("pad", "cls", "sep", "unk", "mask")
    else:
        roles = ("pad", "unk", "cls", "sep", "mask")
    return [sp[r] for r in roles]


PLACEHOLDERS = [f"<special{i}>" for i in range(5)]
_CORES: dict[tuple[str, bool], str] = {}


def _core(style: str, lowercase: bool, unk_at: int) -> str:
    """A tokenizer of one style trained on CORPUS once per session, as JSON, specials as placeholders.

    Families of one style share it, as real ones share vocabularies (DistilBERT, ELECTRA and
    MobileBERT use BERT's; MPNet's is BERT's renumbered): the trainers break ties differently
    from run to run, so separately trained tokenizers would not segment alike.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    key = (style, lowercase)
    if key in _CORES:
        return _CORES[key]
    unk = PLACEHOLDERS[unk_at]
    if style == "wordpiece":
        tk = Tokenizer(models.WordPiece(unk_token=unk))
        tk.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=PLACEHOLDERS)
    elif style == "bytelevel":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=PLACEHOLDERS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # SentencePiece-style Unigram, as the converted XLM-R / DeBERTa-v3 / ALBERT tokenizer.json
        tk = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
        if lowercase:  # ALBERT: do_lower_case, accents stripped
            steps += [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
        tk.normalizer = normalizers.Sequence(steps)
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=PLACEHOLDERS, unk_token=unk)
    tk.train_from_iterator(list(CORPUS), trainer)
    _CORES[key] = tk.to_str()
    return _CORES[key]


def train_tokenizer(family: Family):
    """The family's fast tokenizer: its style's trained core with the family's specials and template."""
    import transformers
    from tokenizers import Tokenizer, processors

    sp = family.specials
    specials = _special_list(family)
    unk_at = specials.index(sp["unk"])
    core = json.loads(_core(family.style, family.lowercase, unk_at))
    rename = dict(zip(PLACEHOLDERS, specials))
    for added in core["added_tokens"]:
        added["content"] = rename[added["content"]]
    model = core["model"]
    if isinstance(model["vocab"], dict):  # WordPiece, BPE
        model["vocab"] = {rename.get(t, t): i for t, i in model["vocab"].items()}
        if model.get("unk_token") is not None:
            model["unk_token"] = sp["unk"]
    else:  # Unigram: [piece, score] rows
        model["vocab"] = [[rename.get(t, t), score] for t, score in model["vocab"]]
        model["unk_id"] = unk_at
    tk = Tokenizer.from_str(json.dumps(core))
    ids = {t: tk.token_to_id(t) for t in specials}
    cls, sep = sp["cls"], sp["sep"]
    if family.template == "roberta" and family.style == "bytelevel":
        tk.post_processor = processors.RobertaProcessing((sep, ids[sep]), (cls, ids[cls]), trim_offsets=True,
                                                         add_prefix_space=False)
    elif family.template == "roberta":
        tk.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
    else:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, ids[cls]), (sep, ids[sep])])
    tokenizer_cls = getattr(transformers, family.tokenizer_class)
    kwargs = {f"{role}_token": token for role, token in sp.items()}
    return tokenizer_cls(tokenizer_object=tk, model_input_names=list(family.input_names), **kwargs)


def tiny_config(family: Family, tokenizer, seed: int = 0):
    """A 2-layer, 32-dim config of the family, its special ids taken from ``tokenizer``."""
    import transformers

    config_cls = getattr(transformers, family.config)
    kwargs = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    kwargs.update(family.config_kwargs)
    defaults = config_cls()
    for role, fallback in (("cls", "cls"), ("sep", "sep"), ("bos", "cls"), ("eos", "sep")):
        if getattr(defaults, f"{role}_token_id", None) is not None:
            token = family.specials.get(role, family.specials[fallback])
            kwargs[f"{role}_token_id"] = tokenizer.convert_tokens_to_ids(token)
    return config_cls(**kwargs)


def build_model(family: Family, tokenizer, seed: int = 0):
    """A random QA model of the family (eager attention, so that export traces it)."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(seed)
    config = tiny_config(family, tokenizer)
    model = AutoModelForQuestionAnswering.from_config(config)
    with torch.no_grad():  # a sharper head than random init, so answers are clear-cut, not ties
        qa_head(model).weight.mul_(20)
    return model.eval()


def qa_head(model):
    """The linear layer that gives the start/end logits (ModernBERT calls it ``classifier``)."""
    return getattr(model, "qa_outputs", None) or model.classifier


def save_family(family: Family, path: Path, seed: int = 0) -> Path:
    """Trains the tokenizer, builds the model and saves both into ``path`` (an HF directory)."""
    tokenizer = train_tokenizer(family)
    build_model(family, tokenizer, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


"""A vocabulary bridge: run a teacher whose tokenizer numbers tokens differently.

all-mpnet-base-v2 (the teacher) and MiniLM/BERT-uncased students cut text into
the same WordPiece tokens at the same character offsets; only the ids differ (MPNet's
vocabulary is BERT-uncased's shifted by 4, plus its own special tokens), and so does the
pair template:

    student  [CLS] question [SEP] context [SEP]
    teacher  <s>   question </s></s> context </s>

Decision: the teacher never re-tokenizes. Its window is built from the student's window:
ids are mapped through a lookup table (by token string; special tokens by role:
cls/sep/pad/unk/mask), and the teacher's own special tokens are laid around the two
segments. The teacher window therefore holds exactly the same question and context
tokens as the student's, and is as many positions longer as its template has extra
special tokens (one here: 384 -> 385). A ``position_index`` [B, T_student] gives, for
every student position, the teacher position holding the same token: question and
context tokens map one to one, CLS to the teacher's first prefix token, each separator
to the first token of the teacher's matching separator run (the extra ``</s>`` is never
gathered), padding to padding. :meth:`VocabBridge.gather` uses it to bring teacher
logits, hidden states or attention maps back onto student positions.

Building a bridge first checks, on sample texts, that the two tokenizers really segment
alike; if not, it refuses with a PocketQAError rather than distilling from garbage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pocketqa.errors import PocketQAError
from pocketqa.inference.spans import trim_span

ROLES = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token")

# Used when no sample texts are given: punctuation, digits, accents, hyphens, quotes,
# CJK and symbols, where WordPiece tokenizers most often disagree.
BUILTIN_SAMPLES = (
    "The Normans (Norman: Nourmands; French: Normands) gave their name to Normandy, a region in France.",
    "In the 10th and 11th centuries, 2,500 knights paid 3.5% tax — about £1,200 in 1066.",
    "Beyoncé Giselle Knowles-Carter (born September 4, 1981) is an American singer.",
    "What's the \"largest\" city? It's São Paulo; Zürich isn't!",
    "東京 is Japan's capital; Москва is Russia's. Ελλάδα, 한국어, العربية.",
    "e.g. U.S.A., Mr. O'Neill's co-op @ 5:30pm #tag $12.00 <b>bold</b> [1] {x}",
    "   leading spaces\tand\ttabs\nand newlines   ",
    "Emoji 🙂 and symbols © ® ™ ± ∞ µm",
)


@dataclass(frozen=True)
class PairTemplate:
    """The special tokens a tokenizer puts around a (question, context) pair.

    Attributes:
        prefix / middle / suffix: Special token ids before A, between A and B, after B.
        prefix_types / middle_types / suffix_types: Their token type ids.
        a_type / b_type: Token type ids of the question and context tokens.
        text: Human-readable form, e.g. ``[CLS] A [SEP] B [SEP]``.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    a_type: int
    b_type: int
    text: str

    @classmethod
    def from_tokenizer(cls, tokenizer) -> PairTemplate:
        """Reads the template by encoding a probe pair and splitting on ``sequence_ids``."""
        enc = tokenizer("a", "b", return_token_type_ids=True)
        ids, seqs = enc["input_ids"], enc.sequence_ids()
        types = enc.get("token_type_ids") or [0] * len(ids)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        runs: list[tuple[object, list[int]]] = []  # (sequence id or None, positions)
        for i, s in enumerate(seqs):
            if runs and runs[-1][0] == s:
                runs[-1][1].append(i)
            else:
                runs.append((s, [i]))
        kinds = [s for s, _ in runs]
        core = [k for k in kinds if k is not None]
        if core != [0, 1]:
            raise PocketQAError(
                f"{type(tokenizer).__name__}: pair template {' '.join(tokens)} is not "
                "'specials A specials B specials'; the vocabulary bridge supports only that form"
            )
        a = kinds.index(0)
        b = kinds.index(1)
        segments = [[], [], []]  # positions of prefix, middle, suffix
        for k, (s, pos) in enumerate(runs):
            if s is None:
                segments[0 if k < a else 1 if k < b else 2].extend(pos)
        text = []
        for name, seg in zip(("A", "B", ""), segments):
            if seg:
                text.append("".join(tokens[i] for i in seg))
            if name:
                text.append(name)
        return cls(
            prefix=tuple(ids[i] for i in segments[0]),
            middle=tuple(ids[i] for i in segments[1]),
            suffix=tuple(ids[i] for i in segments[2]),
            prefix_types=tuple(types[i] for i in segments[0]),
            middle_types=tuple(types[i] for i in segments[1]),
            suffix_types=tuple(types[i] for i in segments[2]),
            a_type=types[runs[a][1][0]],
            b_type=types[runs[b][1][0]],
            text=" ".join(text),
        )


def _id_table(student_tok, teacher_tok) -> tuple[np.ndarray, list[str]]:
    """student id -> teacher id, by role for special tokens, else by token string.

    Returns the table and the student tokens the teacher lacks (mapped to its unk).
    """
    teacher_vocab = teacher_tok.get_vocab()
    student_vocab = student_tok.get_vocab()
    t_unk = teacher_tok.unk_token_id
    if t_unk is None:
        raise PocketQAError(f"teacher tokenizer {type(teacher_tok).__name__} has no unk token to map unknown ids to")
    size = max(max(student_vocab.values()) + 1, len(student_tok))
    table = np.full(size, -1, dtype=np.int64)
    for token, sid in student_vocab.items():
        table[sid] = teacher_vocab.get(token, -1)
    for role in ROLES:
        sid = getattr(student_tok, f"{role}_id", None)
        if sid is not None:
            tid = getattr(teacher_tok, f"{role}_id", None)
            table[sid] = t_unk if tid is None else tid
    by_id = {sid: token for token, sid in student_vocab.items()}
    unmapped = sorted(by_id.get(i, f"<id {i}>") for i in np.flatnonzero(table < 0))
    table[table < 0] = t_unk
    return table, unmapped


def _spans(tokenizer, text: str, ids: Sequence[int], offsets, blank: dict[int, bool]) -> list[tuple[int, int] | None]:
    """Per token, the characters it stands for without surrounding whitespace (None: whitespace only).

    Whether a token's offsets include the space before its word is a detail of the
    tokenizer's post-processing (RoBERTa's trims it, ModernBERT's and DeBERTa-v2/v3's keep
    it), not of its segmentation. A token that stands for a space alone (a lone "▁" or "Ġ")
    has no characters to compare: transformers' XLM-R pipeline splits on whitespace before
    Metaspace, so its lone "▁" points at the next word's first letter. ``blank`` caches, per
    id, whether the token decodes to whitespace only.
    """
    out = []
    for i, (a, b) in zip(ids, offsets):
        if i not in blank:
            blank[i] = not tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)]).strip()
        out.append(None if blank[i] else trim_span(text, int(a), int(b)))
    return out


def _first_mismatch(s_offsets, t_offsets, mapped, t_ids) -> int:
    """First token index where mapped student ids or offsets differ from the teacher's."""
    n = min(len(mapped), len(t_ids))
    for k in range(n):
        if mapped[k] != t_ids[k] or s_offsets[k] != t_offsets[k]:
            return k
    return n


class VocabBridge:
    """Maps student windows to teacher windows and teacher outputs back to student positions.

    Build it with :meth:`build`, which checks the two tokenizers segment alike.
    """

    def __init__(
        self,
        table: np.ndarray,
        student: PairTemplate,
        teacher: PairTemplate,
        teacher_pad_id: int,
        teacher_input_names: Sequence[str],
        teacher_max_length: int | None = None,
        unmapped: Sequence[str] = (),
    ):
        for name, s_seg, t_seg in (
            ("prefix", student.prefix, teacher.prefix),
            ("separator", student.middle, teacher.middle),
            ("suffix", student.suffix, teacher.suffix),
        ):
            if s_seg and not t_seg:
                raise PocketQAError(
                    f"the student template {student.text} has a {name} but the teacher template "
                    f"{teacher.text} has none; its logits would have no teacher position to come from"
                )
        if not student.middle:
            raise PocketQAError(f"student template {student.text} has no separator between question and context")
        self.student = student
        self.teacher = teacher
        self.teacher_pad_id = int(teacher_pad_id)
        self.teacher_input_names = tuple(teacher_input_names)
        self.teacher_max_length = teacher_max_length
        self.unmapped = tuple(unmapped)
        self._table = torch.as_tensor(table, dtype=torch.long)
        self._tables: dict[torch.device, torch.Tensor] = {}
        t = teacher
        self._specials = torch.tensor(t.prefix + t.middle + t.suffix, dtype=torch.long)
        self._special_types = torch.tensor(t.prefix_types + t.middle_types + t.suffix_types, dtype=torch.long)

    @classmethod
    def build(
        cls,
        student_tok,
        teacher_tok,
        sample_texts: Sequence[str] | None = None,
        max_samples: int = 200,
    ) -> VocabBridge:
        """Builds the id table and checks that both tokenizers segment alike.

        Args:
            student_tok: The student's fast tokenizer (its windows are the reference).
            teacher_tok: The teacher's fast tokenizer.
            sample_texts: Texts to compare on (e.g. questions and contexts of the training
                set); the first ``max_samples`` are used. None: built-in samples.
            max_samples: How many sample texts to compare.

        Raises:
            PocketQAError: when a sample is cut into different tokens or offsets, or a
                template cannot be bridged; the message shows the first difference.
        """
        for tok, who in ((student_tok, "student"), (teacher_tok, "teacher")):
            if not getattr(tok, "is_fast", False):
                raise PocketQAError(f"the {who} tokenizer {type(tok).__name__} is not fast; the bridge needs offsets")
        table, unmapped = _id_table(student_tok, teacher_tok)
        texts = list(BUILTIN_SAMPLES if sample_texts is None else sample_texts)[:max_samples]
        if not texts:
            raise PocketQAError("no sample texts to compare the student and teacher tokenizers on")
        kwargs = {"add_special_tokens": False, "return_offsets_mapping": True}
        s_enc = student_tok(texts, **kwargs)
        t_enc = teacher_tok(texts, **kwargs)
        bad = []
        s_blank: dict[int, bool] = {}
        t_blank: dict[int, bool] = {}
        for i, text in enumerate(texts):
            s_ids, t_ids = s_enc["input_ids"][i], t_enc["input_ids"][i]
            s_off = _spans(student_tok, text, s_ids, s_enc["offset_mapping"][i], s_blank)
            t_off = _spans(teacher_tok, text, t_ids, t_enc["offset_mapping"][i], t_blank)
            mapped = table[s_ids].tolist()
            if mapped != list(t_ids) or s_off != t_off:
                bad.append((i, text, s_ids, s_off, t_ids, t_off, mapped))
        if bad:
            i, text, s_ids, s_off, t_ids, t_off, mapped = bad[0]
            k = _first_mismatch(s_off, t_off, mapped, t_ids)
            s_tok = student_tok.convert_ids_to_tokens(s_ids[k : k + 3])
            t_tok = teacher_tok.convert_ids_to_tokens(t_ids[k : k + 3])
            raise PocketQAError(
                f"student ({type(student_tok).__name__}) and teacher ({type(teacher_tok).__name__}) tokenizers "
                f"segment {len(bad)} of {len(texts)} sample texts differently; first: text {i} {text[:60]!r} at "
                f"token {k}: student {s_tok} {s_off[k : k + 3]} vs teacher {t_tok} "
                f"{t_off[k : k + 3]}. The vocabulary bridge needs identical segmentation "
                "(same vocabulary, casing and normalization); use a teacher that shares the "
                "student's tokenizer, or give the student the teacher's tokenizer"
            )
        max_len = getattr(teacher_tok, "model_max_length", None)
        return cls(
            table,
            PairTemplate.from_tokenizer(student_tok),
            PairTemplate.from_tokenizer(teacher_tok),
            teacher_pad_id=teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else 0,
            teacher_input_names=teacher_tok.model_input_names,
            teacher_max_length=max_len if max_len is not None and max_len < 1_000_000 else None,
            unmapped=unmapped,
        )

    @property
    def extra_positions(self) -> int:
        """How many positions longer a teacher window is than its student window (may be < 0)."""
        s, t = self.student, self.teacher
        return (len(t.prefix) + len(t.middle) + len(t.suffix)) - (len(s.prefix) + len(s.middle) + len(s.suffix))

    def describe(self) -> str:
        """One line for logs: both templates, the width change and the unmapped count."""
        return (
            f"student {self.student.text} -> teacher {self.teacher.text} ({self.extra_positions:+d} positions per "
            f"window; {len(self._table)} ids mapped, {len(self.unmapped)} with no teacher token)"
        )

    def map_ids(self, student_ids: torch.Tensor) -> torch.Tensor:
        """Student ids -> teacher ids, elementwise (one table lookup)."""
        student_ids = torch.as_tensor(student_ids)
        table = self._tables.get(student_ids.device)
        if table is None:
            table = self._tables[student_ids.device] = self._table.to(student_ids.device)
        return table[student_ids.long()]

    def teacher_batch(self, student_batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Builds teacher inputs holding the same tokens as a right-padded student batch.

        Args:
            student_batch: ``input_ids`` [B, T] and ``attention_mask`` [B, T] (other keys are
                ignored), as made by ``features.pad_batch``; numpy arrays are accepted.

        Returns:
            (teacher_batch, position_index): the teacher's ``input_ids``,
            ``attention_mask`` (and ``token_type_ids`` when it takes them), each
            [B, T + extra_positions]; and a LongTensor [B, T] giving for each student
            position the teacher position of the same token (see the module docstring).

        Raises:
            PocketQAError: when a row does not follow the student's pair template (no
                separator, left padding, not a question/context pair).
        """
        ids = torch.as_tensor(student_batch["input_ids"]).long()
        if ids.dim() != 2:
            raise PocketQAError(f"student input_ids must be [batch, length], found shape {tuple(ids.shape)}")
        device = ids.device
        mask = student_batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask, device=device).long()
        s, t = self.student, self.teacher
        p, m, n_suf = len(s.prefix), len(s.middle), len(s.suffix)
        P, M = len(t.prefix), len(t.middle)
        B, T = ids.shape
        lengths = mask.sum(1)
        j = torch.arange(T, device=device).unsqueeze(0).expand(B, T)

        # Question end: the first student separator token after the prefix.
        is_sep = (ids == s.middle[0]) & (j >= p) & (j < lengths[:, None])
        a_end = is_sep.long().argmax(1)
        b_end = lengths - n_suf
        self._check_rows(ids, mask, is_sep.any(1), a_end, b_end, lengths)

        d0 = P - p
        d1 = d0 + (M - m)
        d2 = self.extra_positions
        width = T + d2
        if self.teacher_max_length is not None and int(lengths.max()) + d2 > self.teacher_max_length:
            raise PocketQAError(
                f"teacher windows would be {int(lengths.max()) + d2} tokens, over the teacher's limit of "
                f"{self.teacher_max_length}; lower max_seq_length to {self.teacher_max_length - d2} or less"
            )

        # Student -> teacher positions, segment by segment.
        a_end_, b_end_ = a_end[:, None], b_end[:, None]
        index = torch.where(
            j < p,
            j.clamp(max=max(P - 1, 0)),
            torch.where(
                j < a_end_,
                j + d0,
                torch.where(
                    j < a_end_ + m,
                    a_end_ + d0 + (j - a_end_).clamp(max=max(M - 1, 0)),
                    torch.where(
                        j < b_end_,
                        j + d1,
                        torch.where(
                            j < lengths[:, None],
                            b_end_ + d1 + (j - b_end_).clamp(max=max(len(t.suffix) - 1, 0)),
                            j + d2,
                        ),
                    ),
                ),
            ),
        )

        # Teacher windows: mapped question/context tokens, the teacher's own specials, padding.
        u = torch.arange(width, device=device).unsqueeze(0).expand(B, width)
        ta_end = a_end_ + d0  # first teacher separator position
        tb_start = ta_end + M
        tb_end = b_end_ + d1  # first teacher suffix position
        t_len = (lengths + d2)[:, None]
        in_a = (u >= P) & (u < ta_end)
        in_b = (u >= tb_start) & (u < tb_end)
        source = torch.where(in_a, u - d0, u - d1).clamp(0, T - 1)
        mapped = self.map_ids(ids.gather(1, source))
        special_at = torch.where(u < P, u, torch.where(u < tb_start, P + (u - ta_end), P + M + (u - tb_end)))
        is_special = (u < P) | ((u >= ta_end) & (u < tb_start)) | ((u >= tb_end) & (u < t_len))
        n_special = len(self._specials)
        special_at = special_at.clamp(0, max(n_special - 1, 0))
        specials = self._specials.to(device)
        special_ids = specials[special_at] if n_special else torch.zeros_like(u)
        pad = torch.full_like(u, self.teacher_pad_id)
        input_ids = torch.where(in_a | in_b, mapped, torch.where(is_special, special_ids, pad))
        attention = (u < t_len).long()
        out = {"input_ids": input_ids, "attention_mask": attention}
        if "token_type_ids" in self.teacher_input_names:
            types = self._special_types.to(device)
            special_types = types[special_at] if n_special else torch.zeros_like(u)
            zeros = torch.zeros_like(u)
            segment_types = torch.where(in_b, zeros + t.b_type, torch.where(is_special, special_types, zeros))
            out["token_type_ids"] = torch.where(in_a, zeros + t.a_type, segment_types)
        return out, index

    def _check_rows(self, ids, mask, has_sep, a_end, b_end, lengths) -> None:
        """Refuses rows that are not ``prefix A middle B suffix`` followed by right padding."""
        s = self.student
        B, T = ids.shape
        j = torch.arange(T, device=ids.device).unsqueeze(0)
        ok = has_sep & (b_end >= a_end + len(s.middle))
        ok &= (mask == (j < lengths[:, None]).long()).all(1)  # right padding only
        for k, tok in enumerate(s.prefix):
            ok &= ids[:, k] == tok
        for k, tok in enumerate(s.middle):
            ok &= ids.gather(1, (a_end + k).clamp(max=T - 1)[:, None])[:, 0] == tok
        for k, tok in enumerate(s.suffix):
            ok &= ids.gather(1, (b_end + k).clamp(0, T - 1)[:, None])[:, 0] == tok
        if not bool(ok.all()):
            row = int((~ok).nonzero()[0, 0])
            raise PocketQAError(
                f"student batch row {row} does not follow the student pair template {s.text} with right "
                "padding; build windows with features.make_features and features.pad_batch"
            )

    @staticmethod
    def gather(teacher_tensor: torch.Tensor, position_index: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Picks, along ``dim``, the teacher positions that hold each student position's token.

        Args:
            teacher_tensor: e.g. logits [B, T_teacher], hidden states [B, T_teacher, H];
                for attention maps [B, heads, T_teacher, T_teacher] call with dim=2, then
                dim=3.
            position_index: [B, T_student] from :meth:`teacher_batch`.
            dim: The sequence dimension to gather along (not 0).

        Returns:
            The tensor with ``dim`` of size T_student: out[b, ..., i, ...] is
            teacher_tensor[b, ..., position_index[b, i], ...].
        """
        dim = dim % teacher_tensor.dim()
        if dim == 0:
            raise PocketQAError("gather works along a sequence dimension, not the batch dimension 0")
        B, T = position_index.shape
        view = [1] * teacher_tensor.dim()
        view[0], view[dim] = B, T
        size = list(teacher_tensor.shape)
        size[dim] = T
        index = position_index.to(teacher_tensor.device).view(view).expand(size)
        return teacher_tensor.gather(dim, index)

"""Training losses as small pure functions; tensor shapes are in the docstrings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of the gold start and end token, averaged over the two ends.

    The extractive-QA loss of BERT (and of transformers' ``*ForQuestionAnswering``):
    ``(CE(start_logits, start) + CE(end_logits, end)) / 2``. Unanswerable windows point
    both labels at the CLS position, so "no answer" is learnt as an ordinary class.
    Logits are upcast to float32 so that bf16/fp16 autocast does not round the log-sum-exp.

    With ``mask`` (the attention mask), padding positions are left out of the softmax, so
    the loss does not depend on how far a batch is padded. transformers' QA heads keep
    them in, which is harmless only when every batch is padded to the same length (the
    run_qa.py default of padding everything to max_seq_length).

    Args:
        start_logits: [batch, seq_len] scores of each token being the answer start.
        end_logits: [batch, seq_len] scores of each token being the answer end.
        start_positions: [batch] int gold start token, each in [0, seq_len).
        end_positions: [batch] int gold end token, each in [0, seq_len).
        mask: Optional [batch, seq_len], 1 for real tokens and 0 for padding.
        reduction: "mean" (over the batch) or "sum" (per-example losses added, e.g. to
            normalise by a global batch size across gradient-accumulation steps).

    Returns:
        A scalar tensor.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', found {reduction!r}")
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if mask is not None:
        padding = mask == 0
        lowest = torch.finfo(torch.float32).min  # exp() of it is exactly 0, and no inf - inf NaNs
        start_logits = start_logits.masked_fill(padding, lowest)
        end_logits = end_logits.masked_fill(padding, lowest)
    start = F.cross_entropy(start_logits, start_positions, reduction=reduction)
    end = F.cross_entropy(end_logits, end_positions, reduction=reduction)
    return (start + end) / 2


# -- distillation losses (TinyBERT stage 1 and 2) --------------------------------------


def masked_kl_div(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher ‖ student) between answer-position distributions, over valid positions only.

    Both logit rows are divided by ``temperature`` and turned into distributions over the
    positions where ``mask`` is true (context tokens and CLS); question and padding
    positions get probability 0 in both, so their logits do not matter at all. (Haystack's
    DistillationTrainer takes the softmax over the whole padded window, question included.)
    The result is multiplied by T² so gradient magnitudes do not shrink with T (Hinton et
    al. 2015).

    Args:
        student_logits: [batch, seq_len] float.
        teacher_logits: [batch, seq_len] float (treated as a constant target).
        mask: [batch, seq_len] bool, True where a position may hold the answer. Every row
            needs at least one True.
        temperature: T > 0.

    Returns:
        Scalar: mean over the batch of ``sum_i p_T(i) * (log p_T(i) - log p_S(i))``, times T².
    """
    neg = torch.finfo(torch.float32).min
    student = (student_logits.float() / temperature).masked_fill(~mask, neg)
    teacher = (teacher_logits.detach().float() / temperature).masked_fill(~mask, neg)
    log_ps = torch.log_softmax(student, dim=-1)
    log_pt = torch.log_softmax(teacher, dim=-1)
    # torch.where, not a product: masked terms must not turn into 0 * (huge - huge) = nan.
    terms = torch.where(mask, log_pt.exp() * (log_pt - log_ps), torch.zeros_like(log_pt))
    return terms.sum(dim=-1).mean() * temperature**2


def mix_losses(kd: torch.Tensor, hard: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """``kd_weight * kd + (1 - kd_weight) * hard``, leaving out a term whose weight is 0.

    With w = 1 (pure distillation) the span loss is only logged; the product form would
    turn an inf there into 0 * inf = nan, in the loss and in every gradient.

    Args:
        kd: Scalar distillation loss.
        hard: Scalar span (label) loss.
        kd_weight: w in [0, 1].

    Returns:
        Scalar.
    """
    if kd_weight == 1:
        return kd
    if kd_weight == 0:
        return hard
    return kd_weight * kd + (1 - kd_weight) * hard


def hidden_mse(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    projection: torch.nn.Module | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between hidden states (or embedding outputs), over real tokens.

    Args:
        student_hidden: [batch, seq_len, student_dim] float.
        teacher_hidden: [batch, seq_len, teacher_dim] float (treated as a constant target).
        projection: Maps student_dim -> teacher_dim (a learned ``nn.Linear`` when the widths
            differ, TinyBERT's W_h); None when they are equal.
        mask: [batch, seq_len] bool, True for real tokens; None averages over all positions
            (as TinyBERT and Haystack do, padding included).

    Returns:
        Scalar: the squared error averaged over unmasked tokens and the teacher's dimensions.
    """
    student = student_hidden.float()  # also matches an fp32 projection under bf16 autocast
    if projection is not None:
        student = projection(student)
    sq = (student.float() - teacher_hidden.detach().float()) ** 2
    if mask is None:
        return sq.mean()
    keep = mask.unsqueeze(-1)
    total = torch.where(keep, sq, torch.zeros_like(sq)).sum()
    return total / (keep.sum() * sq.shape[-1]).clamp(min=1)


def attention_mse(student_att: torch.Tensor, teacher_att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between attention matrices, over pairs of real tokens.

    Works for pre-softmax scores and for post-softmax probabilities alike. Pairs whose query
    or key is padding are left out of the sum and of the count: TinyBERT instead sets masked
    scores (about -10000) to 0 in both matrices and averages over every pair, so its loss
    shrinks as padding grows; here the scale does not depend on how a batch is padded.

    Args:
        student_att: [batch, heads, seq_len, seq_len] float (query x key).
        teacher_att: [batch, heads, seq_len, seq_len] float, same number of heads.
        mask: [batch, seq_len] bool, True for real tokens.

    Returns:
        Scalar: the squared error averaged over heads and unmasked (query, key) pairs.
    """
    pairs = (mask[:, None, :, None] & mask[:, None, None, :]).expand_as(student_att)
    sq = (student_att.float() - teacher_att.detach().float()) ** 2
    total = torch.where(pairs, sq, torch.zeros_like(sq)).sum()
    return total / pairs.sum().clamp(min=1)

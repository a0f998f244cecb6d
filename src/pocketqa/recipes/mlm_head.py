"""Fitting a masked-LM head on a frozen encoder (``pocketqa mlm-head``).

Augmentation (``pocketqa augment --mlm``) needs a masked LM; a sentence encoder such as the
pip all-MiniLM-L6-v2 ships without its MLM head. ``fit_mlm_head`` loads the encoder as its
masked-LM class, freezes every encoder weight, keeps the decoder tied to the frozen input
embeddings and trains only the head's transform (dense + LayerNorm) and output bias on
masked SQuAD contexts. Held-out masked-token accuracy is measured before and after.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from pocketqa.augment.mlm import default_device, head_module, load_masked_lm, special_template
from pocketqa.data.formats import load_examples
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.recipes.configs import MLMHeadConfig
from pocketqa.models import save_qa_model
from pocketqa.training.optim import build_optimizer, build_scheduler
from pocketqa.training.runlog import progress_bar

WEIGHT_DECAY = 0.01
EVAL_SEED = 1234  # the same masks before and after training




def fit_mlm_head(
    encoder: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: MLMHeadConfig,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Fits the MLM head of a frozen encoder on SQuAD contexts and saves an HF masked-LM dir.

    The encoder (e.g. ``pip:all-MiniLM-L6-v2``, a BertModel) is loaded as its masked-LM
    class with all encoder weights frozen; the decoder stays tied to the (frozen) input
    embeddings, so only the head's transform (dense + LayerNorm) and output bias train.
    The bias starts at the log unigram frequencies of the training tokens, so step 0
    already predicts the frequency prior. The last ``eval_contexts`` distinct contexts
    are held out; masked-token top-1 and top-k accuracy on them is measured before and
    after training.

    Returns:
        The report saved under ``mlm_head`` in ``out/pocketqa.json``.
    """
    import torch
    import torch.nn.functional as F

    contexts = list(dict.fromkeys(ex.context for ex in load_examples(data)))
    if len(contexts) <= config.eval_contexts:
        raise ConfigError(
            f"{data}: {len(contexts)} distinct contexts, need more than --eval-contexts ({config.eval_contexts})"
        )
    device = device or default_device()
    model, tokenizer, head = _load_frozen_encoder(encoder, device)
    prefix, suffix = special_template(tokenizer)
    length = config.max_length - len(prefix) - len(suffix)
    train_chunks = _chunk_contexts(tokenizer, contexts[: -config.eval_contexts], length)
    eval_chunks = _chunk_contexts(tokenizer, contexts[-config.eval_contexts :], length)
    _start_bias_at_unigram_prior(model, train_chunks)
    masking = (prefix, suffix, tokenizer.mask_token_id, tokenizer.pad_token_id or 0, config.mask_prob)
    token_types = "token_type_ids" in tokenizer.model_input_names

    before = _masked_accuracy(model, head, eval_chunks, masking, config, token_types)
    optimizer = build_optimizer(model, config.lr, WEIGHT_DECAY)  # the head: all that is left trainable
    scheduler = build_scheduler(optimizer, max(1, config.steps // 20), config.steps, shape="cosine", floor=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    bar = progress_bar(config.steps, desc="mlm-head", enabled=progress)
    start = time.perf_counter()
    head.train()
    for _ in range(config.steps):
        pick = torch.randint(len(train_chunks), (config.batch_size,), generator=generator).tolist()
        ids, att, chosen, labels = _mask_batch([train_chunks[i] for i in pick], *masking, generator)
        logits = _masked_logits(model, head, ids, att, chosen, token_types)
        loss = F.cross_entropy(logits.float(), labels[chosen].to(logits.device))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        if progress:  # .item() waits for the device: only for the bar
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    after = _masked_accuracy(model, head, eval_chunks, masking, config, token_types)

    report = {
        "encoder": str(encoder),
        "data": str(data),
        "config": asdict(config),
        "device": device,
        "train_chunks": len(train_chunks),
        "eval_contexts": config.eval_contexts,
        "train_seconds": round(time.perf_counter() - start, 1),
        "before": before,
        "after": after,
    }
    for p in model.parameters():
        p.requires_grad_(True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_qa_model(model, tokenizer, out, {"mlm_head": report})
    return report


def _load_frozen_encoder(encoder: str, device: str):
    """(masked-LM model, tokenizer, head module): every weight frozen but the head's own.

    The decoder weight is tied to the input embeddings and stays frozen with them.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head is missing on purpose: we fit it here
        model, tokenizer, _ = load_masked_lm(encoder, device=device, dtype=torch.float32)
    head = head_module(model)
    if head is None:
        raise PocketQAError(f"{encoder}: its masked-LM class has no single head module to fit")
    tied = model.get_input_embeddings().weight
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        if p is not tied:
            p.requires_grad_(True)
    return model, tokenizer, head


def _start_bias_at_unigram_prior(model, chunks: list[list[int]]) -> None:
    """Sets the output bias to the log frequency of each token in ``chunks`` (add-one smoothed)."""
    import torch

    output_bias = model.get_output_embeddings().bias
    counts = torch.ones(output_bias.shape[0])
    for chunk in chunks:
        counts.index_add_(0, torch.tensor(chunk), torch.ones(len(chunk)))
    with torch.no_grad():
        output_bias.copy_((counts / counts.sum()).log().to(output_bias.device))


def _chunk_contexts(tokenizer, contexts: list[str], length: int) -> list[list[int]]:
    """Tokenizes contexts and cuts each into pieces of at most ``length`` tokens (no specials)."""
    ids = tokenizer(contexts, add_special_tokens=False, verbose=False)["input_ids"]
    return [seq[i : i + length] for seq in ids for i in range(0, len(seq), length) if len(seq[i : i + length]) >= 4]


def _mask_batch(chunks, prefix, suffix, mask_id, pad_id, mask_prob, generator):
    """Builds one masked batch: every chosen token becomes [MASK] (we only ever predict [MASK]).

    Returns input_ids [B, T], attention_mask [B, T], masked positions bool [B, T], labels [B, T].
    """
    import torch

    width = max(len(c) for c in chunks) + len(prefix) + len(suffix)
    input_ids = torch.full((len(chunks), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    chosen = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, chunk in enumerate(chunks):
        row = torch.tensor(prefix + chunk + suffix)
        input_ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        pick = torch.rand(len(chunk), generator=generator) < mask_prob
        if not pick.any():
            pick[torch.randint(len(chunk), (1,), generator=generator)] = True
        chosen[i, len(prefix) : len(prefix) + len(chunk)] = pick
    labels = input_ids.clone()
    input_ids[chosen] = mask_id
    return input_ids, attention, chosen, labels


def _masked_logits(model, head, input_ids, attention, chosen, token_types: bool):
    """Vocabulary logits [n_masked, vocab] at the masked positions; the frozen encoder runs without grad."""
    import torch

    device = model.get_input_embeddings().weight.device
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
    if token_types:
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    with torch.no_grad():
        hidden = model.base_model(**inputs)[0]
    return head(hidden[chosen.to(device)])


def _masked_accuracy(model, head, chunks, masking, config: MLMHeadConfig, token_types: bool) -> dict:
    """Top-1 / top-k accuracy and mean loss on the held-out pieces, with fixed masks."""
    import torch
    import torch.nn.functional as F

    head.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    hits1 = hitsk = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for b in range(0, len(chunks), config.batch_size):
            ids, att, chosen, labels = _mask_batch(chunks[b : b + config.batch_size], *masking, generator)
            logits = _masked_logits(model, head, ids, att, chosen, token_types).float()
            gold = labels[chosen].to(logits.device)
            loss_sum += F.cross_entropy(logits, gold, reduction="sum").item()
            top = logits.topk(config.top_k, dim=1).indices
            hits1 += (top[:, 0] == gold).sum().item()
            hitsk += (top == gold[:, None]).any(1).sum().item()
            total += len(gold)
    head.train()
    return {
        "masked_tokens": total,
        "top1_accuracy": hits1 / total,
        f"top{config.top_k}_accuracy": hitsk / total,
        "loss": loss_sum / total,
    }

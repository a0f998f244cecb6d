"""``pocketqa mlm-head``: fit the masked-LM head of a frozen encoder on SQuAD contexts.

A sentence encoder such as the pip all-MiniLM-L6-v2 ships without its LM head, so it
cannot propose words for augmentation. This recipe fits a BERT MLM head (transform +
output bias; the decoder is tied to the frozen input embeddings) from SQuAD contexts and
reports masked-token accuracy on held-out contexts before and after.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from pocketqa.augment.mlm import default_device, lm_head_module, load_masked_lm, special_template
from pocketqa.config import setting, validate
from pocketqa.data.squad import load_squad
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.modeldir import update_meta


@dataclass
class MLMHeadConfig:
    """Settings of ``pocketqa mlm-head``."""

    steps: int = setting(300, "optimizer steps", group="training")
    batch_size: int = setting(32, "masked chunks per step", group="training")
    lr: float = setting(2e-3, "peak learning rate of the head", group="training")
    max_length: int = setting(128, "tokens per chunk, special tokens included", group="masking")
    mask_prob: float = setting(0.15, "share of each chunk's tokens masked", group="masking", flag=False)
    eval_contexts: int = setting(200, "held-out contexts for the accuracy", group="evaluation")
    seed: int = setting(0, "seed of the training chunks and masks", group="training")
    top_k: int = setting(15, "the k of the reported top-k accuracy", group="evaluation", flag=False)

    def __post_init__(self) -> None:
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
        """Range checks of the fields that have the right type (``skip``: already reported)."""
        checks = [
            ("steps", self.steps >= 1, f"--steps must be >= 1, found {self.steps}"),
            ("batch_size", self.batch_size >= 1, f"--batch-size must be >= 1, found {self.batch_size}"),
            ("lr", self.lr > 0, f"--lr must be > 0, found {self.lr}"),
            ("max_length", self.max_length >= 8, f"--max-length must be >= 8, found {self.max_length}"),
            ("mask_prob", 0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), found {self.mask_prob}"),
            ("eval_contexts", self.eval_contexts >= 1, f"--eval-contexts must be >= 1, found {self.eval_contexts}"),
            ("top_k", self.top_k >= 1, f"top_k must be >= 1, found {self.top_k}"),
        ]
        return [message for name, ok, message in checks if name not in skip and not ok]


# The head's own optimizer and schedule; pocketqa.training.optim's builders can replace these two.


def build_optimizer(params, lr: float):
    """AdamW over the head's trainable parameters (weight decay 0.01)."""
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up over ``warmup_steps``, then cosine decay to 10% of the peak at ``total_steps``."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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

    contexts = list(dict.fromkeys(ex.context for ex in load_squad(data)))
    if len(contexts) <= config.eval_contexts:
        raise ConfigError(
            f"{data}: {len(contexts)} distinct contexts, need more than --eval-contexts ({config.eval_contexts})"
        )
    device = device or default_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head is missing on purpose: we fit it here
        model, tokenizer, _ = load_masked_lm(encoder, device=device, dtype=torch.float32)
    head = lm_head_module(model)
    if head is None:
        raise PocketQAError(f"{encoder}: its masked-LM class has no single head module to fit")
    tied = model.get_input_embeddings().weight
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for p in head.parameters() if p is not tied]
    for p in trainable:
        p.requires_grad_(True)

    prefix, suffix = special_template(tokenizer)
    length = config.max_length - len(prefix) - len(suffix)
    train_chunks = _chunk_contexts(tokenizer, contexts[: -config.eval_contexts], length)
    eval_chunks = _chunk_contexts(tokenizer, contexts[-config.eval_contexts :], length)

    output_bias = model.get_output_embeddings().bias
    vocab_size = output_bias.shape[0]
    counts = torch.ones(vocab_size)
    for chunk in train_chunks:
        counts.index_add_(0, torch.tensor(chunk), torch.ones(len(chunk)))
    with torch.no_grad():
        output_bias.copy_((counts / counts.sum()).log().to(output_bias.device))

    device_t = torch.device(device)
    base = model.base_model
    token_types = "token_type_ids" in tokenizer.model_input_names

    def masked_logits(input_ids, attention, chosen):
        inputs = {"input_ids": input_ids.to(device_t), "attention_mask": attention.to(device_t)}
        if token_types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.no_grad():
            hidden = base(**inputs)[0]
        return head(hidden[chosen.to(device_t)])

    def evaluate() -> dict:
        head.eval()
        generator = torch.Generator().manual_seed(1234)  # the same masks before and after training
        hits1 = hitsk = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for b in range(0, len(eval_chunks), config.batch_size):
                ids, att, chosen, labels = _mask_batch(
                    eval_chunks[b : b + config.batch_size], prefix, suffix, tokenizer.mask_token_id,
                    tokenizer.pad_token_id or 0, config.mask_prob, generator,
                )
                logits = masked_logits(ids, att, chosen).float()
                gold = labels[chosen].to(device_t)
                loss_sum += torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
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

    before = evaluate()
    optimizer = build_optimizer(trainable, config.lr)
    scheduler = build_scheduler(optimizer, max(1, config.steps // 20), config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc="mlm-head", unit="step")
    start = time.perf_counter()
    head.train()
    for step in range(config.steps):
        pick = torch.randint(len(train_chunks), (config.batch_size,), generator=generator).tolist()
        ids, att, chosen, labels = _mask_batch(
            [train_chunks[i] for i in pick], prefix, suffix, tokenizer.mask_token_id,
            tokenizer.pad_token_id or 0, config.mask_prob, generator,
        )
        logits = masked_logits(ids, att, chosen)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[chosen].to(device_t))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    after = evaluate()
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
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    update_meta(out, mlm_head=report)
    return report

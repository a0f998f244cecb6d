"""Training throughput: pocketqa's loop vs the anchors, same windows, same model, same precision.

Sides, each run for ``--warmup-steps`` untimed steps and then ``--steps`` timed steps
(windows per second = steps x batch / seconds, with the device synchronised at both ends).
By default the warm-up is one whole pass over the benchmark's windows (``--warmup-steps``
= ``--steps``, and just enough examples for ``--steps`` batches), so the timed pass meets
only batch shapes every side has already run: pocketqa pads each batch to its own width
(up to 48 widths at 384), the anchors pad everything to 384 (one width), and on a GPU the
first batch of each new shape pays one-off costs (kernel selection, allocator growth) that
a real multi-epoch run amortises but a 100-step bench would charge to pocketqa alone.

- ``pocketqa``: ``pocketqa.recipes.finetune.train`` as ``pocketqa train`` runs it: length-grouped
  batches padded per batch, numpy collation, fused AdamW on CUDA, bf16 autocast.
- ``run_squad-loop``: the loop of transformers' legacy run_squad.py that made seed card 1,
  rewritten here: every window padded to max_seq_length (384), RandomSampler DataLoader,
  AdamW (torch's default foreach kernel), linear schedule, the model's own loss,
  clip_grad_norm_, ``loss.item()`` every step; autocast in the same precision as pocketqa.
- ``hf-trainer``: transformers' Trainer with run_qa.py-style preprocessing (windows
  padded to 384, default_data_collator), bf16; needs the ``accelerate`` package and is
  reported as skipped without it.

All sides train on the same windows: the first examples of a SQuAD 2.0 training file,
tokenised once by ``pocketqa.recipes.finetune.load_train_features`` (the anchors pad them to 384).

Models: ``minilm-l6`` (all-MiniLM-L6-v2 weights), ``bert-6l-768`` (a 6-layer BERT-base-width
config, random init) and ``mobilebert`` (the google/mobilebert-uncased config, random init).

Usage (GPU):  PYTHONPATH=src python3 bench/train_throughput.py --device cuda --steps 200 --out $OUT/train_throughput.json
Usage (CPU, a smoke run):  PYTHONPATH=src python bench/train_throughput.py --device cpu --steps 2 \
    --warmup-steps 1 --batch-size 4 --max-examples 200 --tiny
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pocketqa.data.features import WindowConfig
from pocketqa.models import load_qa_model, load_tokenizer, resolve_model
from pocketqa.data.squad import load_squad, write_squad
from pocketqa.recipes.finetune import build_scheduler, load_train_features, read_log, train
from pocketqa.recipes.configs import TrainConfig

REPO = Path(__file__).resolve().parent.parent
DATA_CANDIDATES = [REPO / ".carry/data/train-v2.0.json.gz", REPO.parent / "shared/data/squad2/train-v2.0.json.gz"]
MINILM_CANDIDATES = [REPO / ".carry/minilm"]
MODELS = ("minilm-l6", "bert-6l-768", "mobilebert")


def first_existing(paths: list[Path], fallback: str | None = None) -> str:
    for p in paths:
        if p.exists():
            return str(p)
    if fallback is None:
        sys.exit(f"none of {', '.join(map(str, paths))} exists; pass the path explicitly")
    return fallback


def prepare_models(names: list[str], minilm: str, workdir: Path, tiny: bool) -> dict[str, str]:
    """Model dirs (with tokenizer) for each benchmark name; random ones are built and saved here."""
    from transformers import BertConfig, BertForQuestionAnswering, MobileBertConfig, MobileBertForQuestionAnswering

    tokenizer = load_tokenizer(minilm)  # bert-base-uncased's vocabulary, which all three use
    dirs = {}
    for name in names:
        if name == "minilm-l6":
            dirs[name] = minilm
            continue
        torch.manual_seed(0)
        if name == "bert-6l-768":
            config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=2 if tiny else 6,
                                num_attention_heads=12, intermediate_size=3072)
            model = BertForQuestionAnswering(config)
        else:
            config = MobileBertConfig(vocab_size=len(tokenizer), num_hidden_layers=2 if tiny else 24)
            model = MobileBertForQuestionAnswering(config)
        path = workdir / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[name] = str(path)
    return dirs


def subset_file(train_path: str, n: int, workdir: Path) -> Path:
    """The first ``n`` examples of the training file, as a SQuAD file both sides read."""
    path = workdir / f"train-first{n}.json"
    write_squad(load_squad(train_path)[:n], path)
    return path


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def padded_tensors(data, width: int) -> dict[str, torch.Tensor]:
    """Every window padded to ``width`` (run_qa's pad_to_max_length), as int64 tensors."""
    cols = np.arange(width)
    lens = data.lengths.astype(np.int64)
    mask = cols[None, :] < lens[:, None]
    pos = data.row_starts[:, None] + np.minimum(cols[None, :], lens[:, None] - 1)
    out = {
        "input_ids": np.where(mask, data.input_ids[pos], 0),
        "attention_mask": mask.astype(np.int64),
        "start_positions": data.start_positions.astype(np.int64),
        "end_positions": data.end_positions.astype(np.int64),
    }
    if data.token_type_ids is not None:
        out["token_type_ids"] = np.where(mask, data.token_type_ids[pos], 0)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in out.items()}


def run_pocketqa(model_dir, train_file, args, workdir: Path) -> float:
    out = workdir / f"pocketqa-{Path(model_dir).name}"
    config = TrainConfig(
        model=model_dir, train=str(train_file), out=str(out), overwrite=True, batch_size=args.batch_size,
        learning_rate=1e-4, max_steps=args.warmup_steps + args.steps, log_steps=args.warmup_steps, save_steps=0,
        precision=args.precision, device=args.device, cache_dir=str(workdir / "cache"), compile=args.compile,
        max_seq_length=args.max_seq_length,
    )
    train(config)
    elapsed = {r["step"]: r["elapsed_s"] for r in read_log(out) if "elapsed_s" in r}
    seconds = elapsed[args.warmup_steps + args.steps] - elapsed[args.warmup_steps]
    return args.steps * args.batch_size / seconds


def run_squad_loop(model_dir, data, args) -> float:
    """The training loop of transformers' legacy run_squad.py (seed card 1's anchor)."""
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    torch.manual_seed(42)
    model = load_qa_model(model_dir, device=args.device, dtype=torch.float32)
    model.train()
    tensors = padded_tensors(data, args.max_seq_length)
    names = list(tensors)
    dataset = TensorDataset(*(tensors[n] for n in names))
    loader = DataLoader(dataset, sampler=RandomSampler(dataset), batch_size=args.batch_size, drop_last=True)
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-4, eps=1e-8)
    total = args.warmup_steps + args.steps
    scheduler = build_scheduler(optimizer, 0, total)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(args))
    device_type = torch.device(args.device).type
    batches = iter(())
    tr_loss, started = 0.0, None
    for step in range(total):
        if step == args.warmup_steps:
            synchronize(args.device)
            started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        inputs = {n: t.to(args.device) for n, t in zip(names, batch)}
        with torch.autocast(device_type, dtype=dtype) if dtype else torch.autocast(device_type, enabled=False):
            outputs = model(**inputs)
        loss = outputs.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        tr_loss += loss.item()
    synchronize(args.device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def run_hf_trainer(model_dir, data, args, workdir: Path) -> float | None:
    """transformers' Trainer on run_qa-style features (padded to 384); None without accelerate."""
    try:
        import accelerate  # noqa: F401  (Trainer refuses to start without it)
    except ImportError:
        return None
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    tensors = padded_tensors(data, args.max_seq_length)

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {k: v[i] for k, v in tensors.items()}

    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (args.warmup_steps, args.warmup_steps + args.steps):
                synchronize(args.device)
                marks[state.global_step] = time.perf_counter()

    torch.manual_seed(42)
    model = load_qa_model(model_dir, device=args.device, dtype=torch.float32)
    precision = resolve_precision(args)
    targs = TrainingArguments(
        output_dir=str(workdir / "hf-trainer"), per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup_steps + args.steps, learning_rate=1e-4, bf16=precision == "bf16",
        fp16=precision == "fp16", save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, use_cpu=args.device == "cpu", seed=42,
    )
    Trainer(model=model, args=targs, train_dataset=Windows(), data_collator=default_data_collator,
            callbacks=[Clock()]).train()
    return args.steps * args.batch_size / (marks[args.warmup_steps + args.steps] - marks[args.warmup_steps])


def resolve_precision(args) -> str:
    if args.precision != "auto":
        return args.precision
    return "bf16" if args.device.startswith("cuda") else "fp32"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per side")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="untimed steps first (default: --steps, one pass over the windows)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--train", default=None, help="SQuAD training file (default: .carry/data or ../shared/data)")
    parser.add_argument("--minilm", default=None, help="MiniLM-L6 dir (default: .carry/minilm or pip:all-MiniLM-L6-v2)")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="examples to tokenise (default: enough windows for warmup + steps batches)")
    parser.add_argument("--tiny", action="store_true", help="2-layer versions of the random models (CPU smoke runs)")
    parser.add_argument("--compile", action="store_true", help="pocketqa side with torch.compile")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args()
    whole_pass = args.warmup_steps is None
    if whole_pass:
        args.warmup_steps = args.steps
    if args.warmup_steps < 1 or args.steps < 1:
        parser.error("--steps and --warmup-steps must be >= 1")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")

    train_path = args.train or first_existing(DATA_CANDIDATES)
    minilm = args.minilm or resolve_model(first_existing(MINILM_CANDIDATES, "pip:all-MiniLM-L6-v2"))
    # ~1.03 windows per SQuAD 2.0 example at 384/128. A whole-pass warm-up needs windows for
    # --steps batches (the timed pass repeats the warm-up's shapes); otherwise every side gets
    # fresh windows each step.
    batches_needed = args.steps if whole_pass else args.warmup_steps + args.steps
    n_examples = args.max_examples or math.ceil(batches_needed * args.batch_size * 0.98)
    results = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "precision": resolve_precision(args), "batch_size": args.batch_size, "steps": args.steps,
               "warmup_steps": args.warmup_steps, "examples": n_examples, "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory(prefix="pocketqa-train-bench-") as tmp:
        workdir = Path(tmp)
        train_file = subset_file(train_path, n_examples, workdir)
        dirs = prepare_models(names, minilm, workdir, args.tiny)
        tokenizer = load_tokenizer(minilm)
        data = load_train_features(train_file, tokenizer, WindowConfig(args.max_seq_length), workdir / "cache")
        mean_len = float(data.lengths.mean())
        results["windows"] = len(data)
        results["mean_window_tokens"] = mean_len
        for name in names:
            row = {}
            row["run_squad-loop"] = run_squad_loop(dirs[name], data, args)
            row["hf-trainer"] = run_hf_trainer(dirs[name], data, args, workdir)
            row["pocketqa"] = run_pocketqa(dirs[name], train_file, args, workdir)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            results["models"][name] = row
            print(json.dumps({name: row}), flush=True)

    print(f"\ntraining throughput, windows/s ({results['precision']}, batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup_steps}, {args.device}; {len(data)} windows, mean {mean_len:.0f} tokens, anchors pad to "
          f"{args.max_seq_length})")
    print(f"{'model':<14}{'pocketqa':>11}{'run_squad':>11}{'ratio':>8}{'Trainer':>11}{'ratio':>8}")
    for name, row in results["models"].items():
        ours, squad, hf = row["pocketqa"], row["run_squad-loop"], row["hf-trainer"]
        hf_cells = f"{hf:>11.1f}{ours / hf:>7.2f}x" if hf else f"{'skipped':>11}{'':>8}"
        print(f"{name:<14}{ours:>11.1f}{squad:>11.1f}{ours / squad:>7.2f}x{hf_cells}")
    if any(row["hf-trainer"] is None for row in results["models"].values()):
        print("hf-trainer skipped: transformers' Trainer needs the accelerate package, which is not installed")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration: F1 at thresholds calibrated for simulated domains vs the model's stored (default) threshold.

The model decodes dev once (cached under ``--cache``: null odds and best span of every
question); everything else works from those decodings. Each simulated domain is a seeded
subsample of ``--n`` dev questions with a chosen share of answerable ones (``--rates``).
On each, F1 at:

- the stored threshold (the anchor: what a user gets without calibrating);
- the unlabeled threshold of ``pocketqa calibrate --answerable-rate R``, with the true R
  and with R off by ``--rate-error`` either way;
- the labeled threshold of ``pocketqa calibrate`` from ``--labels`` questions of the
  domain, over ``--draws`` seeded draws (mean, spread, and whether each draw's bootstrap
  F1 interval holds the F1 that threshold really gets on the whole domain);
- the best threshold of the whole domain (the ceiling; it needs every label).

"vs anchor" is F1 / F1 at the stored threshold, "vs best" F1 minus the best F1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
from pathlib import Path

import numpy as np

from bench.harness import REPO, Results, add_common_arguments, say, setup, squad_file, write_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=1)
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file")
    p.add_argument("--model", default=None, help="model dir (default: the bundled model)")
    p.add_argument("--n", type=int, default=2000, help="questions per simulated domain (default 2000)")
    p.add_argument("--rates", default="0.3,0.5,0.9,1.0", help="answerable shares of the simulated domains")
    p.add_argument("--rate-error", type=float, default=0.1, help="how far off the stated rate is in the +- rows")
    p.add_argument("--labels", default="50,100,200", help="labeled questions per draw")
    p.add_argument("--draws", type=int, default=20, help="draws of labeled questions per size (default 20)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per labeled draw")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "calibration", help="where the decodings are kept")


def decodings(qa, model_path: str, examples, data: Path, cache_dir: Path) -> list:
    """Every question decoded once by ``qa``; kept in ``cache_dir`` under a key of model, data and settings.

    The key holds the model directory's files (names, sizes, modification times), the data
    file's SHA-256 and the decoding settings, so a changed model or setting decodes again.
    """
    from pocketqa.inference.spans import Decoded, Span

    model = Path(model_path)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in model.iterdir() if f.is_file()) \
        if model.is_dir() else []
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([str(model.resolve()) if model.is_dir() else model_path, files, digest,
                                     repr(sorted(qa.decoding_settings().items()))]).encode())
    path = cache_dir / f"decoded-{key.hexdigest()[:16]}.json"
    if path.is_file():
        say(f"decodings from {path}")
        rows = json.loads(path.read_text(encoding="utf-8"))["decoded"]
    else:
        say(f"decoding {len(examples)} questions once (kept in {path})")
        decoded = qa.decode_examples(examples, progress=True)
        rows = {ex.id: [d.null_odds if math.isfinite(d.null_odds) else None, d.spans[0].text if d.spans else ""]
                for ex, d in zip(examples, decoded)}
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"model": qa.name, "data": str(data), "decoded": rows}) + "\n")
    out = []
    for ex in examples:
        odds, text = rows[ex.id]
        spans = [Span(text, 0, len(text), 0.0)] if text else []
        out.append(Decoded(spans=spans, null_odds=math.inf if odds is None else odds))
    return out


def domain_sample(examples, rate: float, n: int, seed: int) -> list[int]:
    """``n`` question indices, round(rate * n) of them answerable, drawn without replacement, in file order."""
    rng = np.random.default_rng([seed, round(1000 * rate)])
    answerable = np.array([i for i, ex in enumerate(examples) if ex.answers])
    unanswerable = np.array([i for i, ex in enumerate(examples) if not ex.answers])
    n_answerable = round(rate * n)
    if n_answerable > answerable.size or n - n_answerable > unanswerable.size:
        raise SystemExit(f"--n {n} at rate {rate}: dev has {answerable.size} answerable and {unanswerable.size} "
                         "unanswerable questions; lower --n")
    picked = np.concatenate([rng.choice(answerable, n_answerable, replace=False),
                             rng.choice(unanswerable, n - n_answerable, replace=False)])
    return sorted(picked.tolist())


def row(domain: str, method: str, thresholds: list[float], shares: list[float], f1s: list[float], best: float,
        anchor: float, **extra) -> dict:
    mean = statistics.fmean(f1s)
    return {"domain": domain, "method": method, "threshold": statistics.fmean(thresholds),
            "abstain_share": statistics.fmean(shares), "f1": mean,
            "f1_sd": statistics.stdev(f1s) if len(f1s) > 1 else 0.0, "f1_min": min(f1s), "f1_max": max(f1s),
            "vs_best": mean - best, "vs_anchor": mean / anchor if anchor else float("nan"), "draws": len(f1s), **extra}


def simulate(examples, decoded, stored: float, rate: float, args) -> list[dict]:
    """The rows of one simulated domain."""
    from pocketqa.evaluation.calibration import (
        QuestionScores,
        abstain_share,
        best_threshold,
        calibrate_decoded,
        f1_at,
        rate_threshold,
    )

    picked = domain_sample(examples, rate, args.n, args.seed)
    exs, dec = [examples[i] for i in picked], [decoded[i] for i in picked]
    scores = QuestionScores.from_decoded(exs, dec)
    domain = f"{rate:g} answerable"

    def point(method: str, threshold: float, **extra) -> dict:
        return row(domain, method, [threshold], [abstain_share(scores.odds, threshold)], [f1_at(scores, threshold)],
                   best_f1, anchor, **extra)

    best = best_threshold(exs, dec)
    best_f1, anchor = f1_at(scores, best), f1_at(scores, stored)
    rows = [point("stored threshold (anchor)", stored), point("best (all labels)", best)]
    for shift in (0.0, -args.rate_error, args.rate_error):
        stated = round(rate + shift, 6)
        if 0.0 < stated <= 1.0:
            label = "true" if shift == 0 else f"{shift:+g}"
            rows.append(point(f"unlabeled, R = {stated:g} ({label})", rate_threshold(scores.odds, stated)))
    rng = np.random.default_rng([args.seed, round(1000 * rate), 1])
    for size in args.label_sizes:
        thresholds, shares, f1s, covered, widths = [], [], [], [], []
        for draw in range(args.draws):
            chosen = sorted(rng.choice(len(exs), size, replace=False).tolist())
            lab_ex, lab_dec = [exs[i] for i in chosen], [dec[i] for i in chosen]
            if not any(ex.answers for ex in lab_ex):  # cannot happen above a tiny unanswerable share
                continue
            report = calibrate_decoded(lab_ex, lab_dec, stored, resamples=args.bootstrap, seed=draw)
            t = report["threshold"]
            f1 = f1_at(scores, t)
            thresholds.append(t)
            shares.append(abstain_share(scores.odds, t))
            f1s.append(f1)
            low, high = report["interval"]["f1"]
            covered.append(low <= f1 <= high)
            widths.append(high - low)
        rows.append(row(domain, f"{size} labels", thresholds, shares, f1s, best_f1, anchor,
                        interval_covers=statistics.fmean(covered), interval_width=statistics.fmean(widths)))
    return rows


def table(rows: list[dict]) -> dict:
    """The rows as the harness's generic table (F1 per simulated domain and method)."""
    header = ["domain", "method", "threshold", "abstains", "F1", "spread (sd; min-max)", "vs best", "vs anchor"]
    cells = []
    for r in rows:
        spread = f"{r['f1_sd']:.2f}; {r['f1_min']:.1f}-{r['f1_max']:.1f}" if r["draws"] > 1 else ""
        cells.append([r["domain"], r["method"], f"{r['threshold']:.3f}", f"{100 * r['abstain_share']:.1f} %",
                      f"{r['f1']:.2f}", spread, f"{r['vs_best']:+.2f}", f"{r['vs_anchor']:.3f}x"])
    return {"header": header, "rows": cells}


def run(args: argparse.Namespace) -> Results:
    from pocketqa.evaluation.calibration import CONFIDENCE, load_calibration_questions
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.models import resolve_model

    setup(args)
    results = Results("calibration", args)
    args.label_sizes = [int(x) for x in args.labels.split(",") if x.strip()]
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    data = squad_file(args.data, "dev", "--data")
    examples = load_calibration_questions(data)
    model_path = resolve_model(args.model)
    qa = QuestionAnswerer.from_pretrained(model_path, threads=args.threads, device=args.device)
    decoded = decodings(qa, model_path, examples, data, args.cache)
    for rate in rates:
        say(f"domain with {rate:g} answerable: {args.n} questions, {args.draws} draws per label count")
        results.comparisons.extend(simulate(examples, decoded, qa.threshold, rate, args))
    results.settings = {"model": qa.name, "stored_threshold": qa.threshold, "data": str(data), "n": args.n,
                        "rates": rates, "rate_error": args.rate_error, "labels": args.label_sizes,
                        "draws": args.draws, "bootstrap": args.bootstrap, "seed": args.seed}
    for rate in rates:
        mine = {r["method"]: r for r in results.comparisons if r["domain"] == f"{rate:g} answerable"}
        prior = next(r for m, r in mine.items() if m.endswith("(true)"))
        hundred = mine.get("100 labels")
        note = f"{rate:g} answerable: unlabeled with the true rate {prior['vs_best']:+.2f} F1 from best"
        if hundred is not None:
            note += (f", 100 labels {hundred['vs_best']:+.2f} (their {100 * CONFIDENCE:.0f} % F1 interval held the "
                     f"domain's F1 in {100 * hundred['interval_covers']:.0f} % of draws, mean width "
                     f"{hundred['interval_width']:.1f})")
        results.notes.append(note)
    results.table = table(results.comparisons)
    return results

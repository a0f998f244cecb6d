"""The parity check: the same questions through a reference answerer and candidates, compared.

``pocketqa export`` keeps a graph only when it reproduces PyTorch: the fp32 graph must give
logits within ``FP32_TOLERANCE`` and identical answers; for int8 the share of identical
answers and the EM/F1 change are measured and stored. Every answerer decodes its own
logits (``QuestionAnswerer.decode``), so the answers compared are those users get.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pocketqa.data.squad import Answer, Example
from pocketqa.errors import PocketQAError
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.onnx_backend import OnnxBackend

FP32_TOLERANCE = 1e-4  # max |logit difference| accepted between PyTorch and fp32 ONNX

# -- sample questions -------------------------------------------------------------------


def _sample(qid: str, context: str, question: str, answer: str | None) -> Example:
    answers = () if answer is None else (Answer(answer, context.index(answer)),)
    return Example(id=qid, title="sample", context=context, question=question, answers=answers,
                   is_impossible=answer is None)


_LIGHTHOUSE = (
    "The lighthouse on the northern cape was built in 1874 by the harbour board. Its lamp was first "
    "fuelled by whale oil, then by paraffin, and it was electrified in 1931. The last keeper, Ingrid "
    "Sand, left the station in 1989, when the light was automated and its beam range cut to 18 miles."
)
_RIVER = (
    "The river rises in the eastern hills and flows west for about 240 kilometres before reaching the "
    "sea at Port Aller. Three dams regulate it, the oldest of which was completed in 1952. In spring "
    "the melting snow can raise the water level at the delta by more than two metres, and the old town "
    "is protected by a stone embankment that was rebuilt after the great flood of 1967. Salmon return "
    "to the upper reaches each autumn, and a ladder beside the lowest dam lets them pass it."
)
_SHORT = "Marta wrote the report in Lisbon."

SAMPLE_EXAMPLES = (
    _sample("sample-1", _LIGHTHOUSE, "When was the lighthouse built?", "1874"),
    _sample("sample-2", _LIGHTHOUSE, "Who was the last keeper?", "Ingrid Sand"),
    _sample("sample-3", _LIGHTHOUSE, "What fuelled the lamp after paraffin?", None),
    _sample("sample-4", _RIVER, "How long is the river?", "about 240 kilometres"),
    _sample("sample-5", _RIVER, "When was the embankment rebuilt?", "after the great flood of 1967"),
    _sample("sample-6", _RIVER, "Which fish return to the upper reaches?", "Salmon"),
    _sample("sample-7", _RIVER, "Who designed the newest dam?", None),
    _sample("sample-8", _SHORT, "Where was the report written?", "Lisbon"),
)


# -- comparing --------------------------------------------------------------------------


def _scores(examples, decoded, threshold: float) -> dict:
    s = score_decoded(examples, decoded, threshold)
    return {k: float(s[k]) for k in ("exact", "f1", "best_exact", "best_f1")}


def _check_same_settings(reference: QuestionAnswerer, candidates: dict[str, QuestionAnswerer]) -> None:
    """Only the backend may differ: other settings would be measured instead of the backend."""
    wanted = reference.decoding_settings()
    problems = []
    for name, qa in candidates.items():
        for key, value in qa.decoding_settings().items():
            if value != wanted[key]:
                problems.append(f"candidate {name!r} has {key}={value!r}, the reference {wanted[key]!r}")
    if problems:
        raise PocketQAError(
            "answerers to compare must differ in the backend only: " + "; ".join(problems)
            + "; build candidates with reference.with_backend(backend)"
        )


def compare_answerers(
    reference: QuestionAnswerer,
    candidates: dict[str, QuestionAnswerer],
    examples: Sequence[Example],
    progress: bool = False,
) -> dict:
    """Runs a reference answerer and candidates on the same windows; compares logits, answers, scores.

    All must share window and decoding settings (only the backend differs: see
    ``QuestionAnswerer.with_backend``); the reference runs once. Each answerer decodes its
    own logits as ``decode_examples`` does. Logits are compared on real tokens only
    (padding is trimmed, as in decoding).

    Args:
        reference: The QuestionAnswerer to compare against (PyTorch).
        candidates: {name: QuestionAnswerer}.
        examples: The questions.
        progress: Show progress bars.

    Returns:
        {name: {"examples", "windows", "max_abs_diff", "answers_identical" (share, answers at
        the reference's threshold), "n_differing", "differing_ids" (up to 10), "reference"/"candidate"
        (EM/F1 at the threshold and best), "delta_exact", "delta_f1"}}.

    Raises:
        PocketQAError: A candidate's window or decoding settings differ from the reference's.
    """
    _check_same_settings(reference, candidates)
    examples = list(examples)
    features = reference.windows(examples)
    threshold = reference.threshold

    def run(qa: QuestionAnswerer):
        starts, ends = qa.logits(features, progress=progress)
        return starts, ends, qa.decode(examples, features, starts, ends)

    ref_starts, ref_ends, ref_decoded = run(reference)
    ref_scores = _scores(examples, ref_decoded, threshold)
    results = {}
    for name, qa in candidates.items():
        starts, ends, decoded = run(qa)
        max_diff = 0.0
        for ref, cand in ((ref_starts, starts), (ref_ends, ends)):
            for a, b in zip(ref, cand):
                max_diff = max(max_diff, float(np.max(np.abs(a - b))))
        differing = [ex.id for ex, r, c in zip(examples, ref_decoded, decoded) if r.answer(threshold) != c.answer(threshold)]
        scores = _scores(examples, decoded, threshold)
        results[name] = {
            "examples": len(examples),
            "windows": len(features),
            "max_abs_diff": max_diff,
            "answers_identical": 1.0 - len(differing) / max(len(examples), 1),
            "n_differing": len(differing),
            "differing_ids": differing[:10],
            "threshold": threshold,
            "reference": ref_scores,
            "candidate": scores,
            "delta_exact": scores["exact"] - ref_scores["exact"],
            "delta_f1": scores["f1"] - ref_scores["f1"],
        }
    return results


def fp32_ok(result: dict) -> bool:
    """The bar for an fp32 graph: logits within ``FP32_TOLERANCE`` and every answer identical."""
    return result["max_abs_diff"] <= FP32_TOLERANCE and result["answers_identical"] == 1.0


def check_parity(
    torch_dir: str | os.PathLike,
    onnx_dir: str | os.PathLike,
    examples: Sequence[Example] | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Compares an exported directory with the PyTorch checkpoint it came from.

    Args:
        torch_dir: The PyTorch model directory.
        onnx_dir: The directory written by ``export_model`` (its pocketqa.json settings apply).
        examples: Questions to compare on (default: a few built-in sample questions).
        threads: CPU threads for both runtimes.
        progress: Show progress bars.

    Returns:
        The comparison of ``compare_answerers`` plus "passed_fp32": whether logits agree within
        ``FP32_TOLERANCE`` and all answers are identical (the bar for an fp32 export).
    """
    onnx_qa = QuestionAnswerer.from_pretrained(onnx_dir, threads=threads)
    if not isinstance(onnx_qa.backend, OnnxBackend):
        raise PocketQAError(f"{onnx_dir}: holds no .onnx graph; export one first with pocketqa export")
    torch_qa = QuestionAnswerer.from_pretrained(torch_dir, device="cpu", threads=threads, threshold=onnx_qa.threshold,
                                               **onnx_qa.window.to_dict())
    examples = SAMPLE_EXAMPLES if examples is None else examples
    result = compare_answerers(torch_qa, {"onnx": onnx_qa}, examples, progress=progress)["onnx"]
    result["passed_fp32"] = fp32_ok(result)
    return result

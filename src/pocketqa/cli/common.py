"""Argument helpers shared by several ``pocketqa`` commands: value types, output checks,
the model and window flags of the inference commands, and config building from a recipe.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from pocketqa.config import device_name, from_dict
from pocketqa.modeldir import check_domain_name, meta_domains, read_meta, threshold_key
from pocketqa.recipe_files import load_recipe, require_inputs
from pocketqa.errors import PocketQAError


# -- value types: argparse reports a bad value as one line naming the flag --------------


def number_type(kind: type, what: str, ok, rule: str):
    """An argparse type: ``kind(text)`` that must satisfy ``ok``, else "rule, got ..."."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


positive_int = number_type(int, "a whole number", lambda v: v >= 1, "must be >= 1")
finite_float = number_type(float, "a number", math.isfinite, "must be a finite number")
port = number_type(int, "a port number", lambda v: 0 <= v <= 65535, "must be 0-65535")


def device(text: str) -> str:
    """An argparse type for device flags, with the rule the config classes use."""
    problem = device_name(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def domain_name(text: str) -> str:
    """An argparse type for --domain: a name pocketqa.json can store."""
    try:
        return check_domain_name(text)
    except PocketQAError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fresh_out_dir(path: Path, overwrite: bool) -> None:
    """Refuses to write a model into a file, an unwritable place or, without --overwrite, a non-empty directory."""
    if path.exists() and not path.is_dir():
        raise PocketQAError(f"--out {path}: is a file, expected a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise PocketQAError(f"--out {path}: directory is not empty; pass --overwrite to write into it")
    writable(path, "--out")


def writable(path: Path, flag: str) -> None:
    """Checks before any work that files can be created at ``path`` (a directory, or a file's place).

    For a directory that does not exist yet, its nearest existing ancestor must take new
    entries. The check creates and removes a probe file, since permission bits say nothing of
    a read-only mount or of root's rights; the error names the user's path, not the probe.
    """
    where = Path(path) if Path(path).is_dir() else Path(path).parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".pocketqa-write-check-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PocketQAError(f"{flag} {path}: cannot write there ({reason} in {where}); choose a writable location") from None


def output_file(path: Path, flag: str, inputs: tuple = ()) -> None:
    """Checks before any work that ``path`` can be written as a file and is none of ``inputs``."""
    if path.is_dir():
        raise PocketQAError(f"{flag} {path}: is a directory, expected a file path")
    parent = path.parent
    if not parent.is_dir():
        raise PocketQAError(f"{flag} {path}: parent directory {parent} does not exist or is not a directory")
    for src_flag, src in inputs:
        if src is not None and path.resolve() == Path(src).resolve():
            raise PocketQAError(f"{flag} {path} is the same file as {src_flag}; it would be overwritten")
    writable(path, flag)


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model dir, hub id or pip:NAME (default: the bundled model)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="windows per forward pass (default: 64 on GPU, 4 on CPU)")
    p.add_argument("--scoring", choices=("logits", "pipeline"), default="logits",
                   help="how spans and the null answer are scored: logits (utils_qa, default) or pipeline "
                        "(as transformers' removed QA pipeline: per-window probabilities)")
    p.add_argument("--align-to-words", action="store_true",
                   help="widen answers to whole words, the QA pipeline's default word widening "
                        "(only with --scoring pipeline)")
    p.add_argument("--n-best", type=positive_int, default=None,
                   help="candidate spans kept per window and in all (default 20; 1 with --scoring pipeline "
                        "gives the QA pipeline's top_k=1 answers)")
    p.add_argument("--max-answer-length", type=positive_int, default=None,
                   help="longest answer in tokens (default 30, as utils_qa; the QA pipeline's default was 15)")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="answer even when the model's QA head was initialised at random (a base encoder: "
                        "its answers are noise; fine-tune it with pocketqa train first)")
    p.add_argument("--domain", type=domain_name, default=None, metavar="NAME",
                   help="use the no-answer threshold calibrated for this domain (pocketqa calibrate --save "
                        "--domain NAME) instead of the model's default one")


def window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seq-length", type=int, default=None,
                   help="tokens per window, question and special tokens included (default: the model's, else 384)")
    p.add_argument("--doc-stride", type=int, default=None,
                   help="context tokens shared by consecutive windows of a long passage (default: the model's, else 128)")
    p.add_argument("--max-query-length", type=int, default=None,
                   help="question tokens kept; longer questions are cut (default: the model's, else 64)")


def window_kwargs(args) -> dict:
    return {
        k: v
        for k, v in (
            ("max_seq_length", getattr(args, "max_seq_length", None)),
            ("doc_stride", getattr(args, "doc_stride", None)),
            ("max_query_length", getattr(args, "max_query_length", None)),
        )
        if v is not None
    }


def load_answerer(args, threshold=None):
    from pocketqa.inference.answerer import QuestionAnswerer

    return QuestionAnswerer.from_pretrained(
        args.model,
        device=args.device,
        threads=args.threads,
        threshold=threshold,
        batch_size=args.batch_size,
        domain=args.domain,
        **decoding_kwargs(args),
        **window_kwargs(args),
    )


def decoding_kwargs(args) -> dict:
    """How spans are scored and chosen (``model_args``'s flags), for QuestionAnswerer.from_pretrained."""
    given = {"n_best": args.n_best, "max_answer_length": args.max_answer_length}
    return {"scoring": args.scoring, "align_to_words": args.align_to_words,
            "allow_untrained_head": args.allow_untrained_head,
            **{k: v for k, v in given.items() if v is not None}}


# -- settings from a recipe and flags -----------------------------------------------------


def add_recipe_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe", default=None, metavar="NAME|FILE",
        help="a shipped recipe's name (see `pocketqa recipes`) or a recipe YAML file "
             "(keys: the flag names with _); flags override its values",
    )


def build_config(
    cls: type,
    recipe: str | os.PathLike | None,
    flags: dict,
    command: str,
    *,
    inputs: tuple[str, ...] = (),
    optional_inputs: tuple[str, ...] = (),
    replaced_by: dict[str, tuple[str, ...]] | None = None,
):
    """The command's settings: the recipe's values (if any), then the flags given.

    Args:
        cls: The config class.
        recipe: ``--recipe``: a shipped recipe's name or a YAML file, or None.
        flags: The settings given on the command line (``config.flag_values``).
        command: ``"pocketqa train"`` ...: the source named in errors without a recipe.
        inputs: Data settings a shipped recipe leaves to the command line (required);
            ``optional_inputs`` are named with them in the error.
        replaced_by: ``{flag key: recipe keys it replaces}``: a flag that chooses another way
            (``student``) drops the recipe's keys for the old way (``student_base`` ...).
    """
    if recipe is None:
        return from_dict(cls, flags, source=command)
    loaded = load_recipe(cls, recipe)
    values = dict(loaded.values)
    for key, dropped in (replaced_by or {}).items():
        if key in flags:
            for name in dropped:
                values.pop(name, None)
    values.update(flags)
    if loaded.shipped:
        require_inputs(values, loaded.source, inputs, optional_inputs)
    return from_dict(cls, values, source=loaded.source)


def answerer_args(args, model_dir: Path | None) -> argparse.Namespace:
    """The flags the answerer loads with: a domain --save is about to create is not looked up."""
    if model_dir is None or args.domain is None:
        return args
    entry = meta_domains(model_dir, read_meta(model_dir)).get(args.domain, {})
    if threshold_key(args.scoring) in entry:
        return args
    # A new domain (or a new scoring rule in one): the default threshold is the one in use now.
    return argparse.Namespace(**{**vars(args), "domain": None})


def data_args(p, offsets: str | None) -> None:
    """``--data`` (any layout), ``--format`` and, where gold answers are read, ``--offsets``."""
    from pocketqa.data.formats import FORMATS
    from pocketqa.data.squad import OFFSET_MODES

    p.add_argument("--data", required=True, metavar="FILE|hf:NAME[:CONFIG]:SPLIT",
                   help="questions: SQuAD JSON, or squad_v2 rows in .parquet/.jsonl/.json/.csv (.gz too), "
                        "or a datasets hub id (see docs/data.md)")
    p.add_argument("--format", choices=FORMATS, default=None, help="layout of --data (default: from its name)")
    if offsets is not None:
        p.add_argument("--offsets", choices=OFFSET_MODES, default=offsets,
                       help=f"a gold answer_start that misses its text: strict refuses the file, repair moves it to "
                            f"the nearest occurrence (dropping answers not in the context), ignore keeps it "
                            f"(scores compare texts) (default {offsets})")

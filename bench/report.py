"""Turns suite results (``python -m bench SUITE --out X.json``) into the tables of docs/benchmarks.md.

    python -m bench.report bench/results/*.json                          # the tables, to stdout
    python -m bench.report bench/results/*.json --into docs/benchmarks.md

With ``--into``, the tables of each suite replace what stands between the markers
``<!-- bench:SUITE -->`` and ``<!-- /bench:SUITE -->`` in that file, so the prose
around them (conclusions, numbers from other machines) stays as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bench.harness import markdown, write_atomic


def tables(results: list[dict]) -> str:
    return "\n\n".join(markdown(r) for r in results)


def fill(text: str, by_suite: dict[str, list[dict]], path: Path) -> str:
    """``text`` with each suite's marked block replaced by its tables."""
    for suite, results in by_suite.items():
        pattern = re.compile(rf"(<!-- bench:{suite} -->\n).*?(<!-- /bench:{suite} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no <!-- bench:{suite} --> ... <!-- /bench:{suite} --> block for the "
                             f"{suite} results; add one where its tables belong")
        text = pattern.sub(lambda m: m.group(1) + tables(results) + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="result JSON files of `python -m bench SUITE --out`")
    p.add_argument("--into", type=Path, default=None, help="update the marked blocks of this markdown file")
    args = p.parse_args(argv)
    by_suite: dict[str, list[dict]] = {}
    for path in args.results:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: not a readable results file ({e})") from None
        if "suite" not in result or "comparisons" not in result:
            raise SystemExit(f"{path}: not the output of `python -m bench SUITE --out` (no suite / comparisons)")
        by_suite.setdefault(result["suite"], []).append(result)
    if args.into is None:
        print("\n\n".join(f"### {suite}\n\n{tables(results)}" for suite, results in by_suite.items()))
        return 0
    write_atomic(args.into, fill(args.into.read_text(encoding="utf-8"), by_suite, args.into))
    print(f"updated {', '.join(by_suite)} in {args.into}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

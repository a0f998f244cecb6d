"""``pocketqa recipes``: the recipes that ship inside the package."""

from __future__ import annotations

from pocketqa.recipe_files import read_yaml, recipe_summary, shipped_recipes


def add_recipes(sub) -> None:
    p = sub.add_parser(
        "recipes",
        help="list the shipped recipes (use one with `pocketqa train|distill --recipe NAME --train FILE`)",
    )
    p.set_defaults(func=cmd_recipes)


def cmd_recipes(args) -> int:
    rows = []
    for name, path in shipped_recipes().items():
        command = "distill" if "teacher" in read_yaml(path) else "train"
        rows.append((name, command, recipe_summary(path)))
    width = max((len(name) for name, _, _ in rows), default=0)
    for name, command, summary in rows:
        print(f"{name:<{width}}  {command:<7}  {summary}")
    return 0


def register(sub) -> None:
    add_recipes(sub)

"""``dsq recipes``: list the preset recipes, or show one rule by rule (as a table, YAML or JSON)."""

from __future__ import annotations

import json

from dsq.cli.table import format_table
from dsq.recipes import get_recipe, list_recipes, resolve_recipe


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list preset recipes or show one",
                       description="Without NAME: every preset recipe with a one-line description. With NAME (a "
                                   "preset, a scheme name or a .yaml/.json recipe file): its ordered rules "
                                   "(targets -> scheme) and ignore list. First matching rule wins; ignored "
                                   "modules stay float.")
    p.add_argument("name", nargs="?", help="recipe to show")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print as JSON (the form Recipe.from_dict reads)")
    fmt.add_argument("--yaml", action="store_true", help="print as YAML, a starting point for a custom recipe")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.name is None:
        recipes = [get_recipe(n) for n in list_recipes()]
        if args.json or args.yaml:
            return _dump({r.name: r.to_dict() for r in recipes}, args)
        print(format_table(["recipe", "description"], [[r.name, r.description] for r in recipes]))
        print("\nA scheme name (dsq backends lists them) also works as a recipe: every Linear, "
              "lm_head and router gates float.")
        return 0
    recipe = resolve_recipe(args.name)
    if args.json or args.yaml:
        return _dump(recipe.to_dict(), args)
    print(f"recipe {recipe.name}" + (f": {recipe.description}" if recipe.description else ""))
    rows = [[i, ", ".join(r.targets), r.scheme.name, r.scheme.describe(), r.note] for i, r in enumerate(recipe.rules)]
    print()
    print(format_table(["rule", "targets", "scheme", "numbers", "what"], rows))
    print(f"\nignore (kept float): {', '.join(recipe.ignore) or '(none)'}")
    if recipe.optional:
        print(f"may match nothing without a warning: {', '.join(recipe.optional)}")
    return 0


def _dump(data, args) -> int:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0

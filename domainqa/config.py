"""Command-line parsing: a YAML recipe as the first argument, any field overridable by a flag."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class UsageError(ValueError):
    """Bad input from the user (arguments, recipe, data): reported as one clear line, not a traceback."""


class RecipeError(UsageError):
    """A recipe that cannot be used; the message names the file and the key."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's main(); bad input exits with status 2 and its message."""
    try:
        main()
    except UsageError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML ({e})") from e
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of argument names to values")
    return recipe


def field_names(*dataclass_types: type) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}


def parse_args(*dataclass_types: type, args: list[str] | None = None, shared_keys: set[str] = frozenset()) -> tuple:
    """Parse `dataclass_types` from an optional recipe (first argument, .yaml/.yml) plus flags.

    Flags override the recipe. Recipe keys in `shared_keys` belong to the other scripts of the same
    pipeline and are skipped here; any other key this script does not know is an error."""
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(dataclass_types)
    if args and args[0].endswith((".yaml", ".yml")):
        recipe_path = args.pop(0)
        recipe = load_recipe(recipe_path)
        known = field_names(*dataclass_types)
        unknown = sorted(set(recipe) - known - set(shared_keys))
        if unknown:
            raise RecipeError(f"{recipe_path}: unknown key(s) {', '.join(unknown)}")
        own = {k: v for k, v in recipe.items() if k in known}
        parser.set_defaults(**own)
        for action in parser._actions:
            if action.dest in own:
                action.required = False  # given by the recipe
    try:
        return parser.parse_args_into_dataclasses(args=args)
    except ValueError as e:  # raised by the dataclasses' own checks
        raise UsageError(f"invalid argument: {e}") from e

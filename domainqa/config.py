"""Command-line parsing: a YAML recipe as the first argument, any field overridable by a flag."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from transformers import HfArgumentParser


class UsageError(ValueError):
    """Bad input from the user (arguments, recipe, data): reported as one clear line, not a traceback."""


class RecipeError(UsageError):
    """A recipe that cannot be used; the message names the file and the key."""


# Write failures that the user can fix and then rerun: the work done so far is kept.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


EXIT_USAGE = 2  # bad input, or a full disk: argparse's status for a usage error
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # 128 + SIGTERM, the status a process killed by it would have


def run_main(main: Callable[[list[str]], object], args: list[str] | None = None, prog: str | None = None) -> int:
    """Run a command's `main(args)` (default: this process's arguments) and return its exit status.

    Every command goes through here: bad input or a full disk is one line on stderr and status 2, Ctrl-C a
    short line and status 130; any other error keeps its traceback. An int that `main` returns is the
    status (e.g. augment's batch still pending), anything else means success."""
    prog = prog or Path(sys.argv[0]).name
    previous = signal.signal(signal.SIGTERM, _terminated) if _in_main_thread() else None
    try:
        result = main(list(sys.argv[1:] if args is None else args))
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"{prog}: terminated; what was saved is kept, rerun the same command to go on", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        reason = storage_failure(e)
        if reason is None:
            raise
        print(f"{prog}: error: {reason}; free space and rerun to go on", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, `kill`): unwound like Ctrl-C, so files being written are closed and
    partial files keep their complete rows."""


def _terminated(signum, frame) -> NoReturn:
    raise Terminated


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_cli(main: Callable[[list[str]], object], prog: str | None = None) -> NoReturn:
    """The `if __name__ == "__main__"` of every command: run_main on the command line, then exit."""
    sys.exit(run_main(main, prog=prog))


def storage_failure(error: BaseException) -> str | None:
    """One line for an error that a full disk (or quota) caused, else None. Libraries report it in their
    own words: an OSError here, a message from Rust (safetensors, tokenizers) or from torch's zip writer."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _STORAGE_ERRORS:
            return f"{seen.filename}: {seen.strerror}" if seen.filename else seen.strerror
        text = str(seen)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return "No space left on device"
        if "PytorchStreamWriter failed writing" in text or "unexpected pos" in text:
            return f"a file could not be written, the disk may be full ({text.strip().splitlines()[0][:120]})"
        seen = seen.__cause__ or seen.__context__
    return None


class RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans, true and false only: YAML 1.1 also reads yes, no, on and off as
    booleans, which would turn a label set [yes, no] or `unparsed_fallback: no` into true and false."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """YAML as recipes read it (YAML 1.2's booleans): recipes, run configs and a sweep's overrides alike."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader


def load_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        recipe = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML ({yaml_problem(e)})") from e
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of argument names to values")
    return recipe


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: the problem and where it is."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int | str = logging.INFO) -> None:
    """The log format and level of every command."""
    logging.basicConfig(format=LOG_FORMAT, level=level)


def field_names(*dataclass_types: type) -> set[str]:
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}


RECIPE_USAGE = "A YAML recipe comes first (script.py recipe.yaml) or as --config recipe.yaml; flags override it."


def _take_recipe_path(args: list[str]) -> str | None:
    """Remove the recipe from `args` and return it: a first argument ending in .yaml/.yml, or `--config PATH`
    (`--config=PATH`), the spelling of TRL's and alignment-handbook's scripts. Giving it twice is an error."""
    found = [args.pop(0)] if args and args[0].endswith((".yaml", ".yml")) else []
    i = 0
    while i < len(args):
        if args[i] == "--config":
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UsageError("invalid argument: --config needs a recipe file (--config recipe.yaml)")
            found.append(args.pop(i + 1))
            del args[i]
        elif args[i].startswith("--config="):
            found.append(args.pop(i).split("=", 1)[1])
        else:
            i += 1
    if len(found) > 1:
        raise UsageError(f"invalid argument: one recipe at a time, got {' and '.join(found)}")
    return found[0] if found else None


class OneLineErrors:
    """argparse reports a bad flag with the whole usage text and exits; here it is a UsageError, one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"invalid argument: {message}")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of the commands without a recipe (python -m domainqa.hub, python -m augment.merge)."""


class _Parser(OneLineErrors, HfArgumentParser):
    pass


def parse_args(
    *dataclass_types: type,
    args: list[str] | None = None,
    shared_keys: set[str] = frozenset(),
    settings: dict[str, Any] | None = None,
) -> tuple:
    """Parse `dataclass_types` from an optional recipe (first argument, .yaml/.yml, or `--config PATH`
    anywhere) plus flags.

    Flags override the recipe. Recipe keys in `shared_keys` belong to the other scripts of the same
    pipeline and are skipped here; any other key this script does not know is an error. `settings` are
    recipe keys set on top of the recipe, read exactly as if the recipe held them (a sweep's point)."""
    args = list(sys.argv[1:] if args is None else args)
    parser = _Parser(dataclass_types, epilog=RECIPE_USAGE)
    recipe_path, own = _take_recipe_path(args), {}
    if recipe_path is not None or settings:
        recipe = {**(load_recipe(recipe_path) if recipe_path is not None else {}), **(settings or {})}
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
    except UsageError as e:  # a value argparse refused: name the recipe when the value came from it
        key = re.search(r"argument --(\w+)", str(e))
        if recipe_path and key and key.group(1) in own and f"--{key.group(1)}" not in args:
            raise RecipeError(f"{recipe_path}: {key.group(1)}: {str(e).split(': ', 2)[-1]}") from None
        raise
    except ValueError as e:  # raised by the dataclasses' own checks
        where = f"{recipe_path}: " if recipe_path and _names_recipe_key(str(e), own, args) else ""
        raise UsageError(f"{where}invalid argument: {e}") from e


def _names_recipe_key(message: str, recipe: dict[str, Any], args: list[str]) -> bool:
    """Whether a check's message is about a value that came from the recipe, not from a flag."""
    key = message.split(" ", 1)[0]
    return key in recipe and f"--{key}" not in args

"""Checks of single argument values, run while the arguments are parsed: a bad number or path stops the
script in one line before any data or model loads. Each raises ValueError, which the argument parser
reports as a usage error (exit status 2)."""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import types
import typing
from collections.abc import Iterable
from pathlib import Path

# The Hub's repository names: letters, digits, '-', '_' and '.', not starting or ending with '-' or '.'.
_HUB_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
HUB_REPO_ID = re.compile(rf"{_HUB_NAME}/{_HUB_NAME}")
# A model as transformers names it: user/name or a bare name, then @revision (a branch, tag, commit, refs/pr/N).
HUB_MODEL_ID = re.compile(rf"(?:{_HUB_NAME}/)?{_HUB_NAME}(?:@[\w./-]+)?")


def at_least(name: str, value: float | None, minimum: float) -> None:
    """`value` >= `minimum` (None passes: the option is unset)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{name} must be a number, got {value!r}")  # e.g. a list from a recipe
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def one_of(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def literal_choices(instance: object, cls: type) -> None:
    """Every field `cls` declares with a `Literal[...]` type holds one of its choices. The parser checks a
    flag's value against them, but not a value a recipe sets as a default: this is the one check of both."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in cls.__dict__.get("__annotations__", {}):
            continue  # inherited: its own class checks it
        kind = hints[f.name]
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
        literal = next((a for a in typing.get_args(kind) if typing.get_origin(a) is typing.Literal), kind)
        value = getattr(instance, f.name)
        if typing.get_origin(literal) is typing.Literal and not (optional and value is None):
            one_of(f.name, value, typing.get_args(literal))


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _can_create_in(folder: Path) -> bool:
    # A real probe rather than os.access: root passes every access() test, and read-only mounts or
    # quotas only show when a file is created.
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def writable_folder(name: str, value: str | None) -> None:
    """A folder the script may write into: it exists as a folder, or can be created."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {value} is a file, not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ValueError(f"{name} {value}: {existing} is a file, not a folder")
    if not _can_create_in(existing):
        raise ValueError(f"{name} {value}: cannot write in {existing}")


def writable_file(name: str, value: str | None) -> None:
    """A file the script may (re)write: not a folder, and its folder is writable."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.is_dir():
        raise ValueError(f"{name} {value} is a folder; give a file name")
    writable_folder(f"{name}'s folder", str(path.parent))


def looks_like_path(value: str) -> bool:
    """True for what can only be a local path, never a Hub id (user/name or name, then @revision).

    The one test of it: model and adapter arguments (model_source) and Hub data sets (data.py) use it."""
    if value.endswith(("/", os.sep)):
        return True
    repo = value.split("@", 1)[0]  # a revision may hold slashes: user/name@refs/pr/1
    if repo.startswith((".", "/", "~")) or repo.count("/") > 1 or os.sep != "/" and os.sep in repo:
        return True
    # 'outputs/run' fits the user/name form, but where ./outputs exists it is a folder that is missing.
    return repo.count("/") == 1 and Path(repo.split("/")[0]).is_dir()


def model_source(name: str, value: str | None) -> None:
    """A local model or adapter folder, or a Hub id: a path that does not exist is an error here, not a
    Hub look-up that waits on the network and fails later."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{name} {value} is a file; give the folder of a model or adapter, or a Hub id")
        return
    if looks_like_path(value):
        raise ValueError(f"{name} {value}: no such folder")
    if not HUB_MODEL_ID.fullmatch(value):
        raise ValueError(f"{name} {value}: no such folder, nor a Hub id (user/name[@revision])")


def hub_repo_id(name: str, value: str | None) -> None:
    """A Hub repository to create or push to: user/name, in the characters the Hub accepts."""
    if value is not None and not HUB_REPO_ID.fullmatch(value):
        raise ValueError(f"{name} must be a Hub repository id user/name (letters, digits, - _ .), got {value!r}")

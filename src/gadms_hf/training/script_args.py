"""Arguments of the example scripts: the embedded default, an optional config file, then flags.

`HfArgumentParser` only knows the dataclass defaults, so a script that used its embedded default
only when the command line was empty dropped every embedded value as soon as one flag was given.
Here the embedded default becomes the parser's defaults, a config file (first argument) overrides
them, and flags override both; `--help` shows the values that actually apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from transformers import HfArgumentParser

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def parse_script_args(parser: HfArgumentParser, embedded_default: Mapping[str, Any],
                      argv: list[str] | None = None) -> tuple:
    """Embedded default < config file (`.json`/`.yaml`, first argument) < command-line flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = {action.dest for action in parser._actions}
    _check_keys(embedded_default, known, "the embedded default")
    parser.set_defaults(**embedded_default)
    given: set[str] = set()
    if argv and argv[0].endswith(CONFIG_SUFFIXES):
        path = argv.pop(0)
        values = read_config_file(path)
        _check_keys(values, known, path)
        parser.set_defaults(**values)
        given |= set(values)
    given |= {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    groups = tuple(parser.parse_args_into_dataclasses(args=argv))
    _check_combinations(groups, given)
    return groups


def read_config_file(path: str) -> dict[str, Any]:
    """The arguments of a `.json`/`.yaml` file, as a mapping of argument name to value."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} cannot be read: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of argument names to values, "
                         f"got {type(values).__name__}")
    return values


def _check_keys(values: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown argument(s) {unknown}; `--help` lists every argument")


def _check_combinations(groups: tuple, given: set[str]) -> None:
    """Refuse values that the defaults would silently make ineffective."""
    for group in groups:
        strategy = getattr(group, "save_strategy", None)
        if "save_steps" in given and "save_strategy" not in given and getattr(strategy, "value", strategy) == "no":
            raise ValueError(
                f"--save_steps {group.save_steps:g} has no effect: save_strategy is 'no' (the embedded default); "
                "add --save_strategy steps"
            )


@contextlib.contextmanager
def exit_on_bad_input(prog: str) -> Iterator[None]:
    """Inside this block a ValueError or OSError is the user's input: one `error:` line, exit status 2."""
    try:
        yield
    except (ValueError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["parse_script_args", "read_config_file", "exit_on_bad_input", "CONFIG_SUFFIXES"]

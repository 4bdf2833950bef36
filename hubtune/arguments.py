"""Argument parsing shared by every ``hubtune`` command and the Python entry points: dataclasses + a config file.

Each command parses its arguments with ``transformers.HfArgumentParser`` over typed dataclasses, as
Hugging Face's example scripts do: every field is a flag (``--field_name`` or ``--field-name``). A first
positional argument ending in ``.yaml``, ``.yml`` or ``.json`` is read as a configuration file holding the
same field names; flags given after it override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from hubtune.errors import ConfigError

__all__ = ["CONFIG_FILE_SUFFIXES", "read_config_file", "parse_command_line", "given_options"]

CONFIG_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of field names to values in a YAML or JSON configuration file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist; give the path of a .yaml or .json file.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - both parsers raise their own error types
        raise ConfigError(f"Config file {str(path)!r} is not valid {path.suffix[1:].upper()}: {e}".splitlines()[0]) from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"Config file {str(path)!r} holds a {type(values).__name__}; it must be a mapping of option names to "
            "values, e.g. `learning_rate: 0.001`."
        )
    return values


def parse_command_line(parser: HfArgumentParser, argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse ``argv`` (optionally led by a config file) into one instance of each of the parser's dataclasses.

    Unknown keys in the config file and values that a dataclass rejects raise :class:`ConfigError`;
    malformed flags end in argparse's usual one-line usage error (exit code 2).
    """
    argv = list(argv)
    file_values: dict[str, Any] = {}
    if _leading_config_file(argv) is not None:
        config_path = argv.pop(0)
        file_values = read_config_file(config_path)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(file_values) - known)
        if unknown:
            raise ConfigError(
                f"Config file {config_path!r} has unknown option(s) {', '.join(unknown)}; see `{parser.prog} --help` "
                "for the valid names (underscores, as in the flags)."
            )
        parser.set_defaults(**file_values)
    namespace, remaining = parser.parse_known_args(argv)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    values = vars(namespace)
    outputs = []
    for dataclass_type in parser.dataclass_types:
        names = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
        kwargs = {k: v for k, v in values.items() if k in names}
        try:
            outputs.append(dataclass_type(**kwargs))
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e).strip().splitlines()[0] if str(e).strip() else repr(e)) from e
    return tuple(outputs)


def _leading_config_file(argv: Sequence[str]) -> str | None:
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(CONFIG_FILE_SUFFIXES):
        return argv[0]
    return None


def given_options(parser: HfArgumentParser, argv: Sequence[str]) -> set[str]:
    """The option names the user set in ``argv``: the keys of a leading config file and the flags given (under any
    alias), whatever their value. Options left at their defaults are not in it, so that a method's training recipe
    can fill them (see :mod:`hubtune.training.recipes`)."""
    argv = list(argv)
    given: set[str] = set()
    config_path = _leading_config_file(argv)
    if config_path is not None:
        given |= set(read_config_file(argv.pop(0)))
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != argparse.SUPPRESS})
    parsed, _ = parser.parse_known_args(argv, namespace=namespace)
    return given | {name for name, value in vars(parsed).items() if value is not unset}

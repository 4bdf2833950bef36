"""Argument parsing shared by every ``hubtune`` command and the Python entry points: dataclasses + a config file.

Each command parses its arguments with ``transformers.HfArgumentParser`` over typed dataclasses, as
Hugging Face's example scripts do: every field is a flag (``--field_name`` or ``--field-name``). A first
positional argument ending in ``.yaml``, ``.yml`` or ``.json`` is read as a configuration file holding the
same field names; flags given after it override the file. Values read from a file are checked against the
dataclass field types (:func:`check_file_values`), as argparse checks flags; :func:`check_number` is the range
check of the numeric options.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import os
import types
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hubtune.errors import ConfigError, OutputDirError

if TYPE_CHECKING:  # the value checks need no transformers; the parser is the caller's
    from transformers import HfArgumentParser

__all__ = ["CONFIG_FILE_SUFFIXES", "HelpFormatter", "RawDescriptionHelpFormatter", "read_config_file", "check_file_values",
           "check_number", "check_output_dir", "parse_command_line", "given_options", "option_names", "optional_flag",
           "registry_fields"]

CONFIG_FILE_SUFFIXES = (".yaml", ".yml", ".json")
# Fields typed ``str`` that also take true / false in a file, as their flag does (``--resume_from_checkpoint true``).
_STR_FIELDS_TAKING_BOOLS = ("resume_from_checkpoint",)
# Fields typed ``str`` that hold a comma-separated list: a list in a file is refused with the spelling to use.
_COMMA_SEPARATED_FIELDS = ("diffaugment", "optim_args")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """The ``--help`` layout of every command: each option's default stated once.

    ``HfArgumentParser`` defaults to ``ArgumentDefaultsHelpFormatter``, which appends "(default: X)" to every help
    line, also after one that already says its default in words ("(default: the first free one from 7860)
    (default: None)"). This one adds it only where the help does not mention a default and there is one to show.
    """

    def _get_help_string(self, action):
        help_text = action.help or ""
        if not help_text or "default" in help_text.lower() or action.default in (None, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that prints the description as written (its own lists and examples)."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of field names to values in a YAML or JSON configuration file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Config file {str(path)!r} is a folder; give the path of a .yaml or .json file.")
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist; give the path of a .yaml or .json file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {str(path)!r} is not a text file (it is not UTF-8); give a .yaml or .json file "
                          "of option names and values, e.g. `learning_rate: 0.001`.") from None
    if "\x00" in text:
        raise ConfigError(f"Config file {str(path)!r} is a binary file, not YAML or JSON; give a .yaml or .json file "
                          "of option names and values, e.g. `learning_rate: 0.001`.")
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


# ------------------------------------------------------------------------------------------- value checks


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, below: float | None = None, integer: bool = False,
                 allow: tuple = ()) -> None:
    """ConfigError naming ``--name`` unless ``value`` is a finite number (an integer with ``integer``) in range.

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive ones; values in ``allow`` (e.g.
    ``-1`` for "unset") always pass.
    """
    if value in allow and not isinstance(value, bool):
        return
    parts = []
    if minimum is not None:
        parts.append(f">= {_number(minimum)}")
    if above is not None:
        parts.append(f"> {_number(above)}")
    if maximum is not None:
        parts.append(f"<= {_number(maximum)}")
    if below is not None:
        parts.append(f"< {_number(below)}")
    kind = "an integer" if integer else "a finite number"
    wanted = f"{kind} {' and '.join(parts)}".strip()
    if allow:
        wanted += f" (or {' / '.join(map(repr, allow))})"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
              and (above is None or value > above) and (below is None or value < below))
    if not ok:
        raise ConfigError(f"--{name} must be {wanted}, got {value!r}.")


def check_output_dir(output_dir: str | os.PathLike, option: str = "--output_dir") -> Path:
    """Refuse, before anything runs, an output folder that cannot be created or written.

    OutputDirError for a dangling symbolic link (the folder or a parent), a file, or a folder (or, when it does
    not exist yet, its nearest existing parent) that this user cannot write, e.g. on a read-only disk. Creates
    nothing; returns the path.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {str(path)!r} is a file, not a folder; choose another {option}.")
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise OutputDirError(
                f"{option} {str(path)!r} cannot be created: {str(existing)!r} is a dangling symbolic link (to "
                f"{os.readlink(existing)!r}, which does not exist); create the link's target, remove the link, or "
                f"choose another {option}."
            )
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputDirError(f"{option} {str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "the folder" if existing == path else f"its nearest existing parent {str(existing)!r}"
        raise OutputDirError(
            f"{option} {str(path)!r} cannot be written: {where} is read-only for this user (or on a read-only disk); "
            f"choose another {option} or fix its permissions. Nothing was run."
        )
    return path


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _field_types(dataclass_type: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(dataclass_type)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not checked
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(dataclass_type) if f.init}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    kind = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), f"a {type(value).__name__}")
    shown = repr(value) if not isinstance(value, (list, dict)) else json.dumps(value, default=str)
    return f"{shown[:60]}{'...' if len(shown) > 60 else ''} ({kind})"


def _union_args(hint: Any) -> tuple | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


class _Mismatch(Exception):
    """A value that does not fit a type; the message says what was expected."""


def _conform(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` expects it (numeric strings become numbers, a scalar becomes a one-item list);
    _Mismatch saying what was expected when it does not fit."""
    if hint is Any or isinstance(hint, (str, typing.TypeVar)) or hint is object:
        return value
    union = _union_args(hint)
    if union is not None:
        return _conform_union(value, union)
    if value is None:
        raise _Mismatch(_expected(hint))
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch(_expected(hint))
    if origin in (list, tuple, set, Sequence) or hint in (list, tuple):
        item_hint = (typing.get_args(hint) or (Any,))[0]
        items = value if isinstance(value, list) else [value]
        if isinstance(value, (dict, bool)) and item_hint not in (Any, bool):
            raise _Mismatch(_expected(hint))
        return [_conform(item, item_hint) for item in items]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if isinstance(value, dict):
            return value
        raise _Mismatch(_expected(hint))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(_expected(hint))
    if hint in (int, float):
        return _conform_number(value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(_expected(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint) or value in [member.value for member in hint]:
            return value
        raise _Mismatch(_expected(hint))
    return value  # a type hubtune does not check (the dataclass itself may)


def _conform_union(value: Any, union: tuple[Any, ...]) -> Any:
    """``value`` as the first member of ``union`` that takes it, trying scalars before lists."""
    if value is None and type(None) in union:
        return None
    expected = []
    # scalars first, so that a single value is wrapped into a one-item list only when nothing else takes it
    options = sorted((a for a in union if a is not type(None)), key=lambda a: _is_list_hint(a))
    for option in options:
        try:
            return _conform(value, option)
        except _Mismatch as e:
            expected.append(str(e))
    if type(None) in union:
        expected.append("null")
    raise _Mismatch(" or ".join(dict.fromkeys(expected)))


def _conform_number(value: Any, hint: type) -> int | float:
    """``value`` (a number or a numeric string) as an ``int`` (whole numbers only) or a ``float``."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value) if hint is float or not value.strip().lstrip("+-").isdigit() else int(value)
        except ValueError:
            raise _Mismatch(_expected(hint)) from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise _Mismatch(_expected(hint))
    if hint is int:
        if isinstance(number, float) and not number.is_integer():
            raise _Mismatch(_expected(hint))
        return int(number)
    return float(number)


def _is_list_hint(hint: Any) -> bool:
    return typing.get_origin(hint) in (list, tuple, set, Sequence) or hint in (list, tuple)


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin in (list, tuple, set, Sequence) or hint in (list, tuple):
        item = (typing.get_args(hint) or (Any,))[0]
        return "a list" if item is Any else f"a list of {_expected(item).removeprefix('a ').removeprefix('an ')}s"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in hint)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def check_file_values(dataclass_types: Sequence[type], values: Mapping[str, Any], source: str, *,
                      finite: bool = False) -> dict[str, Any]:
    """``values`` (option name -> value, from a config file or a dict) checked against the dataclass field types.

    As argparse does for flags: true / false only for boolean fields, numbers (or numeric strings, such as YAML's
    ``1e-3``) for numeric ones, strings for string and choice fields, lists only for list fields (a single value
    becomes a one-item list), null only for optional ones; with ``finite``, ``nan`` and ``inf`` are refused too (a
    method's knobs). Returns the values with numbers converted; raises ConfigError naming the option and ``source``
    (e.g. ``"config file 'run.yaml'"``) otherwise.
    """
    hints: dict[str, Any] = {}
    for dataclass_type in dataclass_types:
        hints.update(_field_types(dataclass_type))
    checked = dict(values)
    for name, value in values.items():
        if name not in hints:
            continue
        hint = hints[name]
        if name in _STR_FIELDS_TAKING_BOOLS and isinstance(value, bool):
            checked[name] = str(value).lower()
            continue
        try:
            checked[name] = _conform(value, hint)
        except _Mismatch as e:
            advice = ""
            if name in _COMMA_SEPARATED_FIELDS and isinstance(value, list):
                advice = f"; write it as one comma-separated string: `{name}: {','.join(map(str, value))}`"
            elif hint is bool or (_union_args(hint) and bool in _union_args(hint)):
                advice = f"; write `{name}: true` or `{name}: false`"
            elif value is None:
                advice = f"; give a value or leave `{name}` out for its default"
            raise ConfigError(f"{source[:1].upper()}{source[1:]}: {name} must be {e}, not {_describe(value)}{advice}.") from None
        if finite and isinstance(checked[name], float) and not math.isfinite(checked[name]):
            raise ConfigError(f"{source[:1].upper()}{source[1:]}: {name} must be a finite number, not {value!r}.")
    return checked


def registry_fields(config_classes: Iterable[tuple[str, type]],
                    skip: Collection[str] = ()) -> dict[str, tuple[Any, dataclasses.Field, list[str]]]:
    """Every field of a registry's config dataclasses (the training methods' knobs, the GAN architectures' options),
    for generating one flag per name: name -> (its type, the first dataclass field of that name, the registered
    names that have it), in registration order; the names in ``skip`` are left out."""
    found: dict[str, tuple[Any, dataclasses.Field, list[str]]] = {}
    for owner, config_class in config_classes:
        hints = typing.get_type_hints(config_class)
        for f in dataclasses.fields(config_class):
            if f.name in skip:
                continue
            kind, first, owners = found.get(f.name, (hints[f.name], f, []))
            found[f.name] = (kind, first, [*owners, owner])
    return found


def optional_flag(kind: Any, help_text: str) -> tuple[Any, dataclasses.Field]:
    """(annotation, field) of a flag that stays None unless given (so that the owner's default applies): ``kind |
    None``; for a boolean, a bare ``--flag`` means true."""
    annotation = kind if type(None) in typing.get_args(kind) else kind | None
    bare_is_true = {"nargs": "?", "const": True} if bool in typing.get_args(annotation) else {}
    return annotation, dataclasses.field(default=None, metadata={"help": help_text, **bare_is_true})


def option_names(parser: HfArgumentParser) -> set[str]:
    """The option names of ``parser``: the init fields of its dataclasses (``HfArgumentParser`` makes one option per
    field, ``--no_NAME`` included under the same name). Read from the public ``dataclass_types``, not argparse's
    private ``_actions``."""
    return {f.name for dataclass_type in parser.dataclass_types for f in dataclasses.fields(dataclass_type) if f.init}


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
        unknown = sorted(set(file_values) - option_names(parser))
        if unknown:
            raise ConfigError(
                f"Config file {config_path!r} has unknown option(s) {', '.join(unknown)}; see `{parser.prog} --help` "
                "for the valid names (underscores, as in the flags)."
            )
        file_values = check_file_values(parser.dataclass_types, file_values, f"config file {config_path!r}")
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
    # argparse fills in a default only where the namespace has no value yet, so the options still unset afterwards
    # are exactly those not given
    namespace = argparse.Namespace(**dict.fromkeys(option_names(parser), unset))
    parsed, _ = parser.parse_known_args(argv, namespace=namespace)
    return given | {name for name, value in vars(parsed).items() if value is not unset}

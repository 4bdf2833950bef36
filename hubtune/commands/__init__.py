"""The ``hubtune`` command line: ``finetune`` (the main job), ``gan``, ``ood`` and ``push``.

Commands are registered here, statically. Each command module has ``HELP`` (one line), ``build_parser()``
(an ``HfArgumentParser``) and ``run(argv) -> int``. Every failure a user can cause is a
:class:`~hubtune.errors.HubtuneError`; :func:`main` prints its message on one line and returns 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hubtune import __version__
from hubtune.commands import convert, finetune, gan, ood, push
from hubtune.errors import HubtuneError

__all__ = ["COMMANDS", "main"]

COMMANDS = {"finetune": finetune, "gan": gan, "ood": ood, "push": push, "convert": convert}


def _usage() -> str:
    lines = ["usage: hubtune [--version] COMMAND [CONFIG.yaml|CONFIG.json] [--option value ...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name.ljust(width)}  {module.HELP}" for name, module in COMMANDS.items()]
    lines += ["", "`hubtune COMMAND --help` lists a command's options. With no options, `hubtune finetune` runs",
              "Core-tuning on scikit-learn's digits, offline."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hubtune ARGV``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"hubtune {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"hubtune: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    try:
        return int(command.run(rest) or 0)
    except HubtuneError as e:
        # Known failure modes carry a message that says what to do: one line, no traceback.
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"hubtune {name}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hubtune {name}: interrupted; completed checkpoints are kept (resume with --resume_from_checkpoint).",
              file=sys.stderr)
        return 130

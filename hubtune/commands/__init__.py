"""The ``hubtune`` command line: ``finetune`` (the main job), ``compare``, ``gan``, ``ood``, ``demo``, ``push`` and ``convert``.

Commands are registered in :data:`COMMANDS`, one line each: name -> (module, one-line help). A command's module
is imported only when that command runs, so ``hubtune --help`` imports neither torch nor transformers. Each
command module has ``build_parser()`` (an ``HfArgumentParser``) and ``run(argv) -> int``. Every failure a user
can cause is a :class:`~hubtune.errors.HubtuneError`; :func:`main` prints its message on one line and returns 1.
Ctrl-C and SIGTERM are the run layer's (:mod:`hubtune.runs.interrupt`): the line naming the last checkpoint, exit
codes 130 and 143. What a run tells you on the way is the ``hubtune.run`` logger's (:mod:`hubtune.messages`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from hubtune import __version__, _auto_classes
from hubtune.errors import HubtuneError
from hubtune.runs.interrupt import exit_line, sigterm_as_interrupt

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "finetune": ("hubtune.commands.finetune",
                 "fine-tune a timm / transformers backbone with a registered method (default: Core-tuning; see below)"),
    "compare": ("hubtune.commands.compare",
                "does a method help on my data? train several methods over seeds, paired, and report the differences"),
    "gan": ("hubtune.commands.gan",
            "train a GAN with the AdaptiveMix discriminator regulariser and publish its generator"),
    "ood": ("hubtune.commands.ood",
            "out-of-distribution detection: score in-distribution and OOD images, print AUROC / FPR95 / AUPR"),
    "demo": ("hubtune.commands.demo",
             "a local web app for a generator or a classifier (output folder or Hub repo); needs hubtune[demo]"),
    "push": ("hubtune.commands.push", "publish a finished output folder (model, card) to the Hugging Face Hub"),
    "convert": ("hubtune.commands.convert",
                "convert a MoCo v1/v2/v3 or torchvision checkpoint into a timm local-dir: backbone folder "
                "(safetensors)"),
}


def _usage() -> str:
    lines = ["usage: hubtune [--version] COMMAND [CONFIG.yaml|CONFIG.json] [--option value ...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name.ljust(width)}  {help_line}" for name, (_, help_line) in COMMANDS.items()]
    lines += ["", f"methods (hubtune finetune --method NAME): {', '.join(_registered_methods())}", "",
              "`hubtune COMMAND --help` lists a command's options. With no options, `hubtune finetune` runs",
              "Core-tuning on scikit-learn's digits, offline; then `hubtune demo hubtune-output` shows it in a browser."]
    return "\n".join(lines)


def _registered_methods() -> tuple[str, ...]:
    """The training methods' registry (hubtune.methods imports torch: only for this help, not for --version)."""
    return importlib.import_module("hubtune.methods").available_methods()


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
    if name not in COMMANDS:
        print(f"hubtune: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    _auto_classes.uninstall()  # argument parsing imports transformers; a command that loads a model registers
    try:
        with sigterm_as_interrupt():  # SIGTERM stops a run as Ctrl-C does (hubtune.runs.interrupt)
            return int(importlib.import_module(COMMANDS[name][0]).run(rest) or 0)
    except HubtuneError as e:
        # Known failure modes carry a message that says what to do: one line, no traceback.
        print(f"hubtune {name}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        # The machine refused a read or write (disk full, read-only file system, permissions ...).
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"hubtune {name}: error: could not read or write{where}: {e.strerror or _one_line(e)}. Free space, check "
              "the folder's permissions or choose another --output_dir; completed files are left as they were.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: where to resume from, and the shell's code (130 / 143)
        line, code = exit_line(name, e)
        print(line, file=sys.stderr)
        return code


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())

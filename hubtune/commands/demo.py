"""``hubtune demo MODEL``: a local web app (Gradio) for a generator or a classifier; see :mod:`hubtune.demo`.

MODEL is an output folder of ``hubtune gan`` / ``hubtune finetune`` or a Hub repo id. The app binds 127.0.0.1
unless ``--host`` says otherwise, and runs on the GPU when there is one (``--device cpu`` to avoid it).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser

import hubtune.demo
from hubtune.commands._parsing import HelpFormatter, parse_command_line
from hubtune.errors import ConfigError

__all__ = ["HELP", "DemoArguments", "build_parser", "run"]

HELP = "a local web app for a generator or a classifier (output folder or Hub repo); needs hubtune[demo]"


@dataclass
class DemoArguments:
    """What to show, and where."""

    model: str | None = field(default=None, metadata={
        "help": "output folder (hubtune gan / finetune) or Hub repo id ORG/NAME; also the first positional"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to bind (0.0.0.0 makes the app reachable from other machines)"})
    port: int | None = field(default=None, metadata={"help": "port (default: the first free one from 7860)"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda when present, else cpu)"})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)"})
    hub_token: str | None = field(default=None, metadata={
        "help": "Hub token for a private repo (default: HF_TOKEN or the stored login)", "aliases": ["--token"]})

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("hubtune demo needs a model: `hubtune demo DIR` or `hubtune demo ORG/NAME`.")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"--port must be from 1 to 65535, got {self.port}.")


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        DemoArguments, prog="hubtune demo",
        formatter_class=HelpFormatter,
        description="Launch a local web app for a generator (seed, number of images, truncation psi, PNG download) "
        "or a classifier (top-5 labels of an image), with the card's key facts. Needs `pip install "
        "'hubtune[demo]'`. Usage: hubtune demo MODEL [--host 127.0.0.1] [--port 7860].",
    )


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--model", argv.pop(0), *argv]
    (args,) = parse_command_line(build_parser(), argv)
    hubtune.demo.require_gradio()  # before loading the model: the one-line install hint comes at once
    _check_host(args.host)
    blocks = hubtune.demo.build_demo(args.model, device=args.device, token=args.hub_token, revision=args.revision)
    try:
        hubtune.demo.launch_demo(blocks, host=args.host, port=args.port)
    except OSError as e:
        raise _port_error(e) from None
    return 0


def _check_host(host: str) -> None:
    """A --host this machine cannot bind fails in Gradio as a busy port would, whatever the port: named first."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host.strip("[]"), 0))
    except OSError as e:
        raise ConfigError(f"--host {host} cannot be bound on this machine ({e.strerror or e}); pass one of its "
                          "addresses (127.0.0.1, or 0.0.0.0 for every interface).") from None


def _port_error(error: OSError) -> Exception:
    """Gradio's "Cannot find empty port in range: A-B ..." (it tries --port, else 7860 to 7959) in hubtune's words;
    any other OSError as it is."""
    found = re.search(r"Cannot find empty port in range: (\d+)-(\d+)", str(error))
    if not found:
        return error
    low, high = found.groups()
    if low != high:
        return ConfigError(f"no free port from {low} to {high}; pass a free one with --port.")
    restricted = " or needs administrator rights (ports below 1024)" if int(low) < 1024 else ""
    return ConfigError(f"port {low} is in use{restricted}; pass another --port (or leave it out to take the first free "
                       "one).")

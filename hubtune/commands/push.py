"""``hubtune push DIR ORG/NAME``: publish a finished output folder (model + card) to the Hugging Face Hub.

``DIR ORG/NAME`` may also be given as ``--folder DIR --repo_id ORG/NAME`` (or in a YAML / JSON config file).
Goes through ``huggingface_hub`` (honours ``HF_ENDPOINT`` and ``HF_TOKEN``); see :func:`hubtune.hub.push_folder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hubtune.commands._parsing import CONFIG_FILE_SUFFIXES, HelpFormatter, parse_command_line
from hubtune.errors import ConfigError
from hubtune.hub import DEFAULT_COMMIT_MESSAGE, push_folder
from hubtune.hub.space import push_model_and_space

__all__ = ["HELP", "PushArguments", "build_parser", "positionals_to_flags", "run"]

HELP = "publish a finished output folder (model, card) to the Hugging Face Hub"


@dataclass
class PushArguments:
    """What to publish, and where."""

    folder: str | None = field(default=None, metadata={
        "help": "output folder to publish (config.json, model.safetensors, README.md); also the first positional"})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo id ORG/NAME; also the second positional"})
    hub_private_repo: bool = field(default=False, metadata={
        "help": "create the repo private", "aliases": ["--private"]})
    revision: str | None = field(default=None, metadata={"help": "branch to push to (created if missing)"})
    hub_token: str | None = field(default=None, metadata={
        "help": "Hub token (default: HF_TOKEN or the stored login)", "aliases": ["--token"]})
    commit_message: str = field(default=DEFAULT_COMMIT_MESSAGE, metadata={"help": "the commit's summary"})
    space: str | None = field(default=None, metadata={
        "help": "also publish a Gradio Space NAME (in the model's namespace) or ORG/NAME running `hubtune demo` "
                "on the model; the model card links to it"})

    def __post_init__(self) -> None:
        missing = [name for name in ("folder", "repo_id") if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"hubtune push needs {' and '.join(missing)}: `hubtune push DIR ORG/NAME` (or --folder DIR "
                "--repo_id ORG/NAME)."
            )


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        PushArguments,
        prog="hubtune push",
        formatter_class=HelpFormatter,
        description="Upload an output folder of `hubtune finetune` (config.json, model.safetensors, README.md) to "
        "the Hub through huggingface_hub; honours HF_ENDPOINT and HF_TOKEN. Usage: hubtune push [CONFIG.yaml] "
        "DIR ORG/NAME [--options].",
    )


def positionals_to_flags(argv: Sequence[str]) -> list[str]:
    """``[CONFIG] DIR ORG/NAME ...`` -> ``[CONFIG] --folder DIR --repo_id ORG/NAME ...`` (flags are kept as given)."""
    argv = list(argv)
    head = []
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(CONFIG_FILE_SUFFIXES):
        head.append(argv.pop(0))
    for flag in ("--folder", "--repo_id"):
        if not argv or argv[0].startswith("-"):
            break
        head += [flag, argv.pop(0)]
    return head + argv


def run(argv: Sequence[str]) -> int:
    (args,) = parse_command_line(build_parser(), positionals_to_flags(argv))
    options = dict(token=args.hub_token, private=args.hub_private_repo, revision=args.revision,
                   commit_message=args.commit_message)
    if args.space:
        model_url, space_url = push_model_and_space(args.folder, args.repo_id, args.space, **options)
        print(model_url)
        print(space_url)
        return 0
    print(push_folder(args.folder, args.repo_id, **options))
    return 0

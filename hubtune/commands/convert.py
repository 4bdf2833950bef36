"""``hubtune convert``: a MoCo v1/v2/v3 or torchvision checkpoint -> a timm ``local-dir:`` folder (safetensors).

    hubtune convert moco_v2_800ep_pretrain.pth.tar weights/mocov2_r50
    hubtune convert --checkpoint CKPT --output_dir DIR [--architecture resnet50] [--source_format auto]

See :mod:`hubtune.convert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hubtune.commands._parsing import CONFIG_FILE_SUFFIXES, HelpFormatter, parse_command_line
from hubtune.convert import SOURCE_FORMATS, convert_checkpoint
from hubtune.errors import ConfigError

HELP = "convert a MoCo v1/v2/v3 or torchvision checkpoint into a timm local-dir: backbone folder (safetensors)"


@dataclass
class ConvertArguments:
    checkpoint: str | None = field(default=None, metadata={"help": "the .pth / .pth.tar checkpoint (read with weights_only=True)"})
    output_dir: str | None = field(default=None, metadata={"help": "the folder to write: config.json + model.safetensors"})
    architecture: str = field(default="resnet50", metadata={"help": "the timm architecture of the weights"})
    source_format: str = field(
        default="auto", metadata={"help": "checkpoint layout", "choices": list(SOURCE_FORMATS)}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace a folder that already holds a model"})

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError("Give the checkpoint: `hubtune convert CHECKPOINT OUTPUT_DIR` (or --checkpoint PATH).")
        if not self.output_dir:
            raise ConfigError("Give the output folder: `hubtune convert CHECKPOINT OUTPUT_DIR` (or --output_dir DIR).")


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        ConvertArguments, prog="hubtune convert", description=HELP,
        formatter_class=HelpFormatter,
        usage="hubtune convert CHECKPOINT OUTPUT_DIR [--architecture resnet50] [--source_format auto] [--overwrite]",
    )


def _positionals_to_flags(argv: Sequence[str]) -> list[str]:
    """``CKPT OUTDIR [flags]`` -> ``--checkpoint CKPT --output_dir OUTDIR [flags]`` (a config file stays first)."""
    argv = list(argv)
    names = ["--checkpoint", "--output_dir"]
    if argv and not argv[0].startswith("-") and argv[0].lower().endswith(CONFIG_FILE_SUFFIXES):
        return argv
    out = []
    while argv and names and not argv[0].startswith("-"):
        out += [names.pop(0), argv.pop(0)]
    return out + argv


def run(argv: Sequence[str]) -> int:
    (args,) = parse_command_line(build_parser(), _positionals_to_flags(argv))
    folder = convert_checkpoint(args.checkpoint, args.output_dir, architecture=args.architecture,
                                source_format=args.source_format, overwrite=args.overwrite)
    print(f"wrote {folder} (config.json + model.safetensors)")
    print(f"backbone: local-dir:{folder}")
    print(f"  e.g. `hubtune finetune --model local-dir:{folder} --pretrained` or "
          f"create_backbone('local-dir:{folder}', pretrained=True)")
    return 0

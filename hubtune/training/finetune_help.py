"""The short ``hubtune finetune --help``: usage, the common options and examples, in plain text.

It imports nothing (no torch, no transformers), so that ``--help`` answers at once; ``--help-all`` builds the
parser (:func:`hubtune.training.finetune_args.finetune_parser`, whose description is the same text) and lists every
option in groups: model, data, method, then transformers' TrainingArguments. A test checks that every option named
here is one of the parser's, with the default stated.
"""

from __future__ import annotations

__all__ = ["DESCRIPTION", "HELP_ALL", "USAGE", "short_help"]

HELP_ALL = "--help-all"

USAGE = """hubtune finetune [CONFIG.yaml|CONFIG.json] [--model NAME] [--pretrained] [--dataset DATA]
                        [--method NAME] [--num_train_epochs N] [--learning_rate LR]
                        [--per_device_train_batch_size B] [--output_dir DIR] [--push_to_hub --hub_model_id ORG/NAME]
                        [--option value ...]"""

DESCRIPTION = """\
Fine-tune a timm / transformers backbone with a registered method (default: Core-tuning). With no arguments:
Core-tuning of a randomly initialised resnet18 on scikit-learn's digits, offline, into ./hubtune-output.

common options:
  --model NAME            timm name, hf-hub:ORG/NAME, local-dir:PATH, or a transformers id / folder (resnet18)
  --pretrained [BOOL]     load pretrained weights (default: yes when --model names weights, no for resnet18)
  --dataset DATA          digits, an image folder (one sub-folder per class), a saved dataset or a Hub name
  --image_size PX         input size in pixels (32)
  --method NAME           core-tuning (default) or another registered method (`hubtune --help` lists them);
                          knobs: --eta, --temperature, --alpha, ...
  --recipe METHOD         train with that method's recipe instead (--method ce --recipe bss: tllib's fine-tuning)
  --lr_multipliers P=X    learning rate per part, e.g. backbone=0.1 (the pre-trained backbone at 0.1x)
  --num_train_epochs N    epochs (5); also --epochs
  --learning_rate LR      peak learning rate (the method's recipe when pretrained, else 0.001); also --lr
  --per_device_train_batch_size B   batch size per device (64); also --batch_size
  --output_dir DIR        model, card, metrics, checkpoints and demo examples (hubtune-output)
  --report_to NAME        tensorboard, wandb, ... (pip install 'hubtune[tensorboard]')
  --push_to_hub --hub_model_id ORG/NAME [--hub_space NAME]
                          publish the result at the end (and a demo Space running `hubtune demo` on it)

examples:
  hubtune finetune --model hf-hub:timm/resnet50.a1_in1k --pretrained --dataset ./my_images --image_size 224 \\
      --epochs 10 --lr 0.01 --optim sgd
  hubtune finetune run.yaml --learning_rate 0.003      # a YAML / JSON file of these options, one overridden
  hubtune demo hubtune-output                          # try the result in your browser
  hubtune push hubtune-output ORG/NAME --space NAME    # publish it, with a demo Space
"""


def short_help() -> str:
    """What ``hubtune finetune --help`` prints."""
    return (f"usage: {USAGE}\n\n{DESCRIPTION}\nEvery option (about 200: the knobs of each method and the whole of "
            f"transformers' TrainingArguments, in groups): hubtune finetune {HELP_ALL}\n")

"""One process of a streaming ``hubtune finetune`` run, started by tests/test_streaming_runs.py (under torchrun for
two processes, or imported for one).

It records, for every training step, which examples the process trained on (each test image is one colour that
encodes its id, and crops and resizes of one colour keep it) and writes them to ``<output_dir>/seen_<rank>.json``.
With ``--stop_at N`` it raises KeyboardInterrupt when step N begins, as Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def example_ids(pixels) -> list[int]:
    """The ids of a uint8 batch (B, 3, H, W) of one-colour images (red + 256 x green)."""
    return [int(p[0, 0, 0]) + 256 * int(p[1, 0, 0]) for p in pixels]


def run(argv: list[str], stop_at: int | None = None) -> list[dict]:
    """``hubtune finetune ARGV`` through the Python API, recording what this process trained on."""
    from hubtune.training import parse_finetune_args, run_finetune
    from hubtune.training.trainer import HubtuneTrainer

    seen: list[dict] = []
    original = HubtuneTrainer.training_step

    def recording(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step + 1
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt
        seen.append({"step": step, "ids": example_ids(inputs["pixel_values"])})
        return original(self, model, inputs, num_items_in_batch)

    HubtuneTrainer.training_step = recording
    args = parse_finetune_args(argv)
    try:
        run_finetune(*args)
    finally:
        HubtuneTrainer.training_step = original
        out = Path(args[-1].output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"seen_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
    return seen


if __name__ == "__main__":
    # argv: one or more runs separated by "--next"
    runs, current = [], []
    for arg in sys.argv[1:]:
        if arg == "--next":
            runs.append(current)
            current = []
        else:
            current.append(arg)
    for argv in [*runs, current]:
        run(argv)

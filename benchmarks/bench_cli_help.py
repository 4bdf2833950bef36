"""Wall time of `hubtune --help` and `hubtune COMMAND --help` (each a fresh interpreter), commands interleaved
so that a shared machine's load hits each alike; prints the median per command as JSON lines.

    python benchmarks/bench_cli_help.py                  # 5 rounds, every command
    python benchmarks/bench_cli_help.py --repeats 3 --commands "" finetune

The target is under 2 s each on an idle machine; `hubtune --help` imports neither torch nor transformers
(tests/commands/test_cli_help.py checks that), `hubtune finetune --help` only torch and TrainingArguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import time_interleaved  # noqa: E402

COMMANDS = ["", "finetune", "gan", "ood", "push", "convert"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--commands", nargs="*", default=COMMANDS, help='"" is `hubtune --help` itself')
    args = parser.parse_args(argv)

    def step(command):
        argv = [sys.executable, "-m", "hubtune", *([command] if command else []), "--help"]
        return lambda: subprocess.run(argv, check=True, capture_output=True)

    times = time_interleaved({c: step(c) for c in args.commands}, warmup=1, repeats=args.repeats)
    for command, seconds in times.items():
        print(json.dumps({"command": f"hubtune {command} --help".replace("  ", " "),
                          "median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
                          "repeats": len(seconds)}))


if __name__ == "__main__":
    main()

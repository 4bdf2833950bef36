"""Every Python snippet of README.md runs as pasted: in order, in one interpreter (as a reader pastes them into one
session), in an empty folder, against the local test Hub with a token in HF_TOKEN (as after `hf auth login`).

The one thing a snippet takes as given is made first: the generator `me/my-gan` that the GAN section loads (its
training command needs your images and hours). The bash snippets are commands covered by the command tests; those
that download weights or run for hours are not run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_DRIVER = """
import json, sys, traceback
snippets = json.load(open(sys.argv[1]))
scope = {"__name__": "__main__"}
for line, code in snippets:
    try:
        exec(compile(code, f"README.md:{line}", "exec"), scope)
    except BaseException:
        print(f"README.md snippet at line {line} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
print(f"{len(snippets)} snippets ran")
"""


def python_snippets(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of each ```python block."""
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"^```python\n(.*?)^```", text,
                                                                                re.S | re.M)]


def test_the_readme_has_the_snippets_this_test_runs():
    snippets = python_snippets(README.read_text(encoding="utf-8"))
    assert len(snippets) >= 5
    assert any("CoreTuningLoss(" in code for _, code in snippets)
    assert any("trainer.train()" in code for _, code in snippets)


def test_every_python_snippet_of_the_readme_runs_as_pasted(local_hub, hub_token, tmp_path):
    import torch
    from hubtune.gan import DCGANGenerator

    torch.manual_seed(0)
    DCGANGenerator(image_size=16, channels=1, latent_dim=8, base_channels=8).push_to_hub("me/my-gan", token=hub_token)
    snippets = tmp_path / "snippets.json"
    snippets.write_text(json.dumps(python_snippets(README.read_text(encoding="utf-8"))))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HF_TOKEN": hub_token, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(snippets)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "snippets ran" in proc.stdout
    assert (work / "out" / "model.safetensors").is_file() and (work / "out-resumable" / "config.json").is_file()
    assert "model.safetensors" in local_hub.files("me/digits-resnet18")

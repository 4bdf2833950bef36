"""`hubtune --help` and `hubtune COMMAND --help` are quick because nothing heavy is imported for them (checked on
sys.modules in a fresh interpreter, not timed; benchmarks/bench_cli_help.py times them); `hubtune --help` lists the
registered methods; `hubtune finetune --help` is short (usage, the common options, examples: no torch import) and
`--help-all` is grouped (hubtune's model, data and method options first, then the Trainer's); every command's help
states each default once."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hubtune.commands import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "transformers", "datasets")


def _imported_after(code: str) -> dict:
    probe = (f"import sys, json, contextlib, io\n"
             f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             f"    {code}\n"
             f"print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "from hubtune.commands import main; main(['--version'])",
    "import hubtune",
    "from hubtune.commands import main; main(['finetune', '--help'])",
])
def test_version_import_and_finetune_help_import_none_of_torch_timm_transformers_datasets(code):
    modules = _imported_after(code)
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, sorted(m for m in modules if m in HEAVY)


def test_hubtune_help_lists_the_registered_methods_and_imports_no_timm_transformers_datasets(capsys):
    from hubtune.methods import available_methods

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    (line,) = [row for row in text.splitlines() if row.startswith("methods")]
    assert line.endswith(": " + ", ".join(available_methods()))
    modules = _imported_after("from hubtune.commands import main; main(['--help'])")  # the registry needs torch only
    assert not {m for m in modules if m.split(".")[0] in ("timm", "transformers", "datasets")}


def test_finetune_help_all_imports_no_model_data_or_trainer_code():
    code = ("from hubtune.commands import main\n"
            "    try:\n"
            "        main(['finetune', '--help-all'])\n"
            "    except SystemExit:\n"
            "        pass")
    modules = _imported_after(code)
    for heavy in ("timm", "datasets", "hubtune.modeling", "hubtune.data", "hubtune.training.trainer",
                  "transformers.trainer", "sklearn", "matplotlib"):
        assert heavy not in modules, heavy


def test_import_hubtune_still_registers_the_auto_classes_once_transformers_is_imported():
    modules = _imported_after("import hubtune, transformers; transformers.AutoConfig.for_model('hubtune')")
    assert "hubtune.modeling" in modules


def test_commands_are_a_name_to_module_mapping_with_matching_help():
    for name, (module, help_line) in COMMANDS.items():
        assert importlib.import_module(module).HELP == help_line, name


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", text, re.M), name


def _help(*argv) -> str:
    proc = subprocess.run([sys.executable, "-m", "hubtune", *argv], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin",
                                                      "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def finetune_help():
    return _help("finetune", "--help-all")


def test_finetune_help_is_short_the_common_options_and_examples_and_the_way_to_all(capsys):
    from hubtune.training.finetune_args import finetune_parser

    assert main(["finetune", "--help"]) == 0
    short = capsys.readouterr().out
    assert short.startswith("usage: hubtune finetune [CONFIG.yaml|CONFIG.json] [--model NAME]")
    assert len(short.splitlines()) <= 45 and "hubtune finetune --help-all" in short.splitlines()[-1]
    for option in ("--model", "--pretrained", "--dataset", "--method", "--num_train_epochs", "--learning_rate",
                   "--output_dir", "--push_to_hub", "--hub_space"):
        assert option in short, option
    assert "examples:" in short and "hubtune finetune --model " in short and "hubtune demo hubtune-output" in short
    # every option the short help names is one of the parser's (a renamed option cannot leave it stale)
    flags = {s for action in finetune_parser()._actions for s in action.option_strings}
    options = short.split("common options:")[1].split("examples:")[0]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z_-]+", options))
    assert named <= flags, sorted(named - flags)


def test_finetune_help_all_starts_with_the_short_help_then_every_option(finetune_help):
    first_screen = "\n".join(finetune_help.splitlines()[:40])
    assert first_screen.startswith("usage: hubtune finetune [CONFIG.yaml|CONFIG.json] [--model NAME]")
    assert "common options:" in first_screen and "examples:" in first_screen
    usage = finetune_help.split("\n\n")[0]
    assert len(usage.splitlines()) <= 5  # not argparse's list of all 200 flags
    assert "--gradient_checkpointing" in finetune_help and "--eta" in finetune_help


def test_finetune_help_groups_hubtune_options_first_then_the_trainers(finetune_help):
    headings = re.findall(r"^(\S[^\n]*):$", finetune_help, re.M)
    groups = {re.match(r"\w+", h).group(): h for h in headings}
    groups = {key: h for key, h in groups.items() if key in ("model", "data", "method", "training")}
    assert list(groups) == ["model", "data", "method", "training"]
    sections = {key: finetune_help.split(f"\n{h}:\n")[1].split("\n\n")[0] for key, h in groups.items()}
    assert "--pretrained" in sections["model"] and "--dataset" in sections["data"]
    assert "--eta" in sections["method"] and "--learning_rate" in sections["training"]


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "finetune"] + ["finetune --help-all"])
def test_every_help_states_each_default_once(command, finetune_help):
    text = finetune_help if command == "finetune --help-all" else \
        importlib.import_module(COMMANDS[command][0]).build_parser().format_help()
    blocks = re.split(r"\n  (?=-)", text.split("\noptions:\n", 1)[1])
    doubled = [b.split()[0] for b in blocks if len(re.findall(r"\(default", " ".join(b.split()))) > 1]
    assert not doubled, doubled
    assert "(default: random init) (default: False)" not in " ".join(text.split())

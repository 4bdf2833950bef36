"""Every recipe value and default knob cites its source (issue 24): nothing in the package, the docs or the README may
rest on a paper "as recalled" or "from memory", and every registered method's ``recipe_source`` names the repository
and file its recipe follows.

The scan reads text files only (nothing is imported); it is checked first on a small tree written to ``tmp_path``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hubtune.methods import available_methods, get_method

ROOT = Path(__file__).resolve().parent.parent
# Phrases that mark a value taken from memory instead of from a source one can open.
UNCITED = re.compile(r"as\s+recalled|from\s+memory", re.IGNORECASE)
TEXT_SUFFIXES = {".py", ".md", ".txt", ".yaml", ".yml", ".json", ".jinja", ".toml", ".cfg", ".html"}
# "owner/name" of a public repository followed, somewhere after it, by a file of it.
REPOSITORY_FILE = re.compile(r"\b[\w.-]+/[\w.-]+\b.*?\b[\w./-]+\.(?:py|sh)\b")


def uncited_phrases(paths: list[Path]) -> list[str]:
    """``path:line: text`` for every line under ``paths`` (files, or folders searched for text files) that says a
    value was recalled or written from memory."""
    found = []
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                     if p.is_file() and p.suffix in TEXT_SUFFIXES)
        for file in files:
            for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if UNCITED.search(line):
                    found.append(f"{file}:{number}: {line.strip()}")
    return found


def test_the_scan_finds_uncited_phrases_in_files_and_folders(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "knobs.py").write_text("ALPHA = 0.1  # the paper's value (As  Recalled)\n")
    (tmp_path / "pkg" / "clean.py").write_text("BETA = 0.01  # tllib delta.py:328\n")
    (tmp_path / "pkg" / "image.png").write_bytes(b"\x89PNG as recalled")  # not a text file: not read
    (tmp_path / "README.md").write_text("# t\n\nValues set from\tmemory of the papers.\n")
    found = uncited_phrases([tmp_path / "pkg", tmp_path / "README.md"])
    assert [f.split(": ", 1)[0] for f in found] == [f"{tmp_path / 'pkg' / 'sub' / 'knobs.py'}:1",
                                                   f"{tmp_path / 'README.md'}:3"]


def test_no_value_rests_on_memory_in_the_package_docs_or_readme():
    found = uncited_phrases([ROOT / "hubtune", ROOT / "docs", ROOT / "README.md"])
    assert not found, "cite the source (repository, file and line, or the paper's section) instead of:\n" + "\n".join(found)


@pytest.mark.parametrize("source, names_a_file", [
    ("Vanint/Core-tuning Core-tuning.py:339-340: SGD Nesterov 0.9", True),
    ("thuml/Transfer-Learning-Library examples/task_adaptation/image_classification/bss.py, --finetune", True),
    ("L2-SP (Li et al., ICML 2018): SGD momentum 0.9", False),  # a paper, no file
    ("the CE recipe", False),
    ("run.sh of the authors", False),  # a file, no repository
])
def test_the_repository_file_pattern(source, names_a_file):
    assert bool(REPOSITORY_FILE.search(source)) is names_a_file


@pytest.mark.parametrize("name", available_methods())
def test_every_registered_recipe_names_the_repository_file_it_follows(name):
    method = get_method(name)
    assert method.recipe, f"method {name!r} has no training recipe"
    assert ".py" in method.recipe_source or ".sh" in method.recipe_source, (name, method.recipe_source)
    assert REPOSITORY_FILE.search(method.recipe_source), (name, method.recipe_source)

"""The shape of hubtune's code, read with `ast` (nothing is imported): no function over 60 lines or over 8 parameters,
and no ``print(`` in library code (the commands print; the library logs through :mod:`hubtune.messages` or returns).

The rule, the same for every file:

* a function's length is the lines from its ``def`` to its last line (docstring and comments included, decorators
  not); nested functions and methods count on their own (``Class.method``, ``outer.inner``);
* its parameters are the named ones (positional-only, positional and keyword-only), without a leading ``self`` or
  ``cls``; ``*args`` and ``**kwargs`` are not counted;
* a ``print`` is a call of the name ``print`` anywhere in ``hubtune/`` outside ``hubtune/commands/``.

Exceptions are listed below, each with its reason: a public constructor whose parameters are the keys of a saved
config.json (its class docstring says so, and a config object is accepted too).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "hubtune"
MAX_LINES = 60
MAX_PARAMETERS = 8

# Public constructors whose parameters are the keys of a saved config.json: how the library rebuilds a saved object.
CONFIG_CONSTRUCTORS = {
    "hubtune/modeling.py:HubtuneConfig.__init__":
        "transformers rebuilds a saved HubtuneConfig by calling it with config.json's keys; from_dict takes the dict",
    "hubtune/gan/stylegan2.py:StyleGAN2Generator.__init__":
        "Generator.from_pretrained rebuilds it with config.json's keys; StyleGAN2Generator.from_config takes the dict",
}



@dataclass(frozen=True)
class Finding:
    path: str  # relative to the repository root, with forward slashes
    name: str  # qualified name of the function, or "print" for a print call
    lineno: int
    lines: int = 0
    parameters: int = 0

    @property
    def key(self) -> str:
        return f"{self.path}:{self.name}"

    def __str__(self) -> str:
        if self.name == "print":
            return f"{self.path}:{self.lineno} print(...)"
        return f"{self.path}:{self.lineno} {self.name}: {self.lines} lines, {self.parameters} parameters"


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def shape_of(source: str, path: str) -> tuple[list[Finding], list[Finding]]:
    """(every function with its length and parameter count, every ``print`` call) of one module's source."""
    functions, prints = [], []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = ".".join((*scope, child.name))
                functions.append(Finding(path, name, child.lineno, child.end_lineno - child.lineno + 1,
                                         _parameters(child)))
                visit(child, (*scope, child.name))
            elif isinstance(child, ast.ClassDef):
                visit(child, (*scope, child.name))
            else:
                if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                    prints.append(Finding(path, "print", child.lineno))
                visit(child, scope)

    visit(ast.parse(source), ())
    return functions, prints


def scan(package_dir: Path = PACKAGE_DIR) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(functions over MAX_LINES, functions over MAX_PARAMETERS, print calls outside commands/) of the package."""
    long, many, prints = [], [], []
    for file in sorted(package_dir.rglob("*.py")):
        path = file.relative_to(package_dir.parent).as_posix()
        functions, calls = shape_of(file.read_text(encoding="utf-8"), path)
        long += [f for f in functions if f.lines > MAX_LINES]
        many += [f for f in functions if f.parameters > MAX_PARAMETERS]
        if not path.startswith(f"{package_dir.name}/commands/"):
            prints += calls
    return long, many, prints


def _reported(findings: list[Finding], allowed: dict[str, str] | None = None) -> list[str]:
    return [str(f) for f in findings if f.key not in (allowed or {})]


# --------------------------------------------------------------------------------------------- the rule itself


def test_the_rule_counts_lines_parameters_and_prints_as_documented():
    body = "\n".join(f"    x{i} = {i}" for i in range(59))  # def line + 59 = 60 lines: allowed
    source = (
        f"def sixty(a, b):\n{body}\n\n"
        f"def sixty_one():\n{body}\n    return x0\n\n"
        "class Model:\n"
        "    def method(self, a, b, c, d, e, f, g, h, *args, **kwargs):\n        print('x')\n\n"
        "    @classmethod\n    def nine(cls, a, b, c, d, e, f, g, h, /, *, i):\n        return [print(i)]\n\n"
        "def outer():\n    def inner(a, b, c, d, e, f, g, h, i):\n        pass\n"
    )
    functions, prints = shape_of(source, "pkg/m.py")
    by_name = {f.name: f for f in functions}
    assert (by_name["sixty"].lines, by_name["sixty"].parameters) == (60, 2)
    assert by_name["sixty_one"].lines == 61
    assert by_name["Model.method"].parameters == 8  # self, *args and **kwargs are not counted
    assert by_name["Model.nine"].parameters == 9  # cls is not; positional-only and keyword-only are
    assert by_name["outer.inner"].parameters == 9
    assert [p.lineno for p in prints] == [i + 1 for i, line in enumerate(source.splitlines()) if "print(" in line]
    assert len(prints) == 2


def test_commands_may_print_and_the_library_may_not(tmp_path):
    package = tmp_path / "pkg"
    (package / "commands").mkdir(parents=True)
    (package / "commands" / "run.py").write_text("def main():\n    print('done')\n")
    (package / "core.py").write_text("def work():\n    print('working')\n")
    _, _, prints = scan(package)
    assert [str(p) for p in prints] == ["pkg/core.py:2 print(...)"]


# --------------------------------------------------------------------------------------------- hubtune


def test_no_function_is_over_60_lines():
    long, _, _ = scan()
    reported = _reported(long)
    assert not reported, "Split these functions (at most 60 lines each):\n  " + "\n  ".join(reported)


def test_no_function_takes_over_8_parameters_but_the_config_json_constructors():
    _, many, _ = scan()
    reported = _reported(many, CONFIG_CONSTRUCTORS)
    assert not reported, "Give these functions fewer parameters (at most 8; group them in a config object):\n  " + (
        "\n  ".join(reported))


def test_the_config_json_constructors_are_still_exceptions_and_say_why():
    _, many, _ = scan()
    over = {f.key for f in many}
    for key in CONFIG_CONSTRUCTORS:
        assert key in over, f"{key} takes at most {MAX_PARAMETERS} parameters now: remove it from CONFIG_CONSTRUCTORS"
        path, qualified = key.split(":")
        class_name = qualified.split(".")[0]
        tree = ast.parse((PACKAGE_DIR.parent / path).read_text(encoding="utf-8"))
        (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        doc = " ".join((ast.get_docstring(cls) or "").split())
        assert "parameters are the keys of the config.json" in doc, f"{class_name}'s docstring must say why"


def test_library_code_does_not_print():
    _, _, prints = scan()
    reported = _reported(prints)
    assert not reported, ("Library code logs (hubtune.messages.say / warn) or returns; only hubtune/commands/ "
                          "prints:\n  " + "\n  ".join(reported))

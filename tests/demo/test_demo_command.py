"""`hubtune demo` without the [demo] extra: one line saying how to install it, before any model is loaded."""

from __future__ import annotations

import sys

import pytest

from hubtune.commands import main


@pytest.fixture
def no_gradio(monkeypatch):
    for name in [m for m in sys.modules if m == "gradio" or m.startswith("gradio.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError


def test_without_gradio_demo_prints_one_line_saying_how_to_install_it(no_gradio, tmp_path, capsys):
    # tmp_path holds no model: the install hint comes first, before the model is looked at
    assert main(["demo", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("hubtune demo: error: the demo needs Gradio, which is not installed: "
                   "pip install 'hubtune[demo]'.")


def test_without_gradio_the_library_entry_points_say_the_same(no_gradio):
    import hubtune.demo
    from hubtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pip install 'hubtune\[demo\]'"):
        hubtune.demo.launch_demo("any/model")


@pytest.mark.parametrize(("argv", "message"), [
    (["demo"], "hubtune demo needs a model"),
    (["demo", "x", "--port", "70000"], "--port must be from 1 to 65535"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_folder_without_a_model_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "config.json" in err and len(err.strip().splitlines()) == 1

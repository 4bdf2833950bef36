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


def test_a_busy_port_is_a_one_line_error_naming_it(classifier_folder, capsys):
    """Issue 28: `hubtune demo --port N` on a busy port printed "could not read or write: Cannot find empty port in
    range ... Free space, check the folder's permissions or choose another --output_dir"."""
    import socket

    from demo_helpers import digest

    before = digest(classifier_folder)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["demo", str(classifier_folder), "--port", str(port), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == (f"hubtune demo: error: port {port} is in use; pass another --port (or leave it out "
                                 "to take the first free one).")
    assert digest(classifier_folder) == before


def test_a_host_that_is_not_this_machines_is_named_not_blamed_on_the_port(classifier_folder, capsys):
    from demo_helpers import free_port

    code = main(["demo", str(classifier_folder), "--host", "203.0.113.7", "--port", str(free_port()), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("hubtune demo: error: --host 203.0.113.7 cannot be bound on this machine") and "port" not in err

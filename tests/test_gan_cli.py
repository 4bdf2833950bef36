"""`hubtune gan` command line: a tiny run that pushes to the local Hub, and clear errors."""

import argparse
import json

import pytest
import torch
from accelerate.state import AcceleratorState

from hubtune.gan import Generator
from hubtune.gan.cli import add_parser


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def parse(argv):
    parser = argparse.ArgumentParser(prog="hubtune")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_defaults_are_the_documented_ones():
    args = parse(["gan"])
    assert (args.data, args.arch, args.image_size, args.adaptivemix, args.resume, args.push_to_hub) == (
        "digits", "dcgan", 32, True, False, None)
    assert parse(["gan", "--no-adaptivemix", "--resume"]).adaptivemix is False
    assert parse(["gan", "--resume"]).resume is True
    assert parse(["gan", "--resume", "out/checkpoint-4"]).resume == "out/checkpoint-4"
    with pytest.raises(SystemExit):
        parse(["gan", "--arch", "stylegan"])


def test_tiny_run_writes_generator_and_pushes(tmp_path, capsys, local_hub, hub_token, hub_repo_id):
    out = tmp_path / "cli"
    args = parse(["gan", "--data", "digits", "--arch", "dcgan", "--image-size", "16", "--steps", "2",
                  "--batch-size", "8", "--output-dir", str(out), "--eval-samples", "0", "--no-progress",
                  "--seed", "3", "--mixed-precision", "bf16", "--push-to-hub", hub_repo_id, "--hub-token", hub_token])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "generator folder" in printed and f"pushed {out / 'generator'} to {hub_repo_id}" in printed
    config = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["config"]
    assert config["mixed_precision"] == "bf16" and config["seed"] == 3 and config["adaptivemix"] is True
    assert (out / "samples" / "step-0000002.png").exists()
    local = Generator.from_pretrained(out / "generator")
    remote = Generator.from_pretrained(hub_repo_id, token=hub_token)
    assert torch.equal(local.generate(3, seed=0), remote.generate(3, seed=0))


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    args = parse(["gan", "--output-dir", str(tmp_path / "none"), "--resume", "--steps", "2", "--no-progress"])
    assert args.func(args) == 1
    assert "no complete checkpoint" in capsys.readouterr().err
    args = parse(["gan", "--steps", "0", "--output-dir", str(tmp_path / "x")])
    assert args.func(args) == 1
    assert "steps must be a positive integer" in capsys.readouterr().err

"""`hubtune gan` command line: HfArgumentParser flags, a config file, a tiny run that pushes, clear errors."""

import json

import pytest
import torch

from hubtune.commands import gan as gan_command
from hubtune.commands import main
from hubtune.commands._parsing import parse_command_line
from hubtune.gan import GANTrainingResult, Generator


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def parse(argv):
    (arguments,) = parse_command_line(gan_command.build_parser(), argv)
    config, _deprecations = arguments.to_config()
    return config


def values(argv):
    """The parsed config's values by flag name (``GANTrainingConfig.to_dict``)."""
    return parse(argv).to_dict()


def test_defaults_and_the_shared_flag_vocabulary(monkeypatch):
    config = parse([])
    assert (config.data.dataset, config.model.arch, config.data.image_size, config.adaptive_mix.adaptivemix,
            config.resume_from_checkpoint, config.hub.push_to_hub, config.optim.bf16, config.optim.fp16,
            config.adaptive_mix.adaptivemix_preset) == ("digits", "dcgan", 32, True, None, False, False, False, "paper")
    assert values(["--no_adaptivemix"])["adaptivemix"] is False
    assert parse(["--resume_from_checkpoint"]).resume_from_checkpoint == "latest"
    assert parse(["--resume_from_checkpoint", "out/checkpoint-4"]).resume_from_checkpoint == "out/checkpoint-4"
    assert parse(["--batch-size", "4"]).optim.per_device_train_batch_size == 4
    monkeypatch.setattr("hubtune.trackers._installed", lambda module: True)  # parsing only; wandb need not be installed
    assert parse(["--max-steps", "9", "--log_with", "tensorboard", "wandb"]).log_with == ["tensorboard", "wandb"]
    assert values(["--ada_preset", "reference"])["adaptivemix_preset"] == "reference"
    assert gan_command.build_parser().prog == "hubtune gan"
    with pytest.raises(SystemExit):
        parse(["--arch", "stylegan"])
    with pytest.raises(SystemExit):
        parse(["--ada_preset", "default"])


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "gan.yaml"
    path.write_text("max_steps: 7\narch: resnet\nlr_g: 0.001\n")
    config = values([str(path), "--max_steps", "10"])
    assert (config["max_steps"], config["arch"], config["lr_g"]) == (10, "resnet", 0.001)


def test_tiny_run_writes_generator_at_the_root_and_pushes(tmp_path, capsys, local_hub, hub_token, hub_repo_id):
    out = tmp_path / "cli"
    code = main(["gan", "--dataset", "digits", "--arch", "dcgan", "--image_size", "16", "--max_steps", "2",
                 "--per_device_train_batch_size", "8", "--output_dir", str(out), "--eval_num_samples", "0",
                 "--no_progress_bar", "--seed", "3", "--bf16", "--push_to_hub", "--hub_model_id", hub_repo_id,
                 "--hub_token", hub_token])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"Generator.from_pretrained({str(out)!r})" in printed and "pushed the generator" in printed
    config = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["config"]
    assert config["bf16"] is True and config["seed"] == 3 and config["adaptivemix"] is True
    assert "hub_token" not in config and hub_token not in (out / "training_config.json").read_text()
    assert (out / "samples" / "step-0000002.png").exists()
    local = Generator.from_pretrained(out)
    remote = Generator.from_pretrained(hub_repo_id, token=hub_token)
    assert torch.equal(local.generate(3, seed=0), remote.generate(3, seed=0))


def test_errors_are_one_line_messages_not_tracebacks(tmp_path, capsys):
    assert main(["gan", "--output_dir", str(tmp_path / "none"), "--resume_from_checkpoint", "--max_steps", "2",
                 "--no_progress_bar"]) == 1
    err = capsys.readouterr().err
    assert "no complete checkpoint" in err and err.count("\n") == 1
    assert main(["gan", "--max_steps", "0", "--output_dir", str(tmp_path / "x")]) == 1
    assert "max_steps must be a positive integer" in capsys.readouterr().err
    assert main(["gan", "--bf16", "--fp16", "--output_dir", str(tmp_path / "y")]) == 1
    assert "bf16 and fp16" in capsys.readouterr().err
    assert main(["gan", "--push_to_hub", "--output_dir", str(tmp_path / "z")]) == 1
    assert "hub_model_id" in capsys.readouterr().err


def test_only_the_main_process_prints_the_summary(capsys):
    result = GANTrainingResult(output_dir="out", steps=2, losses=[], metrics={"fid": 1.0}, generator_dir="out",
                               last_checkpoint=None, sample_grids=[], wall_time_s=1.0, is_main_process=False)
    gan_command.print_summary(result)
    assert capsys.readouterr().out == ""
    result.is_main_process = True
    gan_command.print_summary(result)
    assert "fid" in capsys.readouterr().out


def test_stylegan2_augmentation_and_timm_discriminator_flags():
    config = parse(["--arch", "stylegan2", "--arch_preset", "paper256", "--image_size", "256", "--r1_interval", "8",
                    "--diffaugment", "color,cutout", "--augment_target", "0.6", "--discriminator", "timm:resnet18",
                    "--discriminator_frozen", "--discriminator_stages", "2", "3", "--lr_d", "0.002"])
    flat = config.to_dict()
    assert (flat["arch"], flat["arch_preset"], flat["r1_every"], flat["diffaugment"], flat["augment_target"]) == (
        "stylegan2", "paper256", 8, "color,cutout", 0.6)
    options = config.model.discriminator_config
    assert (config.model.discriminator, options.discriminator_frozen, options.discriminator_stages) == (
        "timm:resnet18", True, [2, 3])
    # the preset's Adam settings unless given; AdaptiveMix's --adaptivemix_preset is a different knob
    assert (flat["lr_g"], flat["lr_d"], config.optim.betas, flat["pl_weight"], flat["adaptivemix_preset"]) == (
        0.0025, 0.002, (0.0, 0.99), 2.0, "paper")
    assert (flat["channel_base"], flat["channel_max"], flat["latent_dim"], flat["minibatch_std_group"]) == (
        16384, 512, 512, 8)
    with pytest.raises(SystemExit):
        parse(["--arch_preset", "paper"])
    assert parse(["--arch", "resnet"]).optim.lr_g == 2e-4

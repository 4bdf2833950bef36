"""The GAN architecture registry: a toy architecture defined and registered here trains through `hubtune gan`, gets
its own flags, card and reload; the architectures' options stay their own; old names (flags, YAML files, checkpoint
configs) keep loading."""

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hubtune.commands import gan as gan_command
from hubtune.commands import main
from hubtune.commands._parsing import parse_command_line
from hubtune.errors import ConfigError
from hubtune.gan import GANTrainingConfig, Generator
from hubtune.gan.archs import (
    ARCHITECTURES,
    ArchConfig,
    GANArchitecture,
    GeneratorRegulariser,
    TrainingDefaults,
    architectures,
    register_architecture,
    unregister_architecture,
)
from hubtune.gan.archs.base import option
from hubtune.gan.checkpoint import read_trainer_state
from hubtune.gan.models import Discriminator

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


class ToyGenerator(Generator):
    arch = "toy"

    def __init__(self, latent_dim: int = 8, image_size: int = 16, channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.net = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, channels * image_size ** 2),
                                 nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, self.channels, self.image_size, self.image_size)


class ToyDiscriminator(Discriminator):
    def __init__(self, image_size: int, channels: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size ** 2, width), nn.LeakyReLU(0.2))
        self.linear = nn.Linear(width, 1)

    def features(self, x):
        return self.body(x)

    def head(self, features):
        return self.linear(features)


class ToyPenalty(GeneratorRegulariser):
    """Mean squared output of G on fresh latents, every other step; counts its calls as its per-process state."""

    def __init__(self, weight: float) -> None:
        self.weight, self.interval, self.calls = weight, 2, 0

    def penalty(self, G, batch_size, device, accelerator):
        self.calls += 1
        latent_dim = accelerator.unwrap_model(G).latent_dim
        return G(torch.randn(batch_size, latent_dim, device=device)).float().pow(2).mean()

    def logged_values(self, penalty):
        return {"toy_penalty": penalty.detach().float()}

    def state_dict(self):
        return {"toy_calls": self.calls}

    def load_state_dict(self, state):
        self.calls = int(state["toy_calls"])


@dataclass
class ToyConfig(ArchConfig):
    toy_width: int = option(4, "width of the toy networks")
    toy_penalty: float = option(0.0, "weight of the toy generator penalty")

    def __post_init__(self):
        if self.toy_width < 1:
            raise ConfigError(f"toy_width must be >= 1, got {self.toy_width}")


class ToyArchitecture(GANArchitecture):
    name = "toy"
    title = "Toy MLP GAN"
    config_class = ToyConfig
    default_latent_dim = 8
    generator = ToyGenerator

    def training_defaults(self, batch_size):
        return TrainingDefaults(lr=1e-3, betas=(0.0, 0.9), r1_gamma=0.0, r1_every=1, ema_decay=0.5)

    def build(self, image_size, channels, latent_dim):
        width = self.config.toy_width
        return ToyGenerator(latent_dim, image_size, channels, width), ToyDiscriminator(image_size, channels, width)

    def generator_regularisers(self, batch_size):
        return [ToyPenalty(self.config.toy_penalty)] if self.config.toy_penalty else []


@pytest.fixture
def toy():
    register_architecture(ToyArchitecture)
    yield ToyArchitecture
    unregister_architecture("toy")


def test_a_toy_architecture_trains_through_hubtune_gan_with_its_card_and_reload(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    code = main(["gan", "--arch", "toy", "--toy_width", "6", "--toy_penalty", "0.5", "--image_size", "16",
                 "--max_steps", "4", "--per_device_train_batch_size", "8", "--output_dir", str(out),
                 "--eval_num_samples", "0", "--no_progress_bar", "--checkpoint_every", "2", "--log_every", "1"])
    assert code == 0 and "Generator.from_pretrained" in capsys.readouterr().out
    logs = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines() if line]
    assert [("toy_penalty" in r) for r in logs if "loss_d" in r] == [True, False, True, False]  # steps 0 and 2
    state = read_trainer_state(out / "checkpoint-4")
    assert state["config"]["arch"] == "toy" and state["config"]["toy_width"] == 6
    assert state["config"]["lr_g"] == 1e-3 and state["config"]["ema_decay"] == 0.5  # the toy's defaults
    assert json.loads((out / "checkpoint-4" / "process_state_0.json").read_text()) == {"toy_calls": 2}
    card = (out / "README.md").read_text()
    assert "Toy MLP GAN" in card and "- toy" in card
    loaded = Generator.from_pretrained(out)
    assert isinstance(loaded, ToyGenerator) and loaded.net[0].out_features == 6
    images = loaded.generate(3, seed=1)
    assert images.shape == (3, 1, 16, 16) and torch.equal(images, loaded.generate(3, seed=1))

    # resume: the toy's options are checked against the checkpoint's, and its penalty's state comes back
    from hubtune.errors import CheckpointError
    from hubtune.gan import train_gan

    resume = dict(arch="toy", toy_penalty=0.5, image_size=16, per_device_train_batch_size=8, max_steps=6,
                  output_dir=str(out), eval_num_samples=0, progress_bar=False, checkpoint_every=2,
                  resume_from_checkpoint="latest")
    with pytest.raises(CheckpointError, match="toy_width: checkpoint 6 vs now 5"):
        train_gan(GANTrainingConfig.from_options(toy_width=5, **resume))
    train_gan(GANTrainingConfig.from_options(toy_width=6, **resume))
    assert json.loads((out / "checkpoint-6" / "process_state_0.json").read_text()) == {"toy_calls": 3}


def test_the_registry_gives_each_architecture_its_own_options_and_flags(toy):
    assert {"dcgan", "resnet", "stylegan2", "toy"} <= set(architectures("gan"))
    assert "timm" in architectures("discriminator") and "timm" in ARCHITECTURES
    help_text = gan_command.build_parser().format_help()
    assert "--toy_width" in help_text and "option of toy" in help_text and "--w_dim" in help_text
    build = GANTrainingConfig.from_options
    config = build(arch="toy", toy_width=3)
    assert config.model.arch_config == ToyConfig(toy_width=3) and config.model.latent_dim == 8
    assert config.model.architecture.config.toy_width == 3 and isinstance(config.model.architecture, ToyArchitecture)
    assert config.to_dict()["toy_width"] == 3 and "w_dim" not in config.to_dict()
    with pytest.raises(ConfigError, match="toy_width does not apply to --arch dcgan"):
        build(toy_width=3)
    with pytest.raises(ConfigError, match="w_dim does not apply to --arch dcgan.*--arch stylegan2"):
        build(w_dim=16)
    with pytest.raises(ConfigError, match="discriminator_frozen needs --discriminator timm"):
        build(discriminator_frozen=True)
    with pytest.raises(ConfigError, match="Unknown arch 'stylegan'"):
        build(arch="stylegan")
    timm = build(discriminator="timm-random:resnet10t", discriminator_hidden=8)
    assert timm.model.discriminator_config.discriminator_hidden == 8 and timm.to_dict()["discriminator_hidden"] == 8


def test_old_names_still_load_as_flags_yaml_and_checkpoint_configs(tmp_path, capsys):
    (arguments,) = parse_command_line(gan_command.build_parser(), [
        "--ada_weight", "0.3", "--ada_target", "0.6", "--ada_preset", "reference", "--ada_kimg", "50",
        "--ada_interval", "2", "--ada_alpha", "0.5", "--ada_sigma", "0.1", "--ada_distance", "mse",
        "--ada_per_sample", "true"])
    config, notes = arguments.to_config()
    mix, augment = config.adaptive_mix, config.augment
    assert (mix.adaptivemix_shrinkage_weight, augment.augment_target, mix.adaptivemix_preset,
            augment.augment_kimg, augment.augment_interval, mix.adaptivemix_alpha, mix.adaptivemix_sigma,
            mix.adaptivemix_distance, mix.adaptivemix_per_sample) == (
        0.3, 0.6, "reference", 50.0, 2, 0.5, 0.1, "mse", True)
    assert len(notes) == 9 and all("is deprecated; use --" in line for line in notes)
    assert "--ada_target is deprecated; use --augment_target" in "\n".join(notes)

    path = tmp_path / "old.yaml"
    path.write_text("ada_weight: 0.7\nada_mix_fakes: false\nmax_steps: 3\n")
    (arguments,) = parse_command_line(gan_command.build_parser(), [str(path)])
    config, notes = arguments.to_config()
    assert config.adaptive_mix.adaptivemix_shrinkage_weight == 0.7 and config.adaptive_mix.adaptivemix_mix_fakes is False
    assert len(notes) == 2

    # a checkpoint's config written before the rename: every option side by side, old names, old spellings
    old = {"data": "digits", "steps": 5, "batch_size": 8, "arch": "dcgan", "ada_weight": 0.4, "ada_preset": "default",
           "ada_target": 0.5, "ada_interval": 3, "ada_kimg": 20.0, "w_dim": None, "pl_weight": 0.0, "pl_interval": 4,
           "arch_preset": "small", "minibatch_std_group": 0, "d_norm": "batch", "discriminator_hidden": 256,
           "discriminator_stages": [], "mixed_precision": "no", "betas": [0.5, 0.999]}
    config = GANTrainingConfig.from_dict(old)
    assert (config.schedule.max_steps, config.optim.per_device_train_batch_size,
            config.adaptive_mix.adaptivemix_shrinkage_weight, config.adaptive_mix.adaptivemix_preset,
            config.augment.augment_target, config.augment.augment_interval, config.augment.augment_kimg,
            config.model.arch_config.d_norm) == (5, 8, 0.4, "paper", 0.5, 3, 20.0, "batch")
    with pytest.warns(DeprecationWarning, match="ada_target is now augment_target"):
        assert GANTrainingConfig.from_options(ada_target=0.6).augment.augment_target == 0.6


def test_adaptive_mix_settings_are_one_statement_shared_by_the_three_users():
    from hubtune.losses.adaptive_mix import AdaptiveMix, AdaptiveMixClassifierLoss, AdaptiveMixSettings
    from hubtune.methods.adaptive_mix import AdaptiveMixConfig

    for bad in (dict(adaptivemix_alpha=0.0), dict(adaptivemix_sigma=-1.0), dict(adaptivemix_shrinkage_weight=math.inf)):
        with pytest.raises(ConfigError):
            GANTrainingConfig.from_options(**bad)
    with pytest.raises(ConfigError, match="alpha"):
        AdaptiveMixConfig(alpha=0.0)
    with pytest.raises(ConfigError, match="shrinkage_weight"):
        AdaptiveMix(shrinkage_weight=-1.0)
    # the measured per-use defaults of the weight, from the one dataclass
    assert GANTrainingConfig.from_options().adaptive_mix.adaptivemix_shrinkage_weight == \
        AdaptiveMixSettings.GAN_WEIGHT["paper"] == 0.1
    assert GANTrainingConfig.from_options(adaptivemix_preset="reference").adaptive_mix.adaptivemix_shrinkage_weight == 1.0
    assert AdaptiveMixConfig().shrinkage_weight == AdaptiveMixClassifierLoss().weight == 1.0
    # the older keyword of the losses still works, with a deprecation warning
    with pytest.warns(DeprecationWarning, match="shrinkage_weight"):
        assert AdaptiveMix(weight=0.25).weight == 0.25
    with pytest.raises(ConfigError, match="not both"):
        AdaptiveMixClassifierLoss(weight=0.5, shrinkage_weight=0.5)


def test_gan_help_imports_neither_torch_nor_the_models():
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import contextlib, io, json, sys\n"
             "from hubtune.commands import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    try:\n"
             "        main(['gan', '--help'])\n"
             "    except SystemExit:\n"
             "        pass\n"
             "assert '--augment_target' in out.getvalue() and '--w_dim' in out.getvalue()\n"
             "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    for heavy in ("torch", "timm", "datasets", "hubtune.gan.models", "hubtune.gan.loop", "hubtune.gan.stylegan2"):
        assert heavy not in modules, heavy

"""The training loop with the new parts: `hubtune gan --arch stylegan2` (lazy R1, path length, EMA with buffers),
DiffAugment / ADA composed with AdaptiveMix, timm backbones as discriminators, and 2 processes (gloo)."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file

from hubtune.commands import main
from hubtune.errors import ConfigError
from hubtune.gan import (
    AdaptiveAugmentProbability,
    GANTrainingConfig,
    Generator,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    build_gan,
    build_timm_discriminator,
    discriminator_step,
    generator_step,
    group_preserving_permutation,
    train_gan,
)
from hubtune.gan.checkpoint import load_module, read_trainer_state
from hubtune.gan.loop import lazy_regularisation_factor, prepare_run
from hubtune.losses.adaptive_mix import AdaptiveMix, MixDraws

MOBILENET = Path("/root/.cache/hubtune/mobilenetv2_100.tv_in1k")
WIDTHS = dict(channel_base=256, channel_max=16, latent_dim=16, w_dim=16, mapping_layers=2)
WIDTH_FLAGS = ["--channel_base", "256", "--channel_max", "16", "--latent_dim", "16", "--w_dim", "16",
               "--mapping_layers", "2"]
TINY = dict(dataset="digits", arch="stylegan2", image_size=32, per_device_train_batch_size=8, log_every=1,
            sample_every=100, checkpoint_every=100, num_sample_images=4, eval_num_samples=0, export_generator=False,
            progress_bar=False, **WIDTHS)


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def tiny(tmp_path, name="run", **overrides):
    return GANTrainingConfig.from_options(**{**TINY, "output_dir": str(tmp_path / name), **overrides})


# ------------------------------------------------------------------------------------------------ config


def test_stylegan2_config_takes_the_preset_defaults_unless_given():
    build = GANTrainingConfig.from_options
    c = build(arch="stylegan2")
    o, options = c.optim, c.model.arch_config
    assert (o.lr_g, o.lr_d, o.betas, o.r1_gamma, o.r1_every, options.pl_weight) == (0.0025, 0.0025, (0.0, 0.99), 0.1, 16,
                                                                                     0.0)
    assert (c.model.latent_dim, options.channel_base, options.channel_max, options.minibatch_std_group) == (
        128, 2048, 128, 4)
    assert o.ema_decay == pytest.approx(0.5 ** (64 / 10_000))  # StyleGAN2-ADA: ema_kimg 10, batch 64
    paper = build(arch="stylegan2", arch_preset="paper256", lr_g=0.002, r1_every=8)
    assert (paper.optim.lr_g, paper.optim.lr_d, paper.optim.r1_every, paper.model.arch_config.pl_weight,
            paper.optim.r1_gamma) == (0.002, 0.0025, 8, 2.0, 1.0)
    assert GANTrainingConfig.from_dict(paper.to_dict()) == paper
    dc = build()
    assert (dc.optim.lr_g, dc.optim.betas, dc.optim.r1_gamma, dc.optim.r1_every, dc.optim.ema_decay,
            dc.model.latent_dim) == (2e-4, (0.5, 0.999), 0.0, 1, 0.999, 64)
    assert build(arch="resnet").model.arch_config.minibatch_std_group == 0  # resnet's option; dcgan has none
    assert "minibatch_std_group" not in dc.to_dict()
    assert lazy_regularisation_factor(16, True) == 16 / 17 and lazy_regularisation_factor(16, False) == 1.0
    ada = build(augment_target=0.6)
    assert ada.augment.diffaugment == "color,translation,cutout" and ada.augment.card_settings()["adaptive"]
    with pytest.raises(ConfigError, match="multiple of the minibatch-stddev group"):
        build(arch="stylegan2", per_device_train_batch_size=6)
    with pytest.raises(ConfigError, match="g_channels does not apply to --arch stylegan2"):
        build(arch="stylegan2", g_channels=8)
    with pytest.raises(ConfigError, match="pl_weight"):
        build(arch="dcgan", pl_weight=1.0)
    with pytest.raises(ConfigError, match="diffaugment"):
        build(diffaugment="color,rotate")
    with pytest.raises(ConfigError, match="discriminator"):
        build(discriminator="resnet18")
    with pytest.raises(ConfigError, match="needs --discriminator timm"):
        build(discriminator_frozen=True)


# ------------------------------------------------------------------------------------------------ stylegan2 runs


def test_cli_smoke_run_then_from_pretrained_in_a_fresh_interpreter(tmp_path, capsys):
    out = tmp_path / "sg2"
    code = main(["gan", "--arch", "stylegan2", *WIDTH_FLAGS, "--max_steps", "20", "--image_size", "32",
                 "--per_device_train_batch_size", "8", "--output_dir", str(out), "--eval_num_samples", "0",
                 "--no_progress_bar", "--diffaugment", "color,translation,cutout", "--augment_target", "0.6",
                 "--pl_weight", "2", "--r1_interval", "4", "--checkpoint_every", "10", "--log_every", "5"])
    assert code == 0 and "Generator.from_pretrained" in capsys.readouterr().out
    logs = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [5, 10, 15, 20]
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in logs) and "augment_p" in logs[-1]
    assert "pl_penalty" in logs[0] and "r1" in logs[0]  # step 5 ran G step 4 (path length) and D step 4 (R1)
    state = read_trainer_state(out / "checkpoint-20")
    assert state["config"]["r1_every"] == 4 and state["augment_p"]["p"] == pytest.approx(logs[-1]["augment_p"])
    assert (out / "checkpoint-20" / "process_state_0.json").exists()
    assert {"truncation.png", "samples.png", "README.md", "config.json"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "truncation.png" in card and "preset `small`" in card and "DiffAugment `color,translation,cutout`" in card
    assert "ADA target" in card and "AdaptiveMix" in card and "truncation_psi=0.7" in card

    # the exported generator is the EMA (buffers included: w_avg) of the last step
    loaded = Generator.from_pretrained(out)
    assert type(loaded) is StyleGAN2Generator
    ema = StyleGAN2Generator(32, 1, **WIDTHS)
    load_module(ema, out / "checkpoint-20" / "ema.safetensors")
    assert torch.equal(loaded.w_avg, ema.w_avg) and loaded.w_avg.abs().sum() > 0
    assert torch.equal(loaded.generate(4, seed=3), ema.generate(4, seed=3))
    assert torch.equal(loaded.generate(4, seed=3, truncation_psi=0.5), ema.generate(4, seed=3, truncation_psi=0.5))
    # a user who never imports hubtune.gan.stylegan2 loads it too
    # the same number of threads as this process: float sums are bit-equal only for the same reduction order
    code = (f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); "
            "from hubtune.gan.models import Generator; g = Generator.from_pretrained(sys.argv[1]); "
            "torch.save(g.generate(4, seed=3), sys.argv[2]); print(type(g).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.pt")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "StyleGAN2Generator"
    torch.testing.assert_close(torch.load(tmp_path / "x.pt"), loaded.generate(4, seed=3), atol=1e-6, rtol=0)


def test_resume_is_exact_with_lazy_r1_path_length_and_ada(tmp_path):
    common = dict(r1_every=2, r1_gamma=1.0, pl_weight=2.0, pl_interval=2, diffaugment="color,translation,cutout",
                  augment_target=0.0, augment_interval=1, augment_kimg=0.05, checkpoint_every=3)
    full = train_gan(tiny(tmp_path, "full", max_steps=6, **common))
    AcceleratorState._reset_state(True)
    train_gan(tiny(tmp_path, "split", max_steps=3, **common))
    AcceleratorState._reset_state(True)
    resumed = train_gan(tiny(tmp_path, "split", max_steps=6, resume_from_checkpoint=True, **common))
    assert [r["step"] for r in resumed.losses] == [4, 5, 6]
    assert resumed.losses == full.losses[3:], "the loss curve (and augment_p, pl_mean) after resume is bit-exact"
    ps = [r["augment_p"] for r in full.losses]
    assert len(set(ps)) > 2, f"the adaptive probability moved: {ps}"
    assert any("pl_mean" in r for r in resumed.losses)
    for name in ("generator", "discriminator", "ema"):
        a = (tmp_path / "full" / "checkpoint-6" / f"{name}.safetensors").read_bytes()
        b = (tmp_path / "split" / "checkpoint-6" / f"{name}.safetensors").read_bytes()
        assert a == b, f"{name} weights differ after resume"
    assert read_trainer_state(tmp_path / "full" / "checkpoint-6")["augment_p"] == \
        read_trainer_state(tmp_path / "split" / "checkpoint-6")["augment_p"]


# ------------------------------------------------------------------------------------------------ step gradients


def _record_gradients(run):
    """Make both optimisers record the gradients they are stepped with (and not move the weights)."""
    grads = {}
    for tag, opt, module in (("D", run.opt_d, run.D), ("G", run.opt_g, run.G)):
        names = {id(p): n for n, p in run.accelerator.unwrap_model(module).named_parameters()}

        def step(closure=None, tag=tag, opt=opt, names=names):
            for group in opt.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        grads[f"{tag}.{names[id(p)]}"] = p.grad.detach().clone()

        opt.optimizer.step = step
    return grads


def _fixed_inputs(batch, channels=1):
    rng = torch.Generator().manual_seed(7)
    return torch.rand(batch, channels, 32, 32, generator=rng) * 2 - 1, torch.randn(batch, 16, generator=rng)


def _one_step_gradients(config, generator, discriminator, real, z, accelerator=None):
    """The D and G gradients of step 0 (R1 and path length due) on fixed inputs, seeded identically."""
    run = prepare_run(config, generator, discriminator, None, accelerator)
    grads = _record_gradients(run)
    torch.manual_seed(1234)
    with run.accelerator.autocast():
        fake = run.G(z)
    discriminator_step(run, real.clone(), fake, 0)
    generator_step(run, fake, 0)
    return grads, run


def _new_models(kind):
    torch.manual_seed(0)
    if kind == "stylegan2":
        return build_gan("stylegan2", 32, 1, minibatch_std_group=4, **{k: v for k, v in WIDTHS.items()})
    g, _ = build_gan("stylegan2", 32, 1, minibatch_std_group=4, **WIDTHS)
    return g, build_timm_discriminator("timm-random:resnet10t", stages=[2, 4], hidden=32)


STEP_CONFIG = dict(per_device_train_batch_size=4, minibatch_std_group=4, r1_gamma=1.0, r1_every=4, pl_weight=2.0,
                   diffaugment="color,translation,cutout", max_steps=1)


def test_gradients_flow_through_the_augmentation_to_the_generator(tmp_path, monkeypatch):
    from hubtune.gan.augment import DiffAugment

    seen = []
    original = DiffAugment.forward

    def spy(self, x, params=None):
        seen.append(x.requires_grad)
        return original(self, x, params)

    monkeypatch.setattr(DiffAugment, "forward", spy)
    g, d = _new_models("stylegan2")
    real, z = _fixed_inputs(4)
    config = tiny(tmp_path, **{**STEP_CONFIG, "diffaugment": "translation,cutout"})
    grads, run = _one_step_gradients(config, g, d, real, z)
    assert seen == [True, False, True], "reals (R1 through it), detached fakes, then the G step's fakes"
    g_grads = [v for k, v in grads.items() if k.startswith("G.")]
    assert len(g_grads) == len(list(g.parameters())) and all(torch.isfinite(v).all() for v in g_grads)
    assert sum(v.abs().sum() for v in g_grads) > 0, "D only sees augmented fakes: G's gradient came through them"


def _two_process_worker(output_dir):
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    for kind in ("stylegan2", "timm"):
        g, d = _new_models(kind)
        real, z = _fixed_inputs(8)
        extra = {"discriminator": "timm-random:resnet10t"} if kind == "timm" else {}
        config = GANTrainingConfig.from_options(**{**TINY, **STEP_CONFIG, **extra,
                                                   "output_dir": os.path.join(output_dir, kind)})
        half = slice(rank * 4, (rank + 1) * 4)
        grads, _ = _one_step_gradients(config, g, d, real[half], z[half], accelerator)
        save_file(grads, os.path.join(output_dir, f"{kind}_rank{rank}.safetensors"))
    assert world == 2
    # ADA's r_t is summed over processes (the loop's reduce): every process gets the same r_t and p
    ada = AdaptiveAugmentProbability(target=0.6, interval=1, ada_kimg=0.01)
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]) if rank == 0 else torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    ada.step(10, reduce=lambda t: accelerator.reduce(t, reduction="sum"))
    with open(os.path.join(output_dir, f"ada_rank{rank}.json"), "w") as f:
        json.dump(ada.state_dict(), f)


def test_two_processes_match_one_process_holding_both_halves(tmp_path):
    """2 processes (gloo, DDP) x 4 images vs one process computing the same step on each half, for StyleGAN2 and
    for a timm backbone discriminator, with DiffAugment, AdaptiveMix (3 passes for StyleGAN2), R1 and path length.

    DDP averages the processes' gradients, and each process's loss is a mean over its own 4 images, so the
    reference is the mean of the two halves' gradients, each computed in one process with the same random draws
    (augmentation, AdaptiveMix, noise, style mixing: seeded identically). Each half is computed SEPARATELY
    because minibatch-stddev groups (and AdaptiveMix's pairs, and the path-length running mean) are formed per
    process: one batch of 8 would put images of both halves in one group (its groups are strided), which two
    processes never do. The group size equals the per-process batch (4): one group per process.
    """
    out = tmp_path / "ddp"
    code = ("import sys, test_gan_stylegan2_loop as t; from accelerate import debug_launcher; "
            "debug_launcher(t._two_process_worker, args=(sys.argv[1],), num_processes=2)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ada = [json.loads((out / f"ada_rank{r}.json").read_text()) for r in (0, 1)]
    assert ada[0] == ada[1] and ada[0]["last_rt"] == pytest.approx(4 / 10) and ada[0]["p"] == 0.0
    real, z = _fixed_inputs(8)
    for kind in ("stylegan2", "timm"):
        ranks = [load_file(str(out / f"{kind}_rank{r}.safetensors")) for r in (0, 1)]
        g, d = _new_models(kind)
        extra = {"discriminator": "timm-random:resnet10t"} if kind == "timm" else {}
        halves = []
        for h in (0, 1):
            AcceleratorState._reset_state(True)
            config = tiny(tmp_path, f"{kind}{h}", **{**STEP_CONFIG, **extra})
            grads, _ = _one_step_gradients(config, copy.deepcopy(g), copy.deepcopy(d), real[4 * h:4 * h + 4],
                                           z[4 * h:4 * h + 4])
            halves.append(grads)
        assert ranks[0].keys() == ranks[1].keys() == halves[0].keys()
        assert any(k.startswith("G.") for k in ranks[0]) and any(k.startswith("D.") for k in ranks[0])
        assert sum(not torch.allclose(halves[0][k], halves[1][k]) for k in ranks[0]) > len(ranks[0]) // 2, \
            "the halves' gradients differ: the comparison tests DDP's averaging"
        for key in ranks[0]:
            reference = (halves[0][key] + halves[1][key]) / 2
            assert torch.equal(ranks[0][key], ranks[1][key]), (kind, key)
            assert torch.allclose(ranks[0][key], reference, rtol=1e-4, atol=1e-6), (
                kind, key, float((ranks[0][key] - reference).abs().max()))


# ------------------------------------------------------------------------------------------------ timm D


def test_timm_backbone_discriminator_with_adaptive_mix_trains(tmp_path):
    pytest.importorskip("timm")
    # bf16 autocast with the path length penalty (its ws must be the tensor the synthesis read, in float32)
    config = tiny(tmp_path, max_steps=2, discriminator="timm-random:resnet10t", discriminator_frozen=True,
                  discriminator_stages=[1, 3], discriminator_hidden=32, export_generator=True, checkpoint_every=2,
                  bf16=True, pl_weight=2.0)
    torch.manual_seed(0)
    result = train_gan(config)
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in result.losses)
    assert "shrinkage_loss_real" in result.losses[0] and "pl_penalty" in result.losses[0]
    d = build_timm_discriminator("timm-random:resnet10t", stages=[1, 3], frozen=True, hidden=32)
    assert d.backbone_features == 64 + 256 and not any(p.requires_grad for p in d.backbone.parameters())
    initial = {k: v for k, v in d.state_dict().items()}
    trained = load_file(str(tmp_path / "run" / "checkpoint-2" / "discriminator.safetensors"))
    backbone_keys = [k for k in trained if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(trained[k], initial[k]) for k in backbone_keys), "frozen backbone"
    assert not torch.equal(trained["project.weight"], initial["project.weight"]), "the head trains"
    card = (tmp_path / "run" / "README.md").read_text()
    assert "timm backbone `timm-random:resnet10t`" in card and "(frozen)" in card and "stages 1, 3" in card

    # normalisation: [-1, 1] -> [0, 1] -> grey to RGB -> the backbone's mean / std
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    mean = torch.tensor(d.backbone.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(d.backbone.pretrained_cfg["std"]).view(1, 3, 1, 1)
    assert torch.allclose(d.normalise(x), (((x + 1) / 2).expand(-1, 3, -1, -1) - mean) / std)
    # AdaptiveMix on the projected features: 2 passes (no batch coupling), the projection gets the gradient
    d.train()
    assert d.backbone.training is False, "a frozen backbone stays in eval mode"
    out = AdaptiveMix()(d, torch.rand(4, 1, 32, 32) * 2 - 1)
    assert out.feature_passes == 2
    out.loss.backward()
    assert d.project.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not MOBILENET.is_dir(), reason="the offline pretrained MobileNetV2 folder is not present")
def test_local_dir_pretrained_mobilenet_as_discriminator(tmp_path):
    d = build_timm_discriminator(f"local-dir:{MOBILENET}", stages=[2, 4], frozen=True, input_size=64, hidden=32)
    weights = load_file(str(MOBILENET / "model.safetensors"))
    state = d.backbone.state_dict()
    assert torch.equal(state["conv_stem.weight"], weights["conv_stem.weight"]), "pretrained weights loaded"
    cfg = json.loads((MOBILENET / "config.json").read_text())["pretrained_cfg"]
    assert torch.allclose(d.mean.flatten(), torch.tensor(cfg["mean"])) and torch.allclose(d.std.flatten(), torch.tensor(cfg["std"]))
    assert d.name == "local-dir:mobilenetv2_100.tv_in1k", "a local folder is named by its last component only"
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    out = AdaptiveMix()(d.train(), x)
    assert out.logits.shape == (4,) and out.features.shape == (4, 32) and torch.isfinite(out.loss)
    result = train_gan(tiny(tmp_path, max_steps=1, discriminator=f"local-dir:{MOBILENET}", discriminator_frozen=True,
                            discriminator_stages=[2, 4], discriminator_input_size=64, discriminator_hidden=32))
    assert torch.isfinite(torch.tensor(result.losses[0]["loss_d"]))


# ------------------------------------------------------------------------------------------------ mbstd partners


def test_group_preserving_partners_make_the_third_pass_exact():
    _, d = _new_models("stylegan2")
    assert isinstance(d, StyleGAN2Discriminator)
    x = torch.randn(8, 1, 32, 32)
    p = group_preserving_permutation(8, d.mbstd.group_size)
    assert sorted(p.tolist()) == list(range(8))
    assert torch.equal(d(x[p], output="features"), d(x, output="features")[p]), "bit-exact: f(x[p]) == f(x)[p]"
    q = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])  # swaps two members of different groups' slots: not exact
    assert not torch.allclose(d(x[q], output="features"), d(x, output="features")[q])
    lam = torch.full((8,), 0.3)
    three = AdaptiveMix(feature_passes=3)(d, x, MixDraws(lam, p, torch.zeros(8, d.num_features)))
    two = AdaptiveMix(feature_passes=2)(d, x, MixDraws(lam, p, torch.zeros(8, d.num_features)))
    assert three.feature_passes == 3 and two.feature_passes == 2
    assert torch.equal(three.loss, two.loss)

"""StyleGAN2: shapes, modulated convolution against float64, equalised lr, truncation, determinism, save/load,
batch coupling with AdaptiveMix, path length penalty."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hubtune.errors import ConfigError
from hubtune.gan.archs import get_architecture
from hubtune.gan.models import Generator
from hubtune.gan.stylegan2 import (
    STYLEGAN2_PRESETS,
    EqualConv2d,
    EqualLinear,
    PathLengthPenalty,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    build_stylegan2,
    downsample2d,
    modulated_conv2d,
    path_length_penalty,
    upsample2d,
)
from hubtune.losses.adaptive_mix import AdaptiveMix, features_are_batch_coupled

TINY = dict(latent_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)


def tiny_pair(size=32, channels=3, **kw):
    torch.manual_seed(0)
    args = dict(TINY, **kw)
    mbstd = args.pop("mbstd_group", 4)
    return build_stylegan2(size, channels, mbstd_group=mbstd, **args)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_at_each_size(size):
    g, d = tiny_pair(size, channels=3 if size != 64 else 1)
    c = 3 if size != 64 else 1
    z = torch.randn(4, 16)
    x = g(z)
    assert x.shape == (4, c, size, size) and torch.isfinite(x).all()
    assert g.num_ws == 2 * int(math.log2(size)) - 2
    logits, feats = d(x, output="both")
    assert logits.shape == (4,) and feats.shape == (4, d.num_features)
    assert torch.equal(d(feats, output="head"), logits)
    images, ws = g(z, return_ws=True)
    assert ws.shape == (4, g.num_ws, 16)


def test_rejects_bad_configs():
    with pytest.raises(ConfigError, match="power of two"):
        build_stylegan2(48)
    with pytest.raises(ConfigError, match="power of two"):
        build_stylegan2(16)
    with pytest.raises(ConfigError, match="channels"):
        build_stylegan2(32, channels=2)
    with pytest.raises(ConfigError, match="preset"):
        build_stylegan2(32, preset="paper1024")


def test_paper256_preset_widths():
    preset = STYLEGAN2_PRESETS["paper256"]
    assert preset["channel_base"] == 16384 and preset["channel_max"] == 512 and preset["mapping_layers"] == 8
    assert preset["latent_dim"] == preset["w_dim"] == 512
    d = StyleGAN2Discriminator(256, 3, preset="paper256")
    assert d.from_rgb.out_channels == 64 and d.num_features == 512 and d.mbstd.group_size == 8
    assert [b.conv1.out_channels for b in d.blocks] == [128, 256, 512, 512, 512, 512]


def test_upsample_and_downsample_keep_constants():
    x = torch.ones(1, 2, 8, 8, dtype=torch.float64)
    up, down = upsample2d(x), downsample2d(x)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))


def test_modulated_conv_against_float64_statement():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    got = modulated_conv2d(x, weight, styles, demodulate=True, padding=1)
    got_nodemod = modulated_conv2d(x, weight, styles, demodulate=False, padding=1)
    for b in range(3):
        wb = weight.clone()
        for i in range(4):
            wb[:, i] = wb[:, i] * styles[b, i]
        plain = F.conv2d(x[b:b + 1], wb, padding=1)
        assert torch.allclose(got_nodemod[b:b + 1], plain, atol=1e-12)
        for o in range(5):
            wb[o] = wb[o] / math.sqrt(float((wb[o] ** 2).sum()) + 1e-8)
        assert torch.allclose(got[b:b + 1], F.conv2d(x[b:b + 1], wb, padding=1), atol=1e-12)


def test_equalised_learning_rate_scales():
    torch.manual_seed(0)
    lin = EqualLinear(32, 8, lr_mul=0.01, bias_init=0.5)
    assert torch.equal(lin.runtime_weight(), lin.weight * (0.01 / math.sqrt(32)))
    assert torch.allclose(lin.runtime_weight(), lin.weight / math.sqrt(32) * 0.01)
    x = torch.randn(4, 32)
    ref = x @ (lin.weight.detach() / math.sqrt(32) * 0.01).T + lin.bias.detach() * 0.01
    assert torch.allclose(lin(x), ref, atol=1e-6)
    assert torch.allclose(lin.bias * 0.01, torch.full((8,), 0.5))  # run-time bias = bias_init
    conv = EqualConv2d(6, 4, 3)
    assert torch.allclose(conv.runtime_weight(), conv.weight / math.sqrt(6 * 9))
    y = torch.randn(2, 6, 5, 5)
    assert torch.allclose(conv(y), F.conv2d(y, conv.weight.detach() / math.sqrt(54), padding=1), atol=1e-6)
    g = StyleGAN2Generator(32, 3, **TINY)
    assert all(layer.lr_mul == 0.01 for layer in g.mapping.layers)
    # its constructor's parameters are the keys of its config.json: from_config takes such a config instead
    again = StyleGAN2Generator.from_config(g.config_dict())
    assert again.config_dict() == g.config_dict() and again.state_dict().keys() == g.state_dict().keys()
    # stored N(0, 1) / lr_mul, so the run-time initial weights are N(0, 1 / fan_in) whatever lr_mul
    big = EqualLinear(512, 512, lr_mul=0.01)
    assert abs(big.runtime_weight().std().item() * math.sqrt(512) - 1) < 0.02


def test_truncation_psi_one_is_identity_and_zero_gives_w_avg():
    g, _ = tiny_pair()
    g.eval()
    g.mapping.w_avg.normal_()
    z = torch.randn(4, 16)
    noise = g.sample_noise(4, seed=3)
    plain = g(z, noise=noise)
    assert torch.equal(g(z, truncation_psi=1.0, noise=noise), plain)
    assert torch.equal(g(z, truncation_psi=1, truncation_cutoff=2, noise=noise), plain)
    assert not torch.equal(g(z, truncation_psi=0.5, noise=noise), plain)
    ws0 = g.mapping(z, truncation_psi=0.0)
    assert torch.equal(ws0, g.w_avg.expand_as(ws0))
    ws_cut = g.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    assert torch.equal(ws_cut[:, :3], g.w_avg.expand(4, 3, 16)) and torch.equal(ws_cut[:, 3:], g.mapping(z)[:, 3:])
    same = g.generate(3, seed=0, truncation_psi=0.0, noise_mode="none")
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])
    assert torch.equal(g.generate(2, seed=5), g.generate(2, seed=5, truncation_psi=1.0))


@pytest.mark.parametrize("kwargs, parameter", [
    ({"truncation_psi": float("nan")}, "truncation_psi"),
    ({"truncation_psi": float("inf")}, "truncation_psi"),
    ({"truncation_psi": -float("inf")}, "truncation_psi"),
    ({"truncation_psi": "0.7"}, "truncation_psi"),
    ({"truncation_psi": None}, "truncation_psi"),
    ({"truncation_psi": torch.tensor([0.5, 0.7])}, "truncation_psi"),
    ({"truncation_psi": torch.tensor(float("nan"))}, "truncation_psi"),
    ({"truncation_psi": True}, "truncation_psi"),
    ({"truncation_cutoff": -3}, "truncation_cutoff"),
    ({"truncation_cutoff": 1.5}, "truncation_cutoff"),
    ({"truncation_cutoff": "2"}, "truncation_cutoff"),
    ({"noise_mode": "loud"}, "noise_mode"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": -2}, "num_images"),
    ({"num_images": 2.5}, "num_images"),
    ({"num_images": "4"}, "num_images"),
    ({"batch_size": 0}, "batch_size"),
    ({"seed": "zero"}, "seed"),
    ({"output_type": "np"}, "output_type"),
])
def test_generate_validates_each_parameter_at_the_public_entry(kwargs, parameter):
    """Issue 17: nan/inf psi gave NaN images, cutoff -3 was accepted, a str/None/2-element psi named a private function."""
    g, _ = tiny_pair()
    call = {"num_images": 2, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as info:
        g.generate(**call)
    message = str(info.value)
    assert message.startswith(parameter) and "\n" not in message and "_sample" not in message
    assert isinstance(info.value, ValueError)
    if parameter.startswith("truncation"):
        with pytest.raises(ConfigError, match=f"^{parameter}"):  # the module's own forward checks them too
            g(torch.randn(2, 16), **kwargs)


def test_generate_accepts_numpy_and_one_element_tensor_psi_and_refuses_options_a_dcgan_lacks():
    import numpy as np

    from hubtune.gan.models import DCGANGenerator

    g, _ = tiny_pair()
    expected = g.generate(2, seed=1, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.equal(g.generate(2, seed=1, truncation_psi=torch.tensor(0.5), truncation_cutoff=np.int64(2)), expected)
    assert torch.equal(g.generate(np.int64(2), seed=1, truncation_psi=np.float32(0.5), truncation_cutoff=2), expected)
    assert torch.isfinite(g.generate(2, seed=1, truncation_psi=0.5, truncation_cutoff=0)).all()
    dcgan = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    with pytest.raises(ConfigError, match="DCGANGenerator.generate does not take truncation_psi") as info:
        dcgan.generate(2, truncation_psi=0.7)
    assert "_sample" not in str(info.value)
    for bad, parameter in ((0, "num_images"), (-1, "num_images"), (1.5, "num_images")):
        with pytest.raises(ConfigError, match=f"^{parameter}"):
            dcgan.sample_latents(bad)
        with pytest.raises(ConfigError, match=f"^{parameter}"):
            g.sample_noise(bad, seed=0)


def test_w_avg_tracking_and_style_mixing_in_training_only():
    g, _ = tiny_pair(style_mixing_prob=1.0)
    z = torch.randn(8, 16)
    g.eval()
    _, ws = g(z, return_ws=True)
    assert torch.equal(g.w_avg, torch.zeros(16)), "eval mode does not update w_avg"
    assert torch.equal(ws[:, 0], ws[:, -1]), "no style mixing in eval mode"
    g.train()
    w = g.mapping(z)[:, 0].detach()
    _, ws = g(z, return_ws=True)
    assert torch.allclose(g.w_avg, (1 - 0.995) * w.mean(0), atol=1e-6)
    assert torch.equal(ws[:, 0], w), "the first layer always reads the first latent"
    assert not torch.isclose(ws[:, -1], w).all(dim=1).any(), "with probability 1 the last layer reads the second"


def test_generate_is_deterministic_per_seed():
    g, _ = tiny_pair()
    g.train()
    a = g.generate(4, seed=11)
    b = g.generate(4, seed=11)
    assert g.training, "generate restores the mode"
    assert torch.equal(a, b) and a.shape == (4, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, g.generate(4, seed=12))
    assert torch.allclose(g.generate(6, seed=11, batch_size=4)[:4], a, atol=1e-6), "independent of n and batch size"


def test_save_pretrained_and_from_pretrained_give_identical_images(tmp_path):
    g, _ = tiny_pair(size=32, channels=1)
    with torch.no_grad():
        g.mapping.w_avg.normal_()
        for layer in g.synthesis.convs:
            layer.noise_strength.fill_(0.3)
    g.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "stylegan2" and config["channel_base"] == 256 and config["preset"] == "small"
    assert get_architecture("stylegan2").generator_class() is StyleGAN2Generator
    loaded = Generator.from_pretrained(tmp_path)
    assert isinstance(loaded, StyleGAN2Generator)
    assert torch.equal(loaded.w_avg, g.w_avg)
    for psi in (1.0, 0.7):
        assert torch.equal(loaded.generate(5, seed=2, truncation_psi=psi), g.generate(5, seed=2, truncation_psi=psi))


def test_discriminator_is_batch_coupled_and_adaptive_mix_makes_three_passes():
    _, d = tiny_pair()
    assert features_are_batch_coupled(d)
    calls = []
    original = d.features
    d.features = lambda x: calls.append(x.shape[0]) or original(x)
    images = torch.randn(8, 3, 32, 32)
    out = AdaptiveMix()(d, images)
    assert out.feature_passes == 3 and len(calls) == 3
    (out.loss + out.logits.mean()).backward()
    grads = [p.grad for p in d.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert d.from_rgb.weight.grad.abs().sum() > 0


def test_path_length_penalty_and_running_mean():
    g, _ = tiny_pair()
    pl = PathLengthPenalty(decay=0.01)
    z = torch.randn(4, 16)
    images, ws = g(z, return_ws=True)
    noise = torch.randn_like(images) / 32
    penalty = pl(images, ws, noise=noise)
    assert torch.isfinite(penalty) and pl.pl_mean.item() > 0
    # independent statement: lengths from per-sample autograd
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, retain_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()
    assert torch.allclose(pl.pl_mean, 0.01 * lengths.mean(), rtol=1e-5)
    assert torch.allclose(penalty, ((lengths - 0.01 * lengths.mean()) ** 2).mean(), rtol=1e-4)
    penalty.backward()
    assert g.mapping.layers[0].weight.grad is not None and torch.isfinite(g.mapping.layers[0].weight.grad).all()
    before = pl.pl_mean.clone()
    images, ws = g(z, return_ws=True)
    p2, new_mean, lens = path_length_penalty(images, ws, before, decay=0.5)
    assert torch.allclose(new_mean, before + 0.5 * (lens.mean() - before)) and torch.isfinite(p2)

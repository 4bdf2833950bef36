"""GAN models: shapes, the discriminator protocol, and Generator save / from_pretrained / generate."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hubtune.gan import (
    DCGANGenerator,
    Generator,
    GeneratorLoadError,
    MinibatchStdDev,
    ResNetGenerator,
    BackboneDiscriminator,
    as_discriminator,
    build_gan,
)
from hubtune.losses.adaptive_mix import AdaptiveMix, features_are_batch_coupled


@pytest.mark.parametrize("arch,size", [("dcgan", 32), ("dcgan", 64), ("resnet", 32), ("resnet", 64), ("resnet", 128)])
def test_shapes_and_discriminator_protocol(arch, size):
    torch.manual_seed(0)
    g, d = build_gan(arch, size, channels=3, g_channels=8, d_channels=8, latent_dim=16)
    z = torch.randn(2, 16)
    x = g(z)
    assert x.shape == (2, 3, size, size) and x.min() >= -1 and x.max() <= 1
    d.eval()  # spectral norm's power iteration would change the weights between calls in training mode
    logits, feats = d(x, output="both")
    assert logits.shape == (2,) and feats.dim() == 2 and feats.shape[0] == 2
    assert torch.allclose(d(x), logits)
    assert torch.allclose(d(feats, output="head"), logits)
    assert torch.allclose(d(x, output="features"), feats)
    with pytest.raises(ValueError, match="output"):
        d(x, output="pooled")


def test_build_gan_rejects_bad_sizes_and_names():
    with pytest.raises(ValueError, match="power of two"):
        build_gan("dcgan", 48)
    with pytest.raises(ValueError, match="arch"):
        build_gan("stylegan", 32)
    with pytest.raises(ValueError, match="norm"):
        build_gan("dcgan", 32, d_norm="layer")


def test_batch_coupling_of_hubtune_discriminators():
    _, sn = build_gan("dcgan", 32, 1, d_channels=8)
    _, bn = build_gan("dcgan", 32, 1, d_channels=8, d_norm="batch")
    _, mbstd = build_gan("resnet", 32, 1, d_channels=8, minibatch_std_group=2)
    assert not features_are_batch_coupled(sn)
    assert not features_are_batch_coupled(bn), "BatchNorm: a permuted batch has the same statistics"
    assert features_are_batch_coupled(mbstd)
    bn.train()
    x = torch.randn(8, 1, 32, 32)
    perm = torch.randperm(8)
    assert torch.allclose(bn(x[perm], output="features"), bn(x, output="features")[perm], atol=1e-5)
    assert AdaptiveMix()(bn, x).feature_passes == 2
    # minibatch-stddev output for one sample depends on its group
    layer = MinibatchStdDev(2)
    x = torch.randn(4, 3, 2, 2)
    y = layer(x)
    x2 = x.clone()
    x2[2] += 1.0  # sample 2 is in group (0, 2): changes sample 0's extra channel, not sample 1's
    y2 = layer(x2)
    assert not torch.allclose(y[0, 3], y2[0, 3]) and torch.allclose(y[1, 3], y2[1, 3])
    assert AdaptiveMix()(mbstd, torch.randn(4, 1, 32, 32)).feature_passes == 3


def test_as_discriminator_wraps_features_head_modules():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.h = nn.Linear(12, 5), nn.Linear(5, 1)

        def features(self, x):
            return self.f(x.flatten(1))

        def head(self, f):
            return self.h(f)

    d = as_discriminator(Plain())
    x = torch.randn(3, 3, 2, 2)
    assert d(x).shape == (3,)
    assert AdaptiveMix()(d, x).feature_passes == 2
    with pytest.raises(TypeError, match="features"):
        as_discriminator(nn.Linear(2, 2))


@pytest.mark.parametrize("num_classes", [0, 10])
def test_as_discriminator_wraps_a_timm_backbone_for_adaptive_mix(num_classes):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    backbone = timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)
    d = as_discriminator(backbone)
    assert isinstance(d, BackboneDiscriminator) and d.backbone is backbone
    assert isinstance(d.linear, nn.Linear) and d.linear.in_features == backbone.num_features == 512
    x = torch.randn(4, 3, 32, 32)
    logits, feats = d(x, output="both")
    assert logits.shape == (4,) and feats.shape == (4, 512)
    assert torch.allclose(feats, backbone.forward_head(backbone.forward_features(x), pre_logits=True), atol=1e-5)
    # AdaptiveMix through the wrapper: the loss back-propagates into the backbone and the new head
    out = AdaptiveMix(preset="reference")(d, x)
    (out.loss + out.logits.mean()).backward()
    assert backbone.conv1[0].weight.grad is not None and backbone.conv1[0].weight.grad.abs().sum() > 0
    assert d.linear.weight.grad.abs().sum() > 0
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in backbone.parameters()) + 513


@pytest.mark.parametrize("cls,kwargs", [(DCGANGenerator, {"image_size": 32, "channels": 1, "base_channels": 8}),
                                        (ResNetGenerator, {"image_size": 32, "channels": 3, "base_channels": 8})])
def test_generator_save_and_from_pretrained_any_architecture(tmp_path, cls, kwargs):
    torch.manual_seed(1)
    g = cls(latent_dim=16, **kwargs)
    with torch.no_grad():  # move BN running stats off their defaults so that buffers matter
        g.train()(torch.randn(8, 16))
    g.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == cls.arch and config["latent_dim"] == 16 and config["base_channels"] == 8
    assert (tmp_path / "model.safetensors").exists()
    loaded = Generator.from_pretrained(tmp_path)  # the base class dispatches on `arch`
    assert type(loaded) is cls and not loaded.training
    a, b = g.generate(6, seed=3), loaded.generate(6, seed=3)
    assert a.shape == (6, kwargs["channels"], 32, 32) and torch.equal(a, b)
    assert torch.equal(loaded.generate(6, seed=3), b), "same seed, same images"
    assert not torch.equal(loaded.generate(6, seed=4), b)
    assert g.training, "generate() restores the training mode"
    pil = loaded.generate(2, seed=0, output_type="pil")
    assert len(pil) == 2 and pil[0].size == (32, 32)


def test_from_pretrained_errors(tmp_path):
    g = DCGANGenerator(latent_dim=8, image_size=32, channels=1, base_channels=8)
    g.save_pretrained(tmp_path)
    with pytest.raises(GeneratorLoadError, match="not a ResNetGenerator"):
        ResNetGenerator.from_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "arch": "stylegan9"}))
    with pytest.raises(GeneratorLoadError, match="stylegan9"):
        Generator.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights.pop("net.0.weight")
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(GeneratorLoadError, match="missing"):
        Generator.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(GeneratorLoadError, match="model.safetensors"):
        Generator.from_pretrained(tmp_path)


def test_save_pretrained_writes_card_and_samples(tmp_path):
    g = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    g.training_info = {"training": {"max_steps": 7, "ada_preset": "paper", "adaptivemix": True},
                       "metrics": None, "data_source": "digits", "num_images": 123}
    g.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "README.md", "samples.png"} <= {p.name for p in tmp_path.iterdir()}
    card = (tmp_path / "README.md").read_text()
    assert "library_name: hubtune" in card and "unconditional-image-generation" in card
    assert "digits" in card and "123 images" in card and "AdaptiveMix" in card and "| Steps | 7 |" in card
    (tmp_path / "README.md").write_text("stale")
    g.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() != "stale", "each save writes a fresh card"
    card = g.generate_model_card(repo_id="org/name")
    assert 'Generator.from_pretrained("org/name")' in str(card)


def test_unloadable_folders_raise_generator_load_error_naming_the_file(tmp_path):
    g = DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8)
    good = tmp_path / "good"
    g.save_pretrained(good)
    # a training configuration where the generator's config.json should be (the old output layout's mistake)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"max_steps": 10, "image_size": 16, "output_dir": "x"}))
    (run / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    with pytest.raises(GeneratorLoadError, match="config.json.*arch=None.*training configuration"):
        Generator.from_pretrained(run)
    # missing arch
    cfg = json.loads((good / "config.json").read_text())
    no_arch = tmp_path / "no_arch"
    g.save_pretrained(no_arch)
    (no_arch / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "arch"}))
    with pytest.raises(GeneratorLoadError, match="config.json"):
        Generator.from_pretrained(no_arch)
    # no config.json at all
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GeneratorLoadError, match="config.json"):
        Generator.from_pretrained(empty)
    # truncated weights
    truncated = tmp_path / "truncated"
    g.save_pretrained(truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(GeneratorLoadError, match="model.safetensors.*truncated"):
        Generator.from_pretrained(truncated)
    # wrong constructor values in config.json: a GeneratorLoadError, never a raw TypeError
    bad = tmp_path / "bad"
    g.save_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "image_size": 48}))
    with pytest.raises(GeneratorLoadError, match="config.json"):
        Generator.from_pretrained(bad)
    assert isinstance(GeneratorLoadError("x"), ValueError)


def test_from_pretrained_goes_through_the_mixin_hook(tmp_path, monkeypatch):
    """The public classmethod only checks that config.json is a JSON object, then is the mixin's (whose
    json.load would raise a bare JSONDecodeError); the loading itself is the hook's."""
    from huggingface_hub import ModelHubMixin

    assert "_from_pretrained" in Generator.__dict__ and "_save_pretrained" in Generator.__dict__
    DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8).save_pretrained(tmp_path)
    original, called = ModelHubMixin.from_pretrained.__func__, []

    def spy(cls, *args, **kwargs):
        called.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(ModelHubMixin, "from_pretrained", classmethod(spy))
    assert isinstance(Generator.from_pretrained(tmp_path), DCGANGenerator) and called == [Generator]


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x02 garbage {{", "config.json is not valid JSON"),
    (b"not json at all", "config.json is not valid JSON"),
    (b"[1, 2, 3]", "config.json holds a JSON list"),
    (None, "latent_dim must be int"),
])
def test_a_garbage_generator_config_is_one_error_naming_the_file(tmp_path, content, message):
    folder = tmp_path / "gen"
    DCGANGenerator(latent_dim=8, image_size=16, channels=1, base_channels=8).save_pretrained(folder)
    config = folder / "config.json"
    if content is None:
        content = json.dumps({**json.loads(config.read_text()), "latent_dim": "big"}).encode()
    config.write_bytes(content)
    with pytest.raises(GeneratorLoadError, match=message) as caught:
        Generator.from_pretrained(folder)
    assert str(config) in str(caught.value) and "\n" not in str(caught.value)


def test_a_hub_generator_while_offline_names_the_offline_setting(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GeneratorLoadError, match="HF_HUB_OFFLINE=1 is set and its config.json is not in the local"):
        Generator.from_pretrained("someorg/not-cached-generator")

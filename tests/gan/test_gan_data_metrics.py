"""GAN data sources (digits, image folders with faults, HF datasets), the step sampler, FID/KID."""

import numpy as np
import pytest
import torch
from PIL import Image

from hubtune.gan import (
    DatasetTooSmallError,
    FeatureExtractorError,
    GANDataError,
    StepBatchSampler,
    build_feature_extractor,
    compute_fid_kid,
    load_image_set,
)
from hubtune.gan import metrics as gan_metrics
from hubtune.gan.metrics import FALLBACK_EXTRACTOR, FIDInceptionV3


@pytest.fixture
def no_pretrained_extractor(monkeypatch, tmp_path):
    """``auto`` as on a machine without any pretrained extractor (no env var, no offline MobileNetV2 folder)."""
    monkeypatch.delenv(gan_metrics.ENV_EXTRACTOR, raising=False)
    monkeypatch.setattr(gan_metrics, "DEFAULT_PRETRAINED_FOLDER", tmp_path / "no-such-folder")


def test_digits_are_real_grayscale_images_upsampled():
    images = load_image_set("digits", image_size=16)
    assert len(images) == 1797 and images.images.shape == (1797, 1, 16, 16) and images.images.dtype == torch.uint8
    assert images.images.max() > 200 and images.images.min() == 0
    x = images[0]
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(images.batch([0, 5])[1], images[5])


def make_messy_folder(folder):
    folder.mkdir()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(folder / "wide_rgb.png")
    Image.new("L", (16, 16), 128).save(folder / "gray.png")
    Image.new("RGBA", (12, 24), (0, 255, 0, 128)).save(folder / "tall_rgba.png")
    Image.new("P", (18, 18)).save(folder / "palette.gif")
    (folder / "sub").mkdir()
    Image.new("CMYK", (20, 20)).save(folder / "sub" / "cmyk.jpg")
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    good = folder / "wide_rgb.png"
    (folder / "truncated.png").write_bytes(good.read_bytes()[:40])
    (folder / "notes.txt").write_text("ignored: not an image extension")


def test_image_folder_mixed_sizes_modes_and_unreadable_files(tmp_path, caplog):
    folder = tmp_path / "messy"
    make_messy_folder(folder)
    images = load_image_set(str(folder), image_size=8)
    assert images.images.shape == (5, 3, 8, 8)
    assert images.skipped == 2
    assert "skipped 2 unreadable" in caplog.text
    gray = load_image_set(str(folder), image_size=8, channels=1)
    assert gray.images.shape == (5, 1, 8, 8)
    with pytest.raises(GANDataError, match="cannot read image .*(garbage|truncated)"):
        load_image_set(str(folder), image_size=8, strict=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GANDataError, match="no image files"):
        load_image_set(str(empty), image_size=8)


def test_hugging_face_dataset_object_and_saved_folder(tmp_path):
    import datasets

    pil = [Image.fromarray(np.full((10, 14, 3), i * 20, dtype=np.uint8)) for i in range(6)]
    ds = datasets.Dataset.from_dict({"img": pil, "label": list(range(6))}, features=datasets.Features(
        {"img": datasets.Image(), "label": datasets.Value("int64")}))
    from_object = load_image_set(ds, image_size=8)
    assert from_object.images.shape == (6, 3, 8, 8)
    assert int(from_object.images[3, 0, 0, 0]) == 60
    ds.save_to_disk(str(tmp_path / "saved"))
    from_disk = load_image_set(str(tmp_path / "saved"), image_size=8)
    assert torch.equal(from_disk.images, from_object.images)
    with pytest.raises(GANDataError, match="no image column"):
        load_image_set(datasets.Dataset.from_dict({"x": [1, 2]}), image_size=8)


def test_step_sampler_is_deterministic_disjoint_and_full():
    a = StepBatchSampler(16, 4, num_steps=6, seed=3, rank=0, world_size=2)
    b = StepBatchSampler(16, 4, num_steps=6, seed=3, rank=1, world_size=2)
    batches_a, batches_b = list(a), list(b)
    assert len(batches_a) == 6 and all(len(x) == 4 for x in batches_a + batches_b)
    # two steps per epoch: each epoch's 16 positions are one permutation, split across processes
    for epoch in range(3):
        seen = [i for step in (2 * epoch, 2 * epoch + 1) for i in batches_a[step] + batches_b[step]]
        assert sorted(seen) == list(range(16))
    assert batches_a[0] != batches_a[2], "each epoch is shuffled anew"
    resumed = StepBatchSampler(16, 4, num_steps=6, seed=3, start_step=4, rank=0, world_size=2)
    assert list(resumed) == batches_a[4:], "resuming at a step yields the same batches"
    straddling = StepBatchSampler(10, 4, num_steps=5, seed=0)  # batches cross epoch ends: still full
    assert all(len(x) == 4 for x in straddling)
    with pytest.raises(DatasetTooSmallError, match="10 images, fewer than one step's batch"):
        StepBatchSampler(10, 8, num_steps=1, world_size=2)


def test_fid_kid_with_a_named_extractor_and_sample_counts():
    torch.manual_seed(0)
    real = torch.rand(64, 1, 16, 16)
    same = real.clone()
    other = (torch.rand(64, 1, 16, 16) * 0.3).clamp(0, 1)
    extractor = build_feature_extractor("timm-random:resnet10t:1")
    assert extractor.name == "timm-random:resnet10t:1"
    close = compute_fid_kid(real, same, extractor, batch_size=16)
    far = compute_fid_kid(real, other, extractor, batch_size=16)
    assert close["fid"] < 1e-3 and far["fid"] > 100 * max(close["fid"], 1e-6)
    assert far["kid_mean"] > close["kid_mean"]
    assert far["feature_extractor"] == "timm-random:resnet10t:1" and far["num_real"] == 64 and far["num_fake"] == 64
    with pytest.raises(ValueError, match="never computed on a single batch"):
        compute_fid_kid(real[:20], same[:20], extractor, batch_size=16)


def test_feature_extractor_names(no_pretrained_extractor):
    with pytest.raises(FeatureExtractorError, match="Inception FID extractor is unavailable"):
        build_feature_extractor("inception")  # torch-fidelity / weights are not available offline
    with pytest.warns(UserWarning, match="CANNOT compare or rank models"):
        fallback = build_feature_extractor("auto")
    assert fallback.name == FALLBACK_EXTRACTOR and fallback.comparable is False
    seeded_a = build_feature_extractor("timm-random:resnet10t:7")
    seeded_b = build_feature_extractor("timm-random:resnet10t:7")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(seeded_a(x), seeded_b(x)), "a seeded random extractor is reproducible"
    assert build_feature_extractor("timm-random:resnet10t").name == "timm-random:resnet10t:0"
    for bad, msg in [("vgg", "unknown feature extractor"), ("timm-random:nonet", "no model"),
                     ("timm-random:resnet10t:x", "integer")]:
        with pytest.raises(FeatureExtractorError, match=msg):
            build_feature_extractor(bad)


def test_hubtune_classifier_as_the_feature_extractor(tmp_path):
    import torch.nn.functional as F

    from hubtune.modeling import HubtuneForImageClassification

    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone(
        "test_resnet", id2label={i: str(i) for i in range(10)}, image_size=24
    ).eval()
    model.save_pretrained(tmp_path / "clf")
    extractor = build_feature_extractor(f"hubtune:{tmp_path / 'clf'}")
    assert extractor.name == f"hubtune:{tmp_path / 'clf'}" and extractor.num_features == model.backbone.num_features

    # what the extractor must compute: gray -> RGB, resize to the classifier's input size, its mean/std, its pooled features
    images = torch.rand(4, 1, 16, 16)
    pre = model.preprocessing
    assert tuple(pre.mean) == (0.5, 0.5, 0.5)  # not ImageNet's: the classifier's own normalisation is what counts
    x = F.interpolate(images.expand(-1, 3, -1, -1), size=(24, 24), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.forward_features(x)
    torch.testing.assert_close(extractor(images), expected, atol=1e-5, rtol=1e-5)

    real = torch.rand(32, 1, 16, 16)
    result = compute_fid_kid(real, real.clone(), extractor, batch_size=8)
    assert result["feature_extractor"] == f"hubtune:{tmp_path / 'clf'}" and result["fid"] < 1e-3
    with pytest.raises(FeatureExtractorError, match="cannot load a hubtune classifier"):
        build_feature_extractor(f"hubtune:{tmp_path / 'missing'}")


def test_random_features_are_flagged_not_comparable(no_pretrained_extractor):
    real = torch.rand(32, 1, 16, 16)
    with pytest.warns(UserWarning, match="CANNOT compare"):
        result = compute_fid_kid(real, real.clone(), "auto", batch_size=8)
    assert result["feature_extractor"] == FALLBACK_EXTRACTOR and result["comparable"] is False
    with pytest.warns(UserWarning, match="CANNOT compare"):
        assert compute_fid_kid(real, real.clone(), "timm-random:resnet10t", batch_size=8)["comparable"] is False


def _timm_folder(folder, arch="resnet10t", seed=3):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    save_for_hf(model, str(folder), safe_serialization=True)
    return model


def test_local_dir_timm_folder_as_the_feature_extractor(tmp_path, monkeypatch):
    import timm
    import torch.nn.functional as F

    model = _timm_folder(tmp_path / "net")
    extractor = build_feature_extractor(f"local-dir:{tmp_path / 'net'}")
    assert extractor.name == f"local-dir:{tmp_path / 'net'}" and extractor.comparable is True
    assert extractor.num_features == model.num_features
    cfg = timm.data.resolve_data_config({}, model=model)
    images = torch.rand(3, 1, 20, 20)
    size = cfg["input_size"][-1]
    x = F.interpolate(images.expand(-1, 3, -1, -1), size=(size, size), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(extractor(images), model(x), atol=1e-5, rtol=1e-5)
    real = torch.rand(16, 3, 16, 16)
    result = compute_fid_kid(real, real.clone(), extractor, batch_size=8)
    assert result["comparable"] is True and result["feature_extractor"] == f"local-dir:{tmp_path / 'net'}"
    with pytest.raises(FeatureExtractorError, match="not a timm folder"):
        build_feature_extractor(f"local-dir:{tmp_path / 'missing'}")
    # auto prefers a pretrained extractor: the env var first, then the offline MobileNetV2 folder, never random
    monkeypatch.setenv(gan_metrics.ENV_EXTRACTOR, f"local-dir:{tmp_path / 'net'}")
    assert build_feature_extractor("auto").name == f"local-dir:{tmp_path / 'net'}"
    monkeypatch.delenv(gan_metrics.ENV_EXTRACTOR)
    monkeypatch.setattr(gan_metrics, "DEFAULT_PRETRAINED_FOLDER", tmp_path / "net")
    assert build_feature_extractor("auto").name == f"local-dir:{tmp_path / 'net'}"


def test_inception_weights_file_loads_the_fid_network(tmp_path):
    """A randomly initialised network saved in the exact layout of pt_inception-2015-12-05-6726825d.pth:
    torchvision's Inception-v3 state dict with a 1008-way fc and no auxiliary head (what pytorch-fid loads)."""
    from torchvision.models.inception import Inception3

    torch.manual_seed(0)
    stock = Inception3(num_classes=1008, aux_logits=False, init_weights=True)
    state = {k: v for k, v in stock.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k in state:  # non-trivial running statistics, so a wrong mapping would show
        if k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5
        elif k.endswith("running_mean"):
            state[k] = torch.randn_like(state[k]) * 0.1
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)

    extractor = build_feature_extractor(f"inception:{path}")
    assert isinstance(extractor, FIDInceptionV3) and extractor.name == "inception" and extractor.comparable
    loaded = extractor.net.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    images = torch.rand(2, 3, 40, 40)
    feats = extractor(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    # the stem up to Mixed_5b is the same in both graphs: check it against torchvision's own modules
    stock.load_state_dict(state, strict=False)
    stock.eval()
    with torch.no_grad():
        x = 2 * F_interp(images) - 1
        ref = stock.maxpool2(stock.Conv2d_4a_3x3(stock.Conv2d_3b_1x1(stock.maxpool1(
            stock.Conv2d_2b_3x3(stock.Conv2d_2a_3x3(stock.Conv2d_1a_3x3(x)))))))
        ref_pool = torch.nn.functional.avg_pool2d(ref, 3, 1, 1, count_include_pad=False)
        out = extractor.net.Mixed_5b(ref)
        expected_pool_branch = stock.Mixed_5b.branch_pool(ref_pool)
    torch.testing.assert_close(out[:, -32:], expected_pool_branch)  # the FID patch: padding-free average pool

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(FeatureExtractorError, match="not the FID Inception-v3 state dict"):
        build_feature_extractor(f"inception:{tmp_path / 'other.pth'}")
    with pytest.raises(FeatureExtractorError, match="no such file"):
        build_feature_extractor(f"inception:{tmp_path / 'missing.pth'}")


def F_interp(images):
    return torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)


def test_the_card_says_when_fid_features_cannot_rank_models():
    from hubtune.hub.generator_card import render_generator_card

    metrics = {"fid": 13.0, "kid_mean": 0.01, "kid_std": 0.001, "feature_extractor": "timm-random:resnet18:0",
               "feature_dim": 512, "num_real": 500, "num_fake": 500, "comparable": False}
    card = str(render_generator_card(arch="dcgan", image_size=32, channels=1, latent_dim=64, metrics=metrics))
    assert "cannot rank models" in card
    metrics.update(comparable=True, feature_extractor="local-dir:mobilenetv2_100.tv_in1k")
    assert "cannot rank models" not in str(render_generator_card(arch="dcgan", image_size=32, channels=1,
                                                                 latent_dim=64, metrics=metrics))

"""hubtune.data: dataset sources, column / split detection, errors, transforms and the collator."""

import math
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hubtune.backbones import PreprocessingConfig
from hubtune.data import (
    DatasetError,
    build_transforms,
    collate_image_batch,
    load_digits_dataset,
    load_image_classification_data,
    with_transforms,
)


def _constant_image(mode, size, value):
    return Image.new(mode, size, value)


def _pil_dataset(images, labels, label_feature=None, label_name="label"):
    features = datasets.Features({"image": datasets.Image(), label_name: label_feature or datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, label_name: labels}, features=features)


def _class_label_dataset(n=12, num_classes=3):
    images = [_constant_image("L", (6, 6), 10 * i) for i in range(n)]
    labels = [i % num_classes for i in range(n)]
    names = [f"c{k}" for k in range(num_classes)]
    return _pil_dataset(images, labels, datasets.ClassLabel(names=names))


# --------------------------------------------------------------------------------------------- digits


def test_digits_images_are_the_real_scikit_learn_digits():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = load_digits_dataset()
    assert len(ds) == 1797
    assert ds.features["label"].names == [str(i) for i in range(10)]
    assert list(ds["label"]) == [int(y) for y in ref.target]
    for i in (0, 1, 500, 1796):
        image = ds[i]["image"]
        assert image.mode == "L" and image.size == (8, 8)
        expected = np.round(ref.images[i] * 255.0 / 16.0).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image), expected)
    # 16 maps to 255 (the full 8-bit range is used), 0 to 0.
    assert max(np.asarray(ex["image"]).max() for ex in ds) == 255
    assert min(np.asarray(ex["image"]).min() for ex in ds) == 0


def test_digits_split_is_stratified_and_seeded():
    from sklearn.datasets import load_digits

    data = load_image_classification_data("digits", eval_fraction=0.2, seed=0)
    assert data.name == "digits"
    assert data.num_labels == 10
    assert data.id2label == {i: str(i) for i in range(10)}
    assert data.label2id == {str(i): i for i in range(10)}
    assert len(data.eval) == math.ceil(0.2 * 1797)
    assert len(data.train) + len(data.eval) == 1797
    assert list(data.train.features) == ["image", "label"]
    assert isinstance(data.train.features["label"], datasets.ClassLabel)

    class_sizes = Counter(int(y) for y in load_digits().target)
    eval_counts = Counter(data.eval["label"])
    train_counts = Counter(data.train["label"])
    for label, size in class_sizes.items():
        assert abs(eval_counts[label] - 0.2 * size) <= 1.0
        assert train_counts[label] + eval_counts[label] == size

    # Train and eval together hold every digit image exactly once.
    def pixel_sums(ds):
        return sorted(int(np.asarray(ex["image"], dtype=np.int64).sum()) for ex in ds)

    full = pixel_sums(load_digits_dataset())
    assert sorted(pixel_sums(data.train) + pixel_sums(data.eval)) == full

    again = load_image_classification_data("digits", eval_fraction=0.2, seed=0)
    other = load_image_classification_data("digits", eval_fraction=0.2, seed=1)
    assert pixel_sums(again.eval) == pixel_sums(data.eval)
    assert pixel_sums(other.eval) != pixel_sums(data.eval)


def test_max_samples_subsample():
    data = load_image_classification_data("digits", max_train_samples=50, max_eval_samples=20)
    assert len(data.train) == 50 and len(data.eval) == 20
    with pytest.raises(DatasetError, match="max_train_samples"):
        load_image_classification_data("digits", max_train_samples=0)


# --------------------------------------------------------------------------------------------- image folder

# (mode, size, fill value) per file; sizes are unique so each loaded image can be traced back.
FOLDER_IMAGES = {
    "bird": [("RGB", (40, 30), (255, 0, 0)), ("L", (17, 23), 200), ("RGBA", (50, 50), (10, 200, 30, 255))],
    "cat": [("P", (33, 21), None), ("RGB", (12, 64), (0, 0, 255)), ("L", (25, 25), 7)],
    "dog": [("RGBA", (31, 31), (1, 2, 3, 128)), ("RGB", (64, 48), (90, 90, 90)), ("P", (20, 44), None)],
}
P_COLOUR = (120, 40, 220)


def _expected_rgb(mode, value):
    if mode == "L":
        return (value,) * 3
    if mode == "P":
        return P_COLOUR
    return tuple(value[:3])


@pytest.fixture
def image_folder(tmp_path):
    expected = {}
    for cls, entries in FOLDER_IMAGES.items():
        (tmp_path / cls).mkdir()
        for k, (mode, size, value) in enumerate(entries):
            if mode == "P":
                image = Image.new("RGB", size, P_COLOUR).convert("P", palette=Image.Palette.ADAPTIVE)
            else:
                image = Image.new(mode, size, value)
            image.save(tmp_path / cls / f"{k}.png")
            expected[size] = (cls, mode, _expected_rgb(mode, value))
    return tmp_path, expected


def test_image_folder_loads_with_class_names_and_converts_every_mode(image_folder):
    folder, expected = image_folder
    data = load_image_classification_data(str(folder), eval_fraction=0.3, seed=0)
    assert data.label_names == ["bird", "cat", "dog"]
    assert data.name == str(folder)
    assert len(data.train) + len(data.eval) == 9
    assert len(data.eval) == 3
    assert sorted(Counter(data.eval["label"]).values()) == [1, 1, 1]  # stratified: one per class

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    rgb_pre = PreprocessingConfig(input_size=(3, 24, 24), mean=mean, std=std, interpolation="bilinear")
    gray_pre = PreprocessingConfig(input_size=(1, 20, 20), mean=(0.5,), std=(0.5,), interpolation="bicubic")
    seen_modes = set()
    for split in (data.train, data.eval):
        for example in split:
            original = example["image"]
            cls, mode, rgb = expected[original.size]
            seen_modes.add(mode)
            assert data.label_names[example["label"]] == cls
            for pre, train in ((rgb_pre, True), (rgb_pre, False), (gray_pre, True), (gray_pre, False)):
                tensor = build_transforms(pre, train=train, hflip=True)(original)
                channels = pre.input_size[0]
                assert tensor.shape == (channels, *pre.image_size) and tensor.dtype == torch.float32
                if channels == 3:
                    want = [(rgb[c] / 255.0 - mean[c]) / std[c] for c in range(3)]
                else:
                    luma = rgb[0] * 299 / 1000 + rgb[1] * 587 / 1000 + rgb[2] * 114 / 1000
                    want = [(round(luma) / 255.0 - 0.5) / 0.5]
                got = tensor.mean(dim=(1, 2)).tolist()
                assert got == pytest.approx(want, abs=1.5 / 255 / min(pre.std)), (mode, pre.input_size, train)
                assert (tensor.amax(dim=(1, 2)) - tensor.amin(dim=(1, 2))).max() < 1e-5  # still constant
    assert seen_modes == {"RGB", "L", "RGBA", "P"}

    loaded = with_transforms(data.train, build_transforms(rgb_pre, train=False))
    batch = collate_image_batch([loaded[i] for i in range(len(loaded))])
    assert batch["pixel_values"].shape == (len(data.train), 3, 24, 24)
    assert batch["labels"].tolist() == list(data.train["label"])


def test_image_folder_with_split_folders_uses_its_validation_split(tmp_path):
    for split, n in (("train", 4), ("validation", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (8, 8), (k, k, k)).save(tmp_path / split / cls / f"{k}.png")
    data = load_image_classification_data(tmp_path)
    assert (len(data.train), len(data.eval)) == (8, 4)
    assert data.label_names == ["a", "b"]


def test_empty_image_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="image folder"):
        load_image_classification_data(str(tmp_path))


# --------------------------------------------------------------------------------------------- other sources


def test_integer_target_column_becomes_sorted_class_labels():
    targets = [42, 3, 7, 7, 3, 42, 3, 42, 7, 3, 42, 7] * 2
    # Each image's pixel value records its original target, to check the mapping after the split.
    images = [_constant_image("L", (5, 5), t) for t in targets]
    ds = datasets.Dataset.from_dict({"image": images, "target": targets, "note": ["x"] * len(targets)})
    ds = ds.cast_column("image", datasets.Image())
    assert not isinstance(ds.features["target"], datasets.ClassLabel)

    data = load_image_classification_data(ds, eval_fraction=0.25, seed=3)
    assert data.label_names == ["3", "7", "42"]
    assert data.label2id == {"3": 0, "7": 1, "42": 2}
    assert list(data.train.features) == ["image", "label"]
    assert isinstance(data.eval.features["label"], datasets.ClassLabel)
    assert len(data.train) + len(data.eval) == len(targets)
    for split in (data.train, data.eval):
        for example in split:
            original = int(np.asarray(example["image"])[0, 0])
            assert data.label_names[example["label"]] == str(original)


def test_save_to_disk_round_trip_dataset_dict_and_dataset(tmp_path):
    train = _class_label_dataset(12)
    validation = _class_label_dataset(6)
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(tmp_path / "dict"))
    data = load_image_classification_data(str(tmp_path / "dict"))
    assert (len(data.train), len(data.eval)) == (12, 6)
    assert data.label_names == ["c0", "c1", "c2"]
    assert [np.asarray(ex["image"])[0, 0] for ex in data.eval] == [np.asarray(ex["image"])[0, 0] for ex in validation]

    train.save_to_disk(str(tmp_path / "single"))
    data = load_image_classification_data(tmp_path / "single", eval_fraction=0.25)
    assert (len(data.train), len(data.eval)) == (9, 3)
    assert sorted(data.eval["label"]) == [0, 1, 2]


def test_dataset_dict_object_prefers_validation_then_eval_split_flag():
    dd = datasets.DatasetDict(
        {"train": _class_label_dataset(12), "test": _class_label_dataset(3), "validation": _class_label_dataset(6)}
    )
    assert len(load_image_classification_data(dd).eval) == 6
    assert len(load_image_classification_data(dd, eval_split="test").eval) == 3
    with pytest.raises(DatasetError, match=r"eval_split 'dev' does not exist.*train, test, validation"):
        load_image_classification_data(dd, eval_split="dev")


def test_explicit_column_flags(tmp_path):
    n = 8
    big = [_constant_image("RGB", (16, 16), (i, 0, 0)) for i in range(n)]
    small = [_constant_image("RGB", (4, 4), (0, i, 0)) for i in range(n)]
    features = datasets.Features(
        {"photo": datasets.Image(), "thumb": datasets.Image(), "a": datasets.Value("int32"), "b": datasets.Value("int32")}
    )
    ds = datasets.Dataset.from_dict(
        {"photo": big, "thumb": small, "a": [0] * n, "b": [i % 2 for i in range(n)]}, features=features
    )
    with pytest.raises(DatasetError, match="several image columns"):
        load_image_classification_data(ds)
    with pytest.raises(DatasetError, match="no label column"):
        load_image_classification_data(ds, image_column="thumb")

    data = load_image_classification_data(ds, image_column="thumb", label_column="b", eval_fraction=0.25)
    assert list(data.train.features) == ["image", "label"]
    assert data.label_names == ["0", "1"]
    for example in data.train:
        assert example["image"].size == (4, 4)
        assert example["label"] == int(np.asarray(example["image"])[0, 0, 1]) % 2

    # A column of image paths, named by flag, is cast to images.
    paths = []
    for i in range(4):
        Image.new("L", (9, 9), i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    with_paths = datasets.Dataset.from_dict({"file": paths, "label": [0, 1, 0, 1]})
    data = load_image_classification_data(with_paths, image_column="file", eval_fraction=0.5)
    assert isinstance(data.train.features["image"], datasets.Image)
    assert data.train[0]["image"].size == (9, 9)


def test_class_label_column_wins_and_clashing_names_are_handled():
    # "image" is a caption here and the pictures live in "img": selecting first avoids a rename clash.
    n = 6
    features = datasets.Features(
        {"img": datasets.Image(), "image": datasets.Value("string"), "y": datasets.ClassLabel(names=["p", "q"])}
    )
    ds = datasets.Dataset.from_dict(
        {"img": [_constant_image("L", (3, 3), i) for i in range(n)], "image": ["caption"] * n, "y": [0, 1] * 3},
        features=features,
    )
    data = load_image_classification_data(ds, eval_fraction=0.34)
    assert data.label_names == ["p", "q"]
    assert isinstance(data.train[0]["image"], Image.Image)


# --------------------------------------------------------------------------------------------- errors


def test_no_image_column_error_lists_columns():
    ds = datasets.Dataset.from_dict({"pixels": [[0, 1]] * 4, "label": [0, 1, 0, 1]})
    with pytest.raises(DatasetError, match=r"no image column.*pixels \(List\).*label \(Value\).*image_column"):
        load_image_classification_data(ds)


def test_no_label_column_error_lists_columns():
    ds = datasets.Dataset.from_dict({"image": [_constant_image("L", (3, 3), 0)] * 4, "caption": ["a"] * 4})
    ds = ds.cast_column("image", datasets.Image())
    with pytest.raises(DatasetError, match=r"no label column.*caption.*label_column"):
        load_image_classification_data(ds)


def test_missing_named_columns_error_lists_columns():
    ds = _class_label_dataset()
    with pytest.raises(DatasetError, match=r"image_column 'photo' does not exist.*image \(Image\), label \(ClassLabel\)"):
        load_image_classification_data(ds, image_column="photo")
    with pytest.raises(DatasetError, match=r"label_column 'klass' does not exist.*image \(Image\)"):
        load_image_classification_data(ds, label_column="klass")


def test_empty_dataset_and_empty_eval_split():
    empty = _class_label_dataset().select([])
    with pytest.raises(DatasetError, match="is empty"):
        load_image_classification_data(empty)
    dd = datasets.DatasetDict({"train": _class_label_dataset(), "validation": empty})
    with pytest.raises(DatasetError, match="evaluation split 'validation'.*is empty"):
        load_image_classification_data(dd)


def test_labels_outside_range_are_rejected():
    unlabelled = _pil_dataset(
        [_constant_image("L", (3, 3), 0)] * 4, [0, 1, -1, 1], datasets.ClassLabel(names=["a", "b"])
    )
    with pytest.raises(DatasetError, match=r"labels outside \[0, 2\).*-1"):
        load_image_classification_data(unlabelled)
    # Casting does not check ranges, so a ClassLabel column can hold too-large ids.
    too_big = _pil_dataset([_constant_image("L", (3, 3), 0)] * 4, [0, 1, 5, 1])
    too_big = too_big.cast_column("label", datasets.ClassLabel(names=["a", "b"]))
    with pytest.raises(DatasetError, match=r"labels outside \[0, 2\).*5"):
        load_image_classification_data(too_big)
    unlabelled_test = _pil_dataset(
        [_constant_image("L", (3, 3), 0)] * 3, [0, -1, 1], datasets.ClassLabel(names=["c0", "c1"])
    )
    dd = datasets.DatasetDict({"train": _class_label_dataset(6, 2), "test": unlabelled_test})
    with pytest.raises(DatasetError, match=r"Split 'test' has labels outside"):
        load_image_classification_data(dd)


def test_unreachable_hub_name_suggests_local_options():
    with pytest.raises(DatasetError, match=r"Could not load dataset 'nobody/no-such-dataset'.*image folder.*'digits'"):
        load_image_classification_data("nobody/no-such-dataset")


def test_bad_arguments():
    with pytest.raises(DatasetError, match="eval_fraction"):
        load_image_classification_data(_class_label_dataset(), eval_fraction=1.5)
    with pytest.raises(DatasetError, match="Unsupported dataset source"):
        load_image_classification_data(123)
    with pytest.raises(DatasetError, match="different classes"):
        other = _class_label_dataset(6, 2)
        load_image_classification_data(datasets.DatasetDict({"train": _class_label_dataset(), "val": other}))


# --------------------------------------------------------------------------------------------- transforms


def test_eval_transform_normalises_a_constant_image_exactly():
    pre = PreprocessingConfig(input_size=(3, 16, 16), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))
    colour = (30, 128, 250)
    out = build_transforms(pre, train=False)(_constant_image("RGB", (37, 23), colour))
    assert out.shape == (3, 16, 16)
    for c in range(3):
        want = (colour[c] / 255.0 - pre.mean[c]) / pre.std[c]
        torch.testing.assert_close(out[c], torch.full((16, 16), want), rtol=0, atol=1e-5)


def test_single_mean_and_std_are_repeated_and_mismatch_is_an_error():
    pre = PreprocessingConfig(input_size=(3, 8, 8), mean=(0.5,), std=(0.5,))
    out = build_transforms(pre, train=False)(_constant_image("L", (8, 8), 255))
    torch.testing.assert_close(out, torch.ones(3, 8, 8), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="mean has 2 values but the backbone expects 3"):
        build_transforms(PreprocessingConfig(input_size=(3, 8, 8), mean=(0.5, 0.5)), train=False)
    with pytest.raises(ValueError, match="4 input channels"):
        build_transforms(PreprocessingConfig(input_size=(4, 8, 8), mean=(0.5,), std=(0.5,)), train=False)
    with pytest.raises(ValueError, match="Unknown interpolation"):
        build_transforms(PreprocessingConfig(input_size=(3, 8, 8), interpolation="cubic-ish"), train=False)


def test_eval_transform_resizes_by_crop_pct_then_centre_crops():
    # 64x32 (w x h), left half black, right half white; size 16 with crop_pct 0.5 resizes the shorter edge
    # to 32 (no change), then the centre 16x16 crop spans columns 24..39: 8 black then 8 white columns.
    pixels = np.zeros((32, 64), dtype=np.uint8)
    pixels[:, 32:] = 255
    pre = PreprocessingConfig(input_size=(1, 16, 16), mean=(0.0,), std=(1.0,), crop_pct=0.5)
    out = build_transforms(pre, train=False)(Image.fromarray(pixels, mode="L"))
    assert out.shape == (1, 16, 16)
    torch.testing.assert_close(out[0, :, :8], torch.zeros(16, 8))
    torch.testing.assert_close(out[0, :, 8:], torch.ones(16, 8))

    # Non-square sizes resize both edges by 1 / crop_pct.
    pre = PreprocessingConfig(input_size=(3, 12, 20), crop_pct=0.875)
    assert build_transforms(pre, train=False)(_constant_image("RGB", (50, 50), (1, 2, 3))).shape == (3, 12, 20)
    assert build_transforms(pre, train=True)(_constant_image("RGB", (50, 50), (1, 2, 3))).shape == (3, 12, 20)


def test_train_transform_flips_only_when_asked():
    # Left half black, right half white: RandomResizedCrop(scale >= 0.7, ratio in [3/4, 4/3]) keeps at least
    # 72% of the width, so without a flip the first column is always darker than the last.
    pixels = np.zeros((40, 40), dtype=np.uint8)
    pixels[:, 20:] = 255
    image = Image.fromarray(pixels, mode="L")
    pre = PreprocessingConfig(input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))

    def left_darker_count(hflip):
        transform = build_transforms(pre, train=True, hflip=hflip)
        torch.manual_seed(0)
        outs = [transform(image) for _ in range(30)]
        return sum(bool(o[0, :, 0].mean() < o[0, :, -1].mean()) for o in outs)

    assert left_darker_count(False) == 30  # also fails if crops may be small enough to miss one half
    assert 5 <= left_darker_count(True) <= 25


def test_eval_transform_is_timms_where_timms_fits_and_why_hubtune_keeps_its_own():
    import random

    from timm.data import create_transform

    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 50), (64, 41))]
    for pre in (PreprocessingConfig(input_size=(3, 32, 32)),
                PreprocessingConfig(input_size=(3, 24, 24), interpolation="bilinear", crop_pct=0.8, mean=(0.5,) * 3,
                                    std=(0.25,) * 3)):
        timm_eval = create_transform(input_size=pre.input_size, interpolation=pre.interpolation, mean=pre.mean,
                                     std=pre.std, crop_pct=pre.crop_pct, crop_mode="center")
        for image in rgb:  # RGB, square size: the same tensors as timm's
            torch.testing.assert_close(build_transforms(pre, train=False)(image), timm_eval(image), rtol=0, atol=1e-6)
        # A grayscale image: timm's transform gives 1 channel to a 3-channel backbone (its Normalize then fails).
        gray = rgb[0].convert("L")
        assert build_transforms(pre, train=False)(gray).shape[0] == 3
        with pytest.raises(RuntimeError):
            timm_eval(gray)

    # Training crops: hubtune's follow torch's seed alone; timm's also depend on Python's `random`.
    pre = PreprocessingConfig(input_size=(3, 16, 16))
    timm_train = create_transform(input_size=pre.input_size, is_training=True, scale=(0.7, 1.0), hflip=0.0,
                                  color_jitter=None, interpolation=pre.interpolation, mean=pre.mean, std=pre.std)
    ours = build_transforms(pre, train=True)

    def crops(transform, python_seed):
        torch.manual_seed(0)
        random.seed(python_seed)
        return torch.stack([transform(rgb[1]) for _ in range(4)])

    torch.testing.assert_close(crops(ours, 1), crops(ours, 2), rtol=0, atol=0)
    assert not torch.equal(crops(timm_train, 1), crops(timm_train, 2))


def test_deep_grayscale_is_scaled_not_clipped():
    pre = PreprocessingConfig(input_size=(3, 4, 4), mean=(0.0,), std=(1.0,))
    for value in (65535, 257 * 100):
        image = Image.fromarray(np.full((4, 4), value, dtype=np.uint16))
        assert image.mode.startswith("I")
        out = build_transforms(pre, train=False)(image)
        torch.testing.assert_close(out, torch.full((3, 4, 4), round(value / 257) / 255.0), rtol=0, atol=1e-6)


def test_cmyk_and_la_images_convert():
    pre = PreprocessingConfig(input_size=(3, 4, 4), mean=(0.0,), std=(1.0,))
    cmyk = Image.new("RGB", (6, 6), (255, 0, 0)).convert("CMYK")
    torch.testing.assert_close(build_transforms(pre, train=False)(cmyk)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    la = Image.new("LA", (6, 6), (51, 10))
    torch.testing.assert_close(build_transforms(pre, train=False)(la)[:, 0, 0], torch.full((3,), 0.2))


# --------------------------------------------------------------------------------------------- collator


def test_with_transforms_and_collator():
    data = load_image_classification_data(_class_label_dataset(12), eval_fraction=0.25)
    pre = PreprocessingConfig(input_size=(3, 10, 10), mean=(0.0,), std=(1.0,))
    transformed = with_transforms(data.train, build_transforms(pre, train=False))
    example = transformed[0]
    assert set(example) == {"pixel_values", "labels"}
    assert example["pixel_values"].shape == (3, 10, 10)
    assert isinstance(example["labels"], int) and example["labels"] == data.train[0]["label"]

    loader = torch.utils.data.DataLoader(transformed, batch_size=4, collate_fn=collate_image_batch)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 3, 10, 10) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == list(data.train["label"])[:4]
    for i in range(4):
        torch.testing.assert_close(batch["pixel_values"][i], transformed[i]["pixel_values"])

    with pytest.raises(ValueError, match="empty"):
        collate_image_batch([])
    with pytest.raises(DatasetError, match="missing: image"):
        with_transforms(datasets.Dataset.from_dict({"label": [0]}), build_transforms(pre, train=False))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_the_one_copy_tensor_step_is_torchvisions_to_tensor_and_normalize_bit_for_bit(mode):
    from torchvision import transforms as T

    from hubtune.data import ToNormalizedTensor

    channels = len(mode)
    mean, std = (0.485, 0.456, 0.406, 0.5)[:channels], (0.229, 0.224, 0.225, 0.25)[:channels]
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, channels)).astype(np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    expected = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(image)
    assert torch.equal(ToNormalizedTensor(mean, std)(image), expected)


def test_uint8_batches_normalised_after_the_loader_equal_the_float_pipeline_bit_for_bit():
    from hubtune.data import normalize_batch

    preprocessing = PreprocessingConfig(input_size=(3, 12, 12), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (20, 17, 3)).astype(np.uint8)) for _ in range(4)]
    as_float = collate_image_batch([{"pixel_values": build_transforms(preprocessing, train=False)(im), "labels": 0}
                                    for im in images])
    as_uint8 = collate_image_batch([{"pixel_values": build_transforms(preprocessing, train=False, uint8=True)(im),
                                     "labels": 0} for im in images])
    assert as_uint8["pixel_values"].dtype == torch.uint8
    assert torch.equal(normalize_batch(as_uint8["pixel_values"], preprocessing), as_float["pixel_values"])
    assert normalize_batch(as_float["pixel_values"], preprocessing) is as_float["pixel_values"]


def test_collator_stacks_given_tensors():
    examples = [{"pixel_values": torch.full((2, 3, 3), float(i)), "labels": i} for i in range(3)]
    batch = collate_image_batch(examples)
    assert batch["pixel_values"].shape == (3, 2, 3, 3)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert batch["labels"].tolist() == [0, 1, 2] and batch["labels"].dtype == torch.long


def test_unstratifiable_split_falls_back_to_random_with_a_warning():
    # Class c2 has a single example, which a stratified split cannot place.
    ds = _pil_dataset(
        [_constant_image("L", (3, 3), i) for i in range(5)], [0, 0, 1, 1, 2], datasets.ClassLabel(names=["c0", "c1", "c2"])
    )
    with pytest.warns(UserWarning, match="splitting at random"):
        data = load_image_classification_data(ds, eval_fraction=0.4)
    assert (len(data.train), len(data.eval)) == (3, 2)
    assert data.num_labels == 3


def test_unreadable_images_are_left_out_with_a_count_or_named_under_strict(image_folder, capsys):
    folder, _ = image_folder
    good = (folder / "cat" / "1.png").read_bytes()
    (folder / "cat" / "broken.png").write_bytes(good[: len(good) // 2])  # a truncated PNG
    data = load_image_classification_data(str(folder), eval_fraction=0.3)
    assert len(data.train) + len(data.eval) == 9 and data.unreadable_images == 1  # the count, for the caller
    out = capsys.readouterr().out  # and a note on the hubtune.run logger (hubtune.messages), not a print
    assert "Leaving out 1 unreadable image(s)" in out and "broken.png" in out
    with pytest.raises(DatasetError, match=r"Cannot read image .*broken\.png"):
        load_image_classification_data(str(folder), strict_data=True)


def test_a_folder_with_one_class_says_so(tmp_path):
    (tmp_path / "cat").mkdir()
    for k in range(3):
        Image.new("RGB", (8, 8), (k, k, k)).save(tmp_path / "cat" / f"{k}.png")
    with pytest.raises(DatasetError, match="only one class"):
        load_image_classification_data(str(tmp_path))


def test_options_come_as_keywords_as_a_data_options_object_or_both():
    from hubtune.data import DataOptions

    by_keywords = load_image_classification_data("digits", eval_fraction=0.3, seed=1, max_train_samples=50)
    by_object = load_image_classification_data("digits", DataOptions(eval_fraction=0.3, seed=1, max_train_samples=50))
    mixed = load_image_classification_data("digits", DataOptions(eval_fraction=0.3, seed=7), seed=1, max_train_samples=50)
    for data in (by_object, mixed):  # the keywords replace the object's fields
        assert data.train["label"] == by_keywords.train["label"] and len(data.eval) == len(by_keywords.eval) == 540
    assert len(by_keywords.train) == 50
    with pytest.raises(TypeError, match="unexpected keyword argument 'eval_fractoin'; its options are image_column"):
        load_image_classification_data("digits", eval_fractoin=0.3)
    with pytest.raises(DatasetError, match="max_train_samples"):
        load_image_classification_data("digits", DataOptions(max_train_samples=0))

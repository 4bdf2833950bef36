"""hubtune.ood: scores against float64 statements, metrics on constructed cases, evaluation, errors, CLI."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hubtune.backbones import PreprocessingConfig
from hubtune.commands import main as hubtune_main
from hubtune.commands import ood as ood_command
from hubtune.data import build_transforms
from hubtune.errors import DatasetError, OODError
from hubtune.hub import read_run_info, write_model_card, write_run_info
from hubtune.modeling import HubtuneForImageClassification
from hubtune.ood import (
    METRIC_NAMES,
    OOD_SCORES,
    OOD_SOURCES,
    ClassGaussians,
    OODScore,
    OODSource,
    ClassSubspaces,
    energy_score,
    evaluate_ood,
    format_ood_entries,
    format_ood_table,
    get_ood_score,
    load_ood_data,
    mahalanobis_score,
    max_logit_score,
    merge_ood_entries,
    msp_score,
    ood_metrics,
    read_ood_results,
    register_ood_score,
    register_ood_source,
    subspace_angle_score,
    unregister_ood_score,
    unregister_ood_source,
)


# --------------------------------------------------------------------------------------------- scores


def _random_logits(seed, n=17, c=6, scale=30.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * scale


def test_logit_scores_match_float64_loops():
    logits = _random_logits(0)  # scale 30: naive exp would overflow in float32 without max-subtraction
    z = logits.numpy()
    for i in range(z.shape[0]):
        row = [float(v) for v in z[i]]
        top = max(row)
        total = sum(math.exp(v - top) for v in row)
        assert msp_score(logits)[i].item() == pytest.approx(max(math.exp(v - top) / total for v in row), rel=1e-12)
        assert max_logit_score(logits)[i].item() == top
        for temperature in (1.0, 2.5):
            m = max(v / temperature for v in row)
            expected = temperature * (m + math.log(sum(math.exp(v / temperature - m) for v in row)))
            assert energy_score(logits, temperature)[i].item() == pytest.approx(expected, rel=1e-12)
    # float32 inputs give the same scores to float32 precision, and the default temperature is 1
    assert torch.allclose(energy_score(logits.float()).double(), energy_score(logits, 1.0), rtol=1e-6)


def test_logit_score_input_errors():
    with pytest.raises(ValueError, match="temperature"):
        energy_score(_random_logits(1), temperature=0.0)
    with pytest.raises(ValueError, match="logits"):
        msp_score(torch.zeros(5))


def _class_features(seed, n_per_class=(9, 7, 12), dim=5):
    g = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for c, n in enumerate(n_per_class):
        direction = torch.randn(dim, generator=g, dtype=torch.float64)
        along = torch.randn(n, 1, generator=g, dtype=torch.float64) * 3 + 4
        feats.append(along * direction + 0.3 * torch.randn(n, dim, generator=g, dtype=torch.float64))
        labels += [c + 2] * n  # labels need not start at 0
    return torch.cat(feats), torch.tensor(labels)


def test_subspace_fit_matches_numpy_svd_and_score_matches_loop():
    features, labels = _class_features(0)
    subspaces = ClassSubspaces.fit(features, labels)
    assert subspaces.classes.tolist() == [2, 3, 4]
    x, y = features.numpy(), labels.numpy()
    for row, c in zip(subspaces.directions.numpy(), (2, 3, 4)):
        _, _, vt = np.linalg.svd(x[y == c], full_matrices=False)
        assert abs(float(row @ vt[0])) == pytest.approx(1.0, abs=1e-10)  # same line, sign arbitrary
        assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-12)

    queries = torch.randn(11, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scores = subspace_angle_score(queries, subspaces)
    for i, h in enumerate(queries.numpy()):
        expected = max(abs(float(h @ v)) / np.linalg.norm(h) for v in subspaces.directions.numpy())
        assert scores[i].item() == pytest.approx(expected, abs=1e-12)


def test_subspace_score_edge_cases():
    # features exactly on two lines: training points score 1, an orthogonal feature and the zero feature 0
    e = torch.eye(3, dtype=torch.float64)
    features = torch.stack([2 * e[0], -3 * e[0], 1 * e[1], 5 * e[1]])
    subspaces = ClassSubspaces.fit(features, torch.tensor([0, 0, 1, 1]))
    scores = subspaces.score(torch.cat([features, e[2:3], torch.zeros(1, 3, dtype=torch.float64)]))
    assert torch.allclose(scores, torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="3-dimensional"):
        subspaces.score(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="zero training features"):
        ClassSubspaces.fit(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_mahalanobis_matches_numpy_statement():
    features, labels = _class_features(1)
    gaussians = ClassGaussians.fit(features, labels)
    x, y = features.numpy(), labels.numpy()
    classes = sorted(set(y.tolist()))
    means = {c: x[y == c].mean(axis=0) for c in classes}
    cov = np.zeros((x.shape[1], x.shape[1]))
    for xi, yi in zip(x, y):
        d = xi - means[yi]
        cov += np.outer(d, d)
    cov /= len(x)
    precision = np.linalg.inv(cov)  # full rank here: the pseudo-inverse is the inverse
    queries = torch.randn(8, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    scores = mahalanobis_score(queries, gaussians)
    for i, h in enumerate(queries.numpy()):
        expected = -min(float((h - means[c]) @ precision @ (h - means[c])) for c in classes)
        assert scores[i].item() == pytest.approx(expected, rel=1e-9)
    # a class mean itself is at distance 0, the highest possible score
    assert gaussians.score(gaussians.means).tolist() == pytest.approx([0.0] * 3, abs=1e-9)


def test_mahalanobis_singular_covariance_uses_pseudo_inverse():
    # 6 samples in 10 dimensions: singular covariance, no NaN / inf, matches numpy's pinv
    g = torch.Generator().manual_seed(5)
    features = torch.randn(6, 10, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    gaussians = ClassGaussians.fit(features, labels)
    x = features.numpy()
    means = np.stack([x[:3].mean(0), x[3:].mean(0)])
    centred = x - means[labels.numpy()]
    precision = np.linalg.pinv(centred.T @ centred / 6, rcond=1e-10, hermitian=True)
    q = torch.randn(4, 10, generator=g, dtype=torch.float64)
    expected = [-min((h - m) @ precision @ (h - m) for m in means) for h in q.numpy()]
    assert gaussians.score(q).tolist() == pytest.approx(expected, rel=1e-7)


def test_registry_names_and_unknown_score_lists_valid_ones():
    assert set(OOD_SCORES) == {"msp", "max-logit", "energy", "subspace", "mahalanobis"}
    assert {n for n, s in OOD_SCORES.items() if s.fitted} == {"subspace", "mahalanobis"}
    assert get_ood_score("energy").build() is energy_score
    with pytest.raises(OODError) as info:  # an OODError is a ValueError
        get_ood_score("odin")
    assert isinstance(info.value, ValueError)
    for name in OOD_SCORES:
        assert name in str(info.value)


# --------------------------------------------------------------------------------------------- metrics


def _numpy_fpr_at_95_tpr(in_scores, out_scores):
    """Smallest FPR over thresholds t (predict in if score >= t) keeping at least 95% of in-distribution."""
    best = 1.0
    for t in np.unique(np.concatenate([in_scores, out_scores])):
        if (in_scores >= t).sum() >= 0.95 * len(in_scores) - 1e-9:
            best = min(best, float((out_scores >= t).mean()))
    return best


def _numpy_auroc(in_scores, out_scores):
    wins = sum(float(a > b) + 0.5 * float(a == b) for a in in_scores for b in out_scores)
    return wins / (len(in_scores) * len(out_scores))


def _numpy_detection_error(in_scores, out_scores):
    best = 0.5  # threshold above every score: reject all
    for t in np.unique(np.concatenate([in_scores, out_scores])):
        best = min(best, 0.5 * float((in_scores < t).mean()) + 0.5 * float((out_scores >= t).mean()))
    return best


def test_perfect_separation_and_reversed():
    in_scores, out_scores = torch.linspace(5, 6, 40), torch.linspace(-3, 4, 25)
    m = ood_metrics(in_scores, out_scores)
    assert m == {"auroc": 1.0, "fpr_at_95_tpr": 0.0, "aupr_in": 1.0, "aupr_out": 1.0, "detection_error": 0.0}
    r = ood_metrics(out_scores, in_scores)
    assert r["auroc"] == 0.0 and r["fpr_at_95_tpr"] == 1.0 and r["detection_error"] == pytest.approx(0.5)


def test_identical_distributions_give_chance():
    g = torch.Generator().manual_seed(0)
    m = ood_metrics(torch.randn(20000, generator=g), torch.randn(20000, generator=g))
    assert m["auroc"] == pytest.approx(0.5, abs=0.01)
    assert m["fpr_at_95_tpr"] == pytest.approx(0.95, abs=0.01)
    assert m["aupr_in"] == pytest.approx(0.5, abs=0.01) and m["aupr_out"] == pytest.approx(0.5, abs=0.01)
    assert m["detection_error"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("n_in,n_out,ties", [(20, 31, False), (37, 23, False), (60, 50, True)])
def test_metrics_match_independent_statements(n_in, n_out, ties):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(n_in)
    in_scores = rng.normal(1.0, 1.0, n_in)
    out_scores = rng.normal(0.0, 1.0, n_out)
    if ties:  # integer scores: many ties across and within the two sets
        in_scores, out_scores = np.round(2 * in_scores), np.round(2 * out_scores)
    m = ood_metrics(torch.from_numpy(in_scores), torch.from_numpy(out_scores))
    assert m["fpr_at_95_tpr"] == pytest.approx(_numpy_fpr_at_95_tpr(in_scores, out_scores), abs=1e-6)
    assert m["auroc"] == pytest.approx(_numpy_auroc(in_scores, out_scores), abs=1e-6)
    assert m["detection_error"] == pytest.approx(_numpy_detection_error(in_scores, out_scores), abs=1e-6)
    y = np.r_[np.ones(n_in), np.zeros(n_out)]
    s = np.r_[in_scores, out_scores]
    assert m["aupr_in"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-6)


def test_metrics_do_not_saturate_on_large_scores():
    # energies / negative distances far outside [0, 1]: a float32 sigmoid would turn these into ties
    in_scores = 60 + torch.arange(30) * 1e-3
    out_scores = 45 + torch.arange(30) * 1e-3
    assert ood_metrics(in_scores, out_scores)["auroc"] == 1.0
    assert ood_metrics(-1e5 - in_scores, -1e5 - out_scores)["auroc"] == 0.0


def test_metric_errors():
    with pytest.raises(ValueError, match="empty"):
        ood_metrics(torch.ones(3), torch.ones(0))
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(torch.tensor([1.0, float("nan")]), torch.ones(3))


# --------------------------------------------------------------------------------------------- data


def _labelled(images, labels):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def _in_distribution(n, seed, size=(8, 8)):
    """Grayscale images whose class sets the brightness of one half: learnable, tiny, deterministic."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        c = i % 3
        pixels = rng.integers(0, 60, size=(size[1], size[0]), dtype=np.uint8)
        pixels[:, : size[0] // 2] += np.uint8(60 * c)
        images.append(Image.fromarray(pixels, mode="L"))
        labels.append(c)
    return _labelled(images, labels)


def _rgb_images(n, size=(13, 20), seed=0):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]},
        features=datasets.Features({"image": datasets.Image()}),
    )


def test_builtin_sources_shape_mode_and_seed():
    noise = load_ood_data("noise", image_size=(8, 6), mode="L", num_images=5, seed=1)
    assert len(noise) == 5 and noise[0]["image"].size == (8, 6) and noise[0]["image"].mode == "L"
    again = load_ood_data("noise", image_size=(8, 6), mode="L", num_images=5, seed=1)
    assert np.array_equal(np.asarray(noise[3]["image"]), np.asarray(again[3]["image"]))
    photos = load_ood_data("skimage-photos", image_size=12, num_images=6, seed=0)
    arrays = [np.asarray(photos[i]["image"]) for i in range(6)]
    assert all(a.shape == (12, 12, 3) for a in arrays)
    assert len({a.tobytes() for a in arrays}) == 6  # different crops
    # photo crops are not noise: neighbouring pixels correlate
    a = np.stack(arrays).astype(float)
    assert np.corrcoef(a[:, :, :-1].ravel(), a[:, :, 1:].ravel())[0, 1] > 0.5
    with pytest.raises(ValueError, match="Unsupported OOD source"):
        load_ood_data(42)


def test_dataset_sources_unlabelled_folder_and_subsampling(tmp_path):
    for i in range(5):
        Image.new("RGB", (10 + i, 7), (40 * i, 0, 0)).save(tmp_path / f"img{i}.png")
    folder = load_ood_data(str(tmp_path))  # no class sub-folders: OOD images need no labels
    assert len(folder) == 5 and sorted(im.size[0] for im in folder["image"]) == [10, 11, 12, 13, 14]
    subset = load_ood_data(_rgb_images(9), num_images=4, seed=0)
    assert len(subset) == 4
    # a labelled source gives its evaluation split (here the held-out 20% of the one split)
    assert len(load_ood_data(_in_distribution(20, seed=0))) == 20  # a bare Dataset is used whole
    held_out = load_ood_data(datasets.DatasetDict({"train": _in_distribution(20, seed=0)}))
    assert len(held_out) == 4


# --------------------------------------------------------------------------------------------- evaluation


class TinyNet(nn.Module):
    """forward_features -> pooled (B, 4); classifier -> 3 logits; input 1 x 6 x 6."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.classifier = nn.Linear(4, 3)

    def forward_features(self, pixel_values):
        return torch.relu(self.conv(pixel_values)).mean(dim=(2, 3))

    def forward(self, pixel_values):
        return self.classifier(self.forward_features(pixel_values))


TINY_PRE = PreprocessingConfig(input_size=(1, 6, 6), mean=(0.5,), std=(0.5,), interpolation="bilinear", crop_pct=1.0)


@pytest.fixture(scope="module")
def hubtune_model():
    torch.manual_seed(0)
    return HubtuneForImageClassification.from_backbone("test_resnet", num_labels=3, method="ce", image_size=16)


def test_evaluate_ood_end_to_end_mixed_sizes_and_channels(hubtune_model):
    train, test = _in_distribution(36, seed=0), _in_distribution(24, seed=1)
    rgb = _rgb_images(10)  # 3 channels, 13 x 20, no label column
    rgba = datasets.Dataset.from_dict({"picture": [Image.new("RGBA", (40, 7), (9, 200, 30, 128))] * 7})
    hubtune_model.train()
    results = evaluate_ood(
        hubtune_model, test, {"rgb": rgb, "rgba": rgba, "noise": "noise"}, train_data=train, batch_size=5
    )
    assert results["scores"] == list(OOD_SCORES)
    assert results["in_distribution"]["num_images"] == 24 and 0 <= results["in_distribution"]["accuracy"] <= 1
    assert {k: v["num_images"] for k, v in results["results"].items()} == {"rgb": 10, "rgba": 7, "noise": 24}
    for entry in results["results"].values():
        for metrics in entry["metrics"].values():
            assert set(metrics) == {"auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "detection_error"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert hubtune_model.training  # the caller's mode is restored

    hubtune_model.eval()

    # The wiring: recompute msp and subspace by hand with the model's own eval transform.
    transform = build_transforms(hubtune_model.preprocessing, train=False)
    with torch.no_grad():
        def run(ds, column="image"):
            x = torch.stack([transform(im) for im in ds[column]])
            feats = hubtune_model.forward_features(x)
            return feats, hubtune_model.classifier(feats)

        f_train, _ = run(train)
        f_in, z_in = run(test)
        f_rgb, z_rgb = run(rgb)
    assert results["results"]["rgb"]["metrics"]["msp"] == pytest.approx(ood_metrics(msp_score(z_in), msp_score(z_rgb)))
    subspaces = ClassSubspaces.fit(f_train, torch.tensor(train["label"]))
    expected = ood_metrics(subspaces.score(f_in), subspaces.score(f_rgb))
    assert results["results"]["rgb"]["metrics"]["subspace"] == pytest.approx(expected, abs=1e-6)
    accuracy = float((z_in.argmax(1) == torch.tensor(test["label"])).float().mean())
    assert results["in_distribution"]["accuracy"] == pytest.approx(accuracy)

    table = format_ood_table(results)
    assert "| rgb (10) | energy |" in table and "**mean**" in table
    assert table.count("\n|") == 2 + 3 * 5 + 5  # header, rule, 3 sets x 5 scores, 5 means


def test_evaluate_ood_with_plain_module_pair_and_logits_only_callable():
    net = TinyNet()
    train, test = _in_distribution(30, seed=2, size=(6, 6)), _in_distribution(15, seed=3, size=(6, 6))
    ood = {"rgb": _rgb_images(9, size=(9, 9))}
    via_module = evaluate_ood(net, test, ood, train_data=train, preprocessing=TINY_PRE)
    via_pair = evaluate_ood((net.forward_features, net.classifier), test, ood, train_data=train, preprocessing=TINY_PRE)
    assert via_module["results"] == via_pair["results"]
    logit_only = evaluate_ood(net.forward, test, ood, scores=["energy", "msp"], preprocessing=TINY_PRE)
    assert logit_only["results"]["rgb"]["metrics"]["energy"] == via_module["results"]["rgb"]["metrics"]["energy"]


def test_evaluate_ood_errors(hubtune_model):
    test, train = _in_distribution(6, seed=4), _in_distribution(9, seed=5)
    rgb = _rgb_images(4)
    empty = rgb.select([])
    with pytest.raises(ValueError, match="'nothing' is empty"):
        evaluate_ood(hubtune_model, test, {"nothing": empty}, scores=["msp"])
    with pytest.raises(ValueError, match="in-distribution dataset .* is empty"):
        evaluate_ood(hubtune_model, test.select([]), {"rgb": rgb}, scores=["msp"])
    with pytest.raises(ValueError, match="at least one OOD dataset"):
        evaluate_ood(hubtune_model, test, {}, scores=["msp"])
    with pytest.raises(ValueError) as info:
        evaluate_ood(hubtune_model, test, {"rgb": rgb}, scores=["msp", "gram"])
    assert "gram" in str(info.value) and all(name in str(info.value) for name in OOD_SCORES)
    with pytest.raises(ValueError, match="needs pooled features.*forward_features"):
        evaluate_ood(lambda x: torch.zeros(len(x), 3), test, {"rgb": rgb}, scores=["subspace"], train_data=train,
                     preprocessing=TINY_PRE)
    with pytest.raises(ValueError, match="needs logits"):
        evaluate_ood((TinyNet().forward_features, None), test, {"rgb": rgb}, scores=["energy"], preprocessing=TINY_PRE)
    with pytest.raises(ValueError, match="pass train_data"):
        evaluate_ood(hubtune_model, test, {"rgb": rgb}, scores=["mahalanobis"])
    with pytest.raises(ValueError, match="preprocessing"):
        evaluate_ood(TinyNet(), test, {"rgb": rgb}, scores=["msp"])


def _named_model(names, rows=None):
    """test_resnet with class names ``names``; ``rows`` permutes the classifier rows of a seed-0 model."""
    torch.manual_seed(0)
    model = HubtuneForImageClassification.from_backbone("test_resnet", id2label=dict(enumerate(names)), method="ce",
                                                        image_size=16).eval()
    if rows is not None:
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight[rows].clone())
            model.classifier.bias.copy_(model.classifier.bias[rows].clone())
    return model


def test_an_in_distribution_set_of_other_classes_is_refused_naming_both(tmp_path, capsys):
    """Issue 17: `hubtune ood` scored a model against a dataset of other classes and printed its accuracy."""
    test, train = _in_distribution(12, seed=1), _in_distribution(12, seed=2)  # classes a, b, c
    with pytest.raises(OODError) as info:
        evaluate_ood(_named_model(["cat", "dog", "fox"]), test, {"noise": "noise"}, train_data=train, scores=["msp"])
    message = str(info.value)
    assert "[cat, dog, fox]" in message and "[a, b, c]" in message and "--dataset" in message and "\n" not in message
    unnamed = HubtuneForImageClassification.from_backbone("test_resnet", num_labels=4, method="ce", image_size=16)
    with pytest.raises(OODError, match="The model has 4 classes and .* has 3"):
        evaluate_ood(unnamed, test, {"noise": "noise"}, scores=["msp"])
    # through the command: one line, nothing written
    model_dir = tmp_path / "model"
    _named_model(["cat", "dog", "fox"]).save_pretrained(model_dir)
    data_dir = _saved_dataset(tmp_path / "data", 12, 6, seed=6)
    assert hubtune_main(["ood", "--model", str(model_dir), "--dataset", data_dir, "--ood_dataset", "noise",
                         "--output_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hubtune ood: error: The model's classes are not those of") and "[cat, dog, fox]" in err
    assert not (tmp_path / "out" / "ood_results.json").exists()


def test_the_same_classes_in_another_order_are_mapped_by_name(capsys):
    test, train = _in_distribution(36, seed=1), _in_distribution(30, seed=2)  # classes a, b, c
    labels = test["label"]
    keep = [i for i, y in enumerate(labels) if y == 0] + [i for i, y in enumerate(labels) if y == 1][:4] + [
        i for i, y in enumerate(labels) if y == 2][:1]
    test = test.select(keep)  # 12 / 4 / 1 images: no relabelling keeps the accuracy by chance
    plain = evaluate_ood(_named_model(["a", "b", "c"]), test, {"noise": "noise"}, train_data=train,
                         scores=["msp", "mahalanobis"])
    # the same network with its classes stored in another order: class i of the new model is old class rows[i]
    rows = [2, 0, 1]
    permuted = evaluate_ood(_named_model([["a", "b", "c"][r] for r in rows], rows=rows), test, {"noise": "noise"},
                            train_data=train, scores=["msp", "mahalanobis"])
    assert "mapped to the model's by name" in capsys.readouterr().out
    assert permuted["in_distribution"]["accuracy"] == pytest.approx(plain["in_distribution"]["accuracy"])
    for score, metrics in plain["results"]["noise"]["metrics"].items():
        assert permuted["results"]["noise"]["metrics"][score] == pytest.approx(metrics, abs=1e-6), score


# ------------------------------------------------------------------------------------- OOD sources checked first


class CountingNet(TinyNet):
    """TinyNet that counts its forward passes and carries its own preprocessing."""

    preprocessing = TINY_PRE

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward_features(self, pixel_values):
        self.calls += 1
        return super().forward_features(pixel_values)


def _image_folder(folder, n=4, size=(9, 7)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (30 * i, 10, 200)).save(folder / f"img{i}.png")
    return folder


def _truncated_png(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a valid header, half the pixels: only decoding finds it


def test_unreadable_ood_image_is_named_before_the_model_runs(tmp_path):
    folder = _image_folder(tmp_path / "ood")
    _truncated_png(folder / "broken.png")
    net = CountingNet()
    test, train = _in_distribution(9, seed=8, size=(6, 6)), _in_distribution(12, seed=9, size=(6, 6))
    with pytest.raises(OODError, match=r"broken\.png.*cannot be read") as info:
        evaluate_ood(net, test, {"noise": "noise", "mine": str(folder)}, train_data=train)
    assert "'mine'" in str(info.value)
    assert net.calls == 0  # neither the in-distribution set nor the training split was scored
    with pytest.raises(OODError, match="does not exist"):
        evaluate_ood(net, test, [str(tmp_path / "no-such-folder")], scores=["msp"])
    assert net.calls == 0
    (folder / "broken.png").unlink()
    assert evaluate_ood(net, test, {"mine": str(folder)}, scores=["msp"])["results"]["mine"]["num_images"] == 4
    assert net.calls > 0


def _saved_dataset(folder, n_train, n_test, seed, size=(8, 8)):
    datasets.DatasetDict({"train": _in_distribution(n_train, seed=seed, size=size),
                          "test": _in_distribution(n_test, seed=seed + 1, size=size)}).save_to_disk(str(folder))
    return str(folder)


def test_cli_checks_ood_sources_before_scoring(tmp_path, monkeypatch, capsys):
    net = CountingNet()

    monkeypatch.setattr(ood_command, "_load_model", lambda args: net)
    data = _saved_dataset(tmp_path / "data", 12, 6, seed=10, size=(6, 6))
    folder = _image_folder(tmp_path / "ood")
    _truncated_png(folder / "broken.png")
    rc = hubtune_main(["ood", "--model", "m", "--dataset", data, "--ood_dataset", "noise", str(folder),
                       "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (datasets' progress bars come before it)
    assert rc == 1 and err.startswith("hubtune ood: error: OOD set") and "broken.png" in err
    assert net.calls == 0 and not (tmp_path / "out" / "ood_results.json").exists()


# --------------------------------------------------------------------------------------------- the command


def _ood_cli(argv):
    """``hubtune ood ARGS`` through the command's own entry point."""
    return ood_command.run(argv)


def _run_info(**overrides):
    """A hubtune_run.json as the training code writes it (plain values)."""
    info = {"base_model": "test_resnet", "backbone_library": "timm", "export_format": "timm", "pretrained": False,
            "dataset": "tiny", "method": "ce", "method_card": {"title": "cross-entropy fine-tuning", "tags": []},
            "hyperparameters": {"image_size": 16}, "metrics": {"eval_accuracy": 0.5}, "num_labels": 3,
            "id2label": {0: "a", 1: "b", 2: "c"}, "log_history": []}
    return {**info, **overrides}


def test_cli_writes_table_and_json(hubtune_model, tmp_path, capsys):
    assert ood_command.build_parser().prog == "hubtune ood"
    model_dir = tmp_path / "model"
    hubtune_model.save_pretrained(model_dir)
    data_dir = _saved_dataset(tmp_path / "data", 30, 12, seed=6)
    out_dir = tmp_path / "ood"
    rc = _ood_cli(["--model", str(model_dir), "--dataset", data_dir, "--ood_dataset", "noise", "skimage-photos",
                   "--score", "msp", "subspace", "--score", "energy", "--output_dir", str(out_dir),
                   "--batch_size", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    written = json.loads((out_dir / "ood_results.json").read_text())
    entries = {e["ood_dataset"]: e for e in written["entries"]}
    assert set(entries) == {"noise", "skimage-photos"}
    for entry in entries.values():
        assert entry["model"] == str(model_dir) and entry["scores"] == ["msp", "subspace", "energy"]
        assert entry["in_distribution"] == data_dir and entry["in_distribution_images"] == 12
        assert entry["train_images"] == 30
    assert entries["noise"]["num_images"] == 12
    auroc = entries["skimage-photos"]["metrics"]["subspace"]["auroc"]
    assert f"| skimage-photos (12) | subspace | {100 * auroc:.1f} |" in printed

    # without --output_dir the results go next to a local model, and into its model card when it has one
    write_run_info(model_dir, _run_info())
    write_model_card(model_dir, _run_info())
    assert "Out-of-distribution" not in (model_dir / "README.md").read_text()
    assert _ood_cli(["--model", str(model_dir), "--dataset", data_dir, "--ood-dataset", "noise", "--score", "msp"]) == 0
    (entry,) = json.loads((model_dir / "ood_results.json").read_text())["entries"]
    assert entry["scores"] == ["msp"]
    card = (model_dir / "README.md").read_text()
    assert "## Out-of-distribution detection" in card
    assert f"| noise (12) | msp | {100 * entry['metrics']['msp']['auroc']:.1f} |" in card
    assert read_run_info(model_dir)["ood_results"] == [entry]

    with pytest.raises(ValueError, match="Unknown OOD score 'odin'.*mahalanobis"):
        _ood_cli(["--model", str(model_dir), "--dataset", data_dir, "--ood_dataset", "noise", "--score", "odin"])
    config = tmp_path / "ood.yaml"
    config.write_text(f"model: {model_dir}\ndataset: {data_dir}\nscore: [energy]\n")
    assert hubtune_main(["ood", str(config)]) == 1  # no OOD set: one line, exit 1
    assert "needs --ood_dataset" in capsys.readouterr().err


def test_cli_keeps_one_result_per_set_pair(hubtune_model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    hubtune_model.save_pretrained(model_dir)
    write_run_info(model_dir, _run_info())
    data_a = _saved_dataset(tmp_path / "data-a", 30, 12, seed=11)
    data_b = _saved_dataset(tmp_path / "data-b", 24, 9, seed=13)
    photos = _image_folder(tmp_path / "photos", n=5)

    def run(dataset, *ood, scores=("msp", "energy")):
        assert _ood_cli(["--model", str(model_dir), "--dataset", dataset, "--ood_dataset", *ood,
                         "--score", *scores]) == 0
        return {(e["in_distribution"], e["ood_dataset"]): e for e in read_ood_results(model_dir)}

    first = run(data_a, "noise", "skimage-photos")  # hubtune 0.1's flags below: --in-data, --out-data
    assert ood_command.build_parser().parse_args(["--in-data", "d", "--out-data", "a", "b"]).ood_dataset == ["a", "b"]
    assert set(first) == {(data_a, "noise"), (data_a, "skimage-photos")}
    second = run(data_a, str(photos))  # another OOD set: added
    assert set(second) == set(first) | {(data_a, str(photos))}
    assert second[(data_a, "noise")] == first[(data_a, "noise")]
    third = run(data_b, "noise")  # another in-distribution set: added
    assert len(third) == 4 and third[(data_a, "noise")] == first[(data_a, "noise")]
    fourth = run(data_a, "noise", scores=("max-logit",))  # the same pair: replaces only its own entry
    assert len(fourth) == 4 and fourth[(data_a, "noise")]["scores"] == ["max-logit"]
    assert {k: v for k, v in fourth.items() if k != (data_a, "noise")} == {
        k: v for k, v in third.items() if k != (data_a, "noise")}

    card = (model_dir / "README.md").read_text()
    assert f"In-distribution: {data_a} (12 images" in card and f"In-distribution: {data_b} (9 images" in card
    assert "| noise (12) | max-logit |" in card and "| noise (9) | msp |" in card
    assert "| skimage-photos (12) | energy |" in card and f"| {photos} (5) | msp |" in card
    assert len(read_run_info(model_dir)["ood_results"]) == 4


# --------------------------------------------------------------------------------------------- results file


def _metrics(value):
    return {m: value for m in ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "detection_error")}


def test_results_file_reads_hubtune_0_1_files_and_merges(tmp_path):
    results = {"noise": {"num_images": 10, "metrics": {"msp": _metrics(0.5)}},
               "photos": {"num_images": 7, "metrics": {"msp": _metrics(0.7)}}}
    old = {"in_distribution": {"name": "digits", "num_images": 10, "accuracy": 0.9}, "train_images": 40,
           "scores": ["msp"], "model": "m", "results": results, "mean": {"msp": _metrics(0.6)}}
    (tmp_path / "ood_results.json").write_text(json.dumps(old))
    entries = read_ood_results(tmp_path)
    assert [(e["in_distribution"], e["ood_dataset"], e["num_images"]) for e in entries] == [
        ("digits", "noise", 10), ("digits", "photos", 7)]
    assert entries[0]["model"] == "m" and entries[0]["in_distribution_accuracy"] == 0.9
    replaced = dict(entries[0], metrics={"msp": _metrics(0.25)})
    merged = merge_ood_entries(entries, [replaced, dict(entries[1], in_distribution="other")])
    assert [(e["in_distribution"], e["ood_dataset"]) for e in merged] == [
        ("digits", "noise"), ("digits", "photos"), ("other", "photos")]
    assert merged[0]["metrics"]["msp"]["auroc"] == 0.25
    table = format_ood_entries(merged)
    assert table.count("In-distribution:") == 2 and "accuracy 90.0%" in table
    assert "| **mean** | msp | 47.5 |" in table  # (25 + 70) / 2, only in the group with two OOD sets
    assert read_ood_results(tmp_path / "empty") == []
    (tmp_path / "ood_results.json").write_text("[1, 2]")
    with pytest.raises(OODError, match="not an OOD results file"):
        read_ood_results(tmp_path)


# --------------------------------------------------------------------------------------------- a plug-in score


def _feature_norm(features):
    """A toy score: the L2 norm of the pooled features (higher = more in-distribution)."""
    return features.double().norm(dim=1)


@pytest.fixture()
def toy_score():
    """A new OOD score is one function plus one registration."""
    register_ood_score(OODScore("feature-norm", "features", False, "L2 norm of the pooled features",
                                lambda: _feature_norm))
    yield "feature-norm"
    unregister_ood_score("feature-norm")
    assert "feature-norm" not in OOD_SCORES


def test_a_registered_toy_score_is_computed_by_evaluate_ood(toy_score):
    net = TinyNet()
    train, test = _in_distribution(12, seed=2, size=(6, 6)), _in_distribution(10, seed=3, size=(6, 6))
    ood = {"rgb": _rgb_images(7, size=(9, 9))}
    results = evaluate_ood(net, test, ood, scores=["msp", toy_score], train_data=train, preprocessing=TINY_PRE)
    assert results["scores"] == ["msp", toy_score]

    transform = build_transforms(TINY_PRE, train=False)  # what evaluate_ood applies
    with torch.no_grad():
        f_in = net.forward_features(torch.stack([transform(im) for im in test["image"]]))
        f_out = net.forward_features(torch.stack([transform(im) for im in ood["rgb"]["image"]]))
    expected = ood_metrics(_feature_norm(f_in), _feature_norm(f_out))
    assert results["results"]["rgb"]["metrics"][toy_score] == pytest.approx(expected, abs=1e-6)


def test_a_registered_toy_score_runs_through_hubtune_ood(toy_score, hubtune_model, tmp_path, capsys):
    assert toy_score in ood_command.build_parser().format_help()
    model_dir = tmp_path / "model"
    hubtune_model.save_pretrained(model_dir)
    data_dir = _saved_dataset(tmp_path / "data", 12, 9, seed=6)
    assert _ood_cli(["--model", str(model_dir), "--dataset", data_dir, "--ood_dataset", "noise",
                     "--score", toy_score, "energy", "--output_dir", str(tmp_path / "ood")]) == 0
    (entry,) = json.loads((tmp_path / "ood" / "ood_results.json").read_text())["entries"]
    assert entry["scores"] == [toy_score, "energy"]
    assert set(entry["metrics"][toy_score]) == set(METRIC_NAMES)
    assert f"| noise (9) | {toy_score} |" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- a plug-in OOD source


def _stripes(num_images, size, mode, generator):
    """Horizontal stripes of a random period (2 to 4 pixels), white on black."""
    width, height = size
    images = []
    for _ in range(num_images):
        period = int(torch.randint(2, 5, (1,), generator=generator))
        rows = (np.arange(height) // period % 2 * 255).astype(np.uint8)
        images.append(Image.fromarray(np.repeat(rows[:, None], width, axis=1), mode="L").convert(mode))
    return images


@pytest.fixture()
def toy_source():
    """A new named OOD source is one function plus one registration."""
    register_ood_source(OODSource("toy-stripes", "horizontal stripes", _stripes))
    yield "toy-stripes"
    unregister_ood_source("toy-stripes")
    assert "toy-stripes" not in OOD_SOURCES


def test_the_built_in_named_sources_are_registry_entries():
    assert OOD_SOURCES.names()[:2] == ("noise", "skimage-photos")


def test_a_registered_toy_source_is_made_at_the_requested_size_mode_and_seed(toy_source, tmp_path):
    stripes = load_ood_data(toy_source, image_size=(7, 6), mode="RGB", num_images=4, seed=3)
    assert len(stripes) == 4 and {(im.size, im.mode) for im in stripes["image"]} == {((7, 6), "RGB")}
    pixels = np.asarray(stripes[0]["image"])
    assert set(np.unique(pixels)) == {0, 255} and (pixels == pixels[:, :1]).all()  # stripes: rows of one value
    again = load_ood_data(toy_source, image_size=(7, 6), mode="RGB", num_images=4, seed=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(stripes["image"], again["image"]))
    unregister_ood_source(toy_source)  # no longer a named source: read as a dataset, which does not exist
    with pytest.raises(DatasetError, match="Could not load dataset 'toy-stripes'"):
        load_ood_data(toy_source)


def test_a_registered_toy_source_runs_through_hubtune_ood(toy_source, hubtune_model, tmp_path, capsys):
    assert f"{toy_source} (horizontal stripes)" in " ".join(ood_command.build_parser().format_help().split())
    model_dir = tmp_path / "model"
    hubtune_model.save_pretrained(model_dir)
    data_dir = _saved_dataset(tmp_path / "data", 12, 9, seed=6)
    assert _ood_cli(["--model", str(model_dir), "--dataset", data_dir, "--ood_dataset", toy_source, "noise",
                     "--score", "msp", "--output_dir", str(tmp_path / "ood")]) == 0
    entries = {e["ood_dataset"]: e for e in json.loads((tmp_path / "ood" / "ood_results.json").read_text())["entries"]}
    assert set(entries) == {toy_source, "noise"} and entries[toy_source]["num_images"] == 9  # as many as in-dist.
    assert set(entries[toy_source]["metrics"]["msp"]) == set(METRIC_NAMES)
    assert f"| {toy_source} (9) | msp |" in capsys.readouterr().out

"""The FID/KID feature-extractor registry: a toy kind registered here is built by name, used by `hubtune gan
--eval_feature_extractor` and recorded in metrics.json; the built-in kinds are entries of the same registry."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hubtune.commands import main
from hubtune.errors import FeatureExtractorError
from hubtune.gan import (
    FEATURE_EXTRACTORS,
    FeatureExtractorKind,
    build_feature_extractor,
    compute_fid_kid,
    register_feature_extractor,
    unregister_feature_extractor,
)
from hubtune.gan.metrics import NamedFeatureExtractor

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/conftest.py


def _grid_means(name: str, grid: str) -> NamedFeatureExtractor:
    """Features: the mean of each cell of a grid x grid partition of each channel (3 channels)."""
    if not grid.isdigit() or int(grid) < 1:
        raise FeatureExtractorError(f"feature extractor {name!r}: the grid after 'toy-grid:' must be a positive integer")
    size = int(grid)
    network = nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Flatten())
    return NamedFeatureExtractor(name, network, 3 * size * size, mean=(0.0,) * 3, std=(1.0,) * 3)


@pytest.fixture()
def toy_extractor():
    """A new kind of feature extractor is one function plus one registration."""
    register_feature_extractor(FeatureExtractorKind("toy-grid", "'toy-grid:<cells per side>'", _grid_means))
    yield "toy-grid"
    unregister_feature_extractor("toy-grid")
    assert "toy-grid" not in FEATURE_EXTRACTORS


def test_the_built_in_kinds_are_registry_entries():
    assert set(FEATURE_EXTRACTORS) >= {"inception", "timm", "local-dir", "timm-random", "hubtune"}


def test_a_toy_extractor_is_built_by_name_and_computes_fid(toy_extractor):
    extractor = build_feature_extractor("toy-grid:2")
    assert (extractor.name, extractor.num_features, extractor.comparable) == ("toy-grid:2", 12, True)
    images = torch.rand(8, 1, 8, 8)
    expected = torch.nn.functional.adaptive_avg_pool2d(images.expand(-1, 3, -1, -1), 2).flatten(1)
    torch.testing.assert_close(extractor(images), expected)
    real = torch.rand(40, 3, 8, 8)
    result = compute_fid_kid(real, real.clone(), "toy-grid:2", batch_size=10)
    assert result["feature_extractor"] == "toy-grid:2" and result["feature_dim"] == 12 and result["fid"] < 1e-3
    with pytest.raises(FeatureExtractorError, match=r"unknown feature extractor 'toy-grid'.*'toy-grid:<cells per side>'"):
        build_feature_extractor("toy-grid")  # its names need an argument
    with pytest.raises(FeatureExtractorError, match="must be a positive integer"):
        build_feature_extractor("toy-grid:x")


def test_a_toy_extractor_is_used_by_hubtune_gan_and_recorded_in_its_metrics(toy_extractor, tmp_path, capsys):
    out = tmp_path / "gan"
    code = main(["gan", "--max_steps", "2", "--eval_num_samples", "20", "--eval_batch_size", "10", "--output_dir",
                 str(out), "--no_progress_bar", "--eval_feature_extractor", "toy-grid:3"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["feature_extractor"] == "toy-grid:3" and metrics["feature_dim"] == 27
    assert metrics["comparable"] is True and metrics["fid"] >= 0
    unregister_feature_extractor(toy_extractor)
    with pytest.raises(FeatureExtractorError, match="unknown feature extractor 'toy-grid:3'"):
        build_feature_extractor("toy-grid:3")


def test_an_unknown_extractor_stops_hubtune_gan_before_training(tmp_path, capsys):
    out = tmp_path / "gan"
    code = main(["gan", "--max_steps", "2", "--eval_num_samples", "20", "--eval_batch_size", "10", "--output_dir",
                 str(out), "--no_progress_bar", "--eval_feature_extractor", "vgg"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "unknown feature extractor 'vgg'" in err[0]
    assert not out.exists()  # nothing trained, nothing written
    # with the metrics off the extractor is never used, so any name passes
    assert main(["gan", "--max_steps", "1", "--eval_num_samples", "0", "--output_dir", str(out), "--no_progress_bar",
                 "--eval_feature_extractor", "vgg"]) == 0

"""FID and KID through torchmetrics, with the feature extractor chosen by name.

The standard extractor, Inception-v3 with the FID weights, is downloaded at run time by every FID library;
where it cannot be had (offline machines), hubtune computes the same statistics on another named network and
records which one, so numbers are only compared between runs that used the same extractor name:

``"inception"``              torchmetrics' Inception-v3 (needs ``torch-fidelity`` and its cached weights)
``"inception:<file>"``       the standard FID Inception-v3 from a local weights file: the
                             ``pt_inception-2015-12-05-6726825d.pth`` state dict that pytorch-fid uses (built in
                             pure torch here, so neither pytorch-fid nor torch-fidelity is needed)
``"timm:<model>"``           a timm model with pretrained weights (cached, or from the Hub)
``"local-dir:<folder>"``     a timm folder with pretrained weights (``config.json`` + ``model.safetensors``), e.g.
                             the ImageNet MobileNetV2 that ``benchmarks/fetch_offline_weights.py`` builds offline
``"timm-random:<model>[:seed]"``  a timm model randomly initialised from ``seed`` (default 0): always available and
                             reproducible, but its numbers CANNOT rank generators (a random network scored every
                             generator below the real-vs-real value); for smoke tests only
``"hubtune:<folder>"``       the pooled features of a hubtune classifier (``HubtuneForImageClassification``),
                             e.g. one fine-tuned on the same data
``"auto"``                   the first that is available of: the ``HUBTUNE_FID_EXTRACTOR`` environment variable
                             (any name above), ``inception``, the offline MobileNetV2 folder at
                             ``~/.cache/hubtune/mobilenetv2_100.tv_in1k`` (``local-dir:``), and last
                             ``timm-random:resnet18:0`` with a loud warning

Each kind of name is one :class:`FeatureExtractorKind` of the registry :data:`FEATURE_EXTRACTORS` (the one registry
style, :class:`hubtune.registry.Registry`); a plug-in adds its own with :func:`register_feature_extractor`, and its
names then work wherever a name above does (``hubtune gan --eval_feature_extractor``).

Every result records the extractor's ``feature_extractor`` name and ``comparable``: ``False`` for randomly
initialised features, whose numbers must not be used to compare models.

FID/KID are never computed on a single batch: images go through the extractor in batches, and at least two
batches of real and of generated images are required.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.errors import FeatureExtractorError
from hubtune.modeling import HubtuneForImageClassification
from hubtune.registry import Registry

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FALLBACK_EXTRACTOR = "timm-random:resnet18:0"
ENV_EXTRACTOR = "HUBTUNE_FID_EXTRACTOR"
# where benchmarks/fetch_offline_weights.py builds the ImageNet MobileNetV2 timm folder
DEFAULT_PRETRAINED_FOLDER = Path.home() / ".cache" / "hubtune" / "mobilenetv2_100.tv_in1k"
RANDOM_FEATURES_WARNING = (
    "FID/KID with the randomly initialised extractor {name!r}: these numbers CANNOT compare or rank models "
    "(random features scored every generator below the real-vs-real value). Use a pretrained extractor: "
    "'inception:<pt_inception-2015-12-05-6726825d.pth>', 'local-dir:<timm folder>' (see "
    "benchmarks/fetch_offline_weights.py) or 'timm:<model>', or set " + ENV_EXTRACTOR + "."
)

__all__ = ["FEATURE_EXTRACTORS", "FeatureExtractorError", "FeatureExtractorKind", "NamedFeatureExtractor",
           "FIDInceptionV3", "build_feature_extractor", "check_feature_extractor_name", "compute_fid_kid",
           "evaluate_generator", "register_feature_extractor", "unregister_feature_extractor"]


class NamedFeatureExtractor(nn.Module):
    """Images in [0, 1] (B, C, H, W) -> features (B, D) of a named network.

    Grayscale images are repeated to 3 channels, resized to ``input_size`` when given, then normalised.
    """

    def __init__(self, name: str, network: nn.Module, num_features: int, input_size: int | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 comparable: bool = True) -> None:
        super().__init__()
        self.name, self.network, self.num_features, self.input_size = name, network, num_features, input_size
        self.comparable = comparable
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return self.network(x).flatten(1).float()


def _timm_extractor(name: str, model_name: str, pretrained: bool, seed: int = 0) -> NamedFeatureExtractor:
    import timm

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
    except Exception as err:  # download errors come in many types
        if "Unknown model" in str(err):
            raise FeatureExtractorError(f"feature extractor {name!r}: timm has no model {model_name!r}") from err
        raise FeatureExtractorError(
            f"feature extractor {name!r}: cannot load pretrained weights offline ({type(err).__name__}: {err}); "
            f"use 'timm-random:{model_name}' or 'hubtune:<classifier folder>'"
        ) from err
    return NamedFeatureExtractor(name, network.eval(), network.num_features, comparable=pretrained)


def _local_dir_extractor(name: str, folder: str) -> NamedFeatureExtractor:
    """A timm folder (``config.json`` + weights) with pretrained weights, at its own input size and normalisation."""
    import timm

    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise FeatureExtractorError(
            f"feature extractor {name!r}: {path} is not a timm folder (no config.json); build the offline ImageNet "
            "MobileNetV2 one with benchmarks/fetch_offline_weights.py"
        )
    try:
        network = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
    except Exception as err:  # timm raises many types for a broken folder
        raise FeatureExtractorError(f"feature extractor {name!r}: cannot load the timm folder {path} "
                                    f"({type(err).__name__}: {err})") from err
    cfg = timm.data.resolve_data_config({}, model=network)
    return NamedFeatureExtractor(name, network.eval(), network.num_features, int(cfg["input_size"][-1]),
                                 tuple(cfg["mean"]), tuple(cfg["std"]))


def _hubtune_extractor(name: str, folder: str) -> NamedFeatureExtractor:
    try:
        model = HubtuneForImageClassification.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise FeatureExtractorError(f"feature extractor {name!r}: cannot load a hubtune classifier from {folder}: {err}") from err
    model.eval()
    prep = model.preprocessing

    class _Pooled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_features(x)

    channels = prep.input_size[0]
    return NamedFeatureExtractor(name, _Pooled(model), model.backbone.num_features, prep.input_size[1],
                                 tuple(prep.mean)[:channels] if channels == 3 else IMAGENET_MEAN,
                                 tuple(prep.std)[:channels] if channels == 3 else IMAGENET_STD)


class _InceptionExtractor(nn.Module):
    def __init__(self):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.name, self.num_features = "inception", 2048
        self.network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.network((x * 255).round().to(torch.uint8)).flatten(1).float()


def _fid_inception_blocks():
    """torchvision's Inception-v3 patched into the TensorFlow FID graph (as pytorch-fid builds it).

    The FID network differs from torchvision's in its pooling only: average pools that ignore the zero padding in
    the A, C and first E blocks, and a max pool in the last E block. Parameter names are torchvision's, so the
    ``pt_inception-2015-12-05-6726825d.pth`` state dict loads strictly.
    """
    from torchvision.models import inception as tvi

    def avg_pool(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class BlockA(tvi.InceptionA):
        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool(x))], 1)

    class BlockC(tvi.InceptionC):
        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                bd = layer(bd)
            return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg_pool(x))], 1)

    class BlockE(tvi.InceptionE):
        max_pool = False

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else avg_pool(x)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

    class BlockEMax(BlockE):
        max_pool = True

    net = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
    net.Mixed_6b, net.Mixed_6c = BlockC(768, channels_7x7=128), BlockC(768, channels_7x7=160)
    net.Mixed_6d, net.Mixed_6e = BlockC(768, channels_7x7=160), BlockC(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = BlockE(1280), BlockEMax(2048)
    return net


class FIDInceptionV3(nn.Module):
    """The standard FID Inception-v3 (2048-d pool features), pure torch, weights from a local file.

    Images in [0, 1] are resized to 299 x 299 (bilinear) and scaled to [-1, 1], as pytorch-fid does. ``state_dict``
    keys are torchvision's Inception-v3 keys with a 1008-way ``fc`` and no auxiliary head, i.e. the layout of
    ``pt_inception-2015-12-05-6726825d.pth``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = _fid_inception_blocks()
        self.num_features = 2048

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "FIDInceptionV3":
        model = cls()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # missing file, not a torch file, pickled objects refused by weights_only
            raise FeatureExtractorError(f"cannot read the FID Inception weights {path} ({type(err).__name__}: {err})") from err
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise FeatureExtractorError(f"{path} does not hold a state dict")
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        expected = {k for k in model.net.state_dict() if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise FeatureExtractorError(
                f"{path} is not the FID Inception-v3 state dict (pt_inception-2015-12-05-6726825d.pth): "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        try:
            model.net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise FeatureExtractorError(f"{path}: the FID Inception weights do not fit ({err})") from err
        return model.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        n = self.net
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = F.max_pool2d(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))), kernel_size=3, stride=2)
        x = F.max_pool2d(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _inception_file_extractor(name: str, path: str) -> nn.Module:
    if not Path(path).expanduser().is_file():
        raise FeatureExtractorError(f"feature extractor {name!r}: no such file {path} (the FID Inception weights, "
                                    "pt_inception-2015-12-05-6726825d.pth)")
    model = FIDInceptionV3.from_file(Path(path).expanduser())
    model.name, model.comparable = "inception", True  # the standard FID network, whatever the file is called
    return model


def _auto_candidates() -> list[str]:
    names = []
    if os.environ.get(ENV_EXTRACTOR):
        names.append(os.environ[ENV_EXTRACTOR])
    names.append("inception")
    if (Path(DEFAULT_PRETRAINED_FOLDER) / "config.json").is_file():
        names.append(f"local-dir:{DEFAULT_PRETRAINED_FOLDER}")
    return names


# --------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class FeatureExtractorKind:
    """A kind of named FID/KID feature extractor, whose names are ``"<name>"`` or ``"<name>:<argument>"``.

    Attributes:
        name: the kind, the part of an extractor name before its first ``:``.
        usage: how its names look, for messages (``"'timm:<model>'"``).
        build: ``build(full_name, argument)`` -> a module mapping images in [0, 1] (B, C, H, W) to features (B, D),
            with ``name`` (recorded in the metrics), ``num_features`` and, for features that cannot rank models (random
            weights), ``comparable = False``; ``argument`` is ``""`` when the name has none.
        needs_argument: whether a name of this kind must have an argument.
    """

    name: str
    usage: str
    build: Callable[[str, str], nn.Module]
    needs_argument: bool = True


def _check_kind(kind: FeatureExtractorKind) -> None:
    if not isinstance(kind, FeatureExtractorKind):
        raise FeatureExtractorError(f"{kind!r} must be a FeatureExtractorKind to be registered as a feature extractor.")
    if ":" in kind.name or kind.name == "auto":
        raise FeatureExtractorError(f"a feature extractor kind cannot be named {kind.name!r} (no ':', not 'auto').")


FEATURE_EXTRACTORS: Registry[FeatureExtractorKind] = Registry("feature extractor", FeatureExtractorError, _check_kind)


def register_feature_extractor(kind: FeatureExtractorKind) -> FeatureExtractorKind:
    """Make the names ``kind.name[:argument]`` available to :func:`build_feature_extractor` and
    ``hubtune gan --eval_feature_extractor``."""
    return FEATURE_EXTRACTORS.register(kind)


def unregister_feature_extractor(name: str) -> None:
    """Remove a registered kind (for tests and plug-ins)."""
    FEATURE_EXTRACTORS.unregister(name)


def _inception(name: str, path: str) -> nn.Module:
    if path:
        return _inception_file_extractor(name, path)
    try:
        return _InceptionExtractor()
    except Exception as err:  # ModuleNotFoundError (torch-fidelity) or a failed weight download
        raise FeatureExtractorError(
            f"the Inception FID extractor is unavailable here ({type(err).__name__}: {err}); "
            f"choose another, e.g. {FALLBACK_EXTRACTOR!r} or 'hubtune:<classifier folder>'"
        ) from err


def _timm_random(name: str, argument: str) -> NamedFeatureExtractor:
    model_name, _, seed = argument.partition(":")
    if seed and not seed.isdigit():
        raise FeatureExtractorError(f"feature extractor {name!r}: the seed after the model name must be an integer")
    return _timm_extractor(name if seed else f"{name}:0", model_name, pretrained=False, seed=int(seed or 0))


for _kind in (
    FeatureExtractorKind("inception", "'inception', 'inception:<weights file>'", _inception, needs_argument=False),
    FeatureExtractorKind("timm", "'timm:<model>'", lambda name, model: _timm_extractor(name, model, pretrained=True)),
    FeatureExtractorKind("local-dir", "'local-dir:<timm folder>'", _local_dir_extractor),
    FeatureExtractorKind("timm-random", "'timm-random:<model>[:seed]'", _timm_random),
    FeatureExtractorKind("hubtune", "'hubtune:<folder>'", _hubtune_extractor),
):
    register_feature_extractor(_kind)


def _unknown(name: str) -> FeatureExtractorError:
    usages = ["'auto'", *(kind.usage for kind in FEATURE_EXTRACTORS.values())]
    return FeatureExtractorError(f"unknown feature extractor {name!r}: use {', '.join(usages[:-1])} or {usages[-1]}")


def build_feature_extractor(name: str = "auto") -> nn.Module:
    """Resolve a feature-extractor name (see the module docstring; the kinds are :data:`FEATURE_EXTRACTORS`); the
    result has ``name`` and ``num_features``."""
    if name == "auto":
        for candidate in _auto_candidates():
            try:
                return build_feature_extractor(candidate)
            except FeatureExtractorError as err:
                logger.info("FID: %s", err)
        # one warning (not also a log record: both print, so the message appeared twice)
        warnings.warn(RANDOM_FEATURES_WARNING.format(name=FALLBACK_EXTRACTOR), stacklevel=2)
        return build_feature_extractor(FALLBACK_EXTRACTOR)
    check_feature_extractor_name(name)
    kind, _, argument = name.partition(":")
    return FEATURE_EXTRACTORS.get(kind).build(name, argument)


def check_feature_extractor_name(name: str) -> None:
    """Refuse a name that is not 'auto' or a registered kind (with its argument where the kind needs one), without
    building anything: ``hubtune gan`` checks its --eval_feature_extractor before training, not at the end."""
    if name == "auto":
        return
    kind, _, argument = name.partition(":")
    if kind not in FEATURE_EXTRACTORS or (FEATURE_EXTRACTORS.get(kind).needs_argument and not argument):
        raise _unknown(name)


def _batches(images: Tensor, batch_size: int):
    for start in range(0, images.shape[0], batch_size):
        yield images[start: start + batch_size]


def compute_fid_kid(
    real_images: Tensor,
    fake_images: Tensor,
    feature_extractor: str | nn.Module = "auto",
    batch_size: int = 250,
    kid_subset_size: int = 1000,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """FID and KID between two image sets (float in [0, 1], (N, C, H, W)), with the named extractor.

    Returns a dict with ``fid``, ``kid_mean``, ``kid_std``, ``feature_extractor`` (its name), ``comparable``
    (False for randomly initialised features: such numbers cannot compare models), ``feature_dim``, ``num_real``,
    ``num_fake``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for what, images in (("real", real_images), ("generated", fake_images)):
        if images.shape[0] < 2 * batch_size:
            raise ValueError(
                f"{images.shape[0]} {what} images is less than two batches of {batch_size}: FID/KID are never computed "
                "on a single batch; use more images or a smaller batch_size"
            )
    extractor = build_feature_extractor(feature_extractor) if isinstance(feature_extractor, str) else feature_extractor
    comparable = bool(getattr(extractor, "comparable", True))
    if not comparable and not (isinstance(feature_extractor, str) and feature_extractor == "auto"):  # auto warned
        warnings.warn(RANDOM_FEATURES_WARNING.format(name=getattr(extractor, "name", "?")), stacklevel=2)
    device = torch.device(device) if device is not None else torch.device("cpu")
    extractor = extractor.to(device).eval()
    # KID averages an unbiased MMD over random subsets; half the smaller set keeps the subsets different
    subset = min(kid_subset_size, real_images.shape[0] // 2, fake_images.shape[0] // 2)
    # the features are computed once and fed to both metrics through an identity "extractor"
    fid = FrechetInceptionDistance(feature=_Precomputed(extractor.num_features), normalize=True,
                                   sync_on_compute=False).to(device)
    with warnings.catch_warnings():  # "KID will save all extracted features": expected, they are few
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(extractor.num_features), subset_size=subset, normalize=True,
                                      sync_on_compute=False).to(device)
    fid.set_dtype(torch.float64)
    for images, real in ((real_images, True), (fake_images, False)):
        for batch in _batches(images, batch_size):
            feats = extractor(batch.to(device)).float()
            fid.update(feats.double(), real=real)
            kid.update(feats, real=real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # KID's subsets are random: keep them reproducible and the caller's RNG untouched
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "feature_extractor": getattr(extractor, "name", type(extractor).__name__),
        "comparable": comparable,
        "feature_dim": int(extractor.num_features),
        "num_real": int(real_images.shape[0]),
        "num_fake": int(fake_images.shape[0]),
    }


class _Precomputed(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def evaluate_generator(generator, dataset, num_samples: int = 1000, feature_extractor: str = "auto",
                       batch_size: int = 250, seed: int = 0) -> dict[str, Any]:
    """FID/KID of ``generator`` (eval mode, latents from ``seed``) against up to ``num_samples`` real images."""
    num_real = min(num_samples, len(dataset))
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:num_real]
    real = (dataset.batch(indices) + 1) / 2
    fake = generator.generate(num_samples, seed=seed + 1, batch_size=batch_size)
    device = next(generator.parameters()).device
    result = compute_fid_kid(real, fake, feature_extractor, batch_size=batch_size, device=device)
    result["generator_seed"] = seed + 1
    return result

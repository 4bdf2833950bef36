"""DELTA as a registered method, in its reference form: a frozen copy of the starting backbone, channel attention
computed once before training from filter importance on the pre-trained model, the attention-weighted feature-map
penalty on several layers, and the card section.

The maths is :mod:`hubtune.losses.delta` (see docs/methods.md, section 7); this module measures the importance
(:func:`linear_probe`, :func:`channel_importance`) and wires the layers' outputs to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hubtune.distributed import get_world_size, is_distributed
from hubtune.errors import ConfigError, HubtuneError, MethodError
from hubtune.losses.delta import DeltaLoss, attention_from_importance, channels_first
from hubtune.methods.base import (
    TLLIB_FINE_TUNING_RECIPE,
    FrozenCopy,
    MethodConfig,
    MethodOutput,
    TrainingMethod,
    detach_components,
    parameter_names_under,
    warn_if_not_pretrained,
)
from hubtune.methods.registry import register_method

__all__ = ["DeltaConfig", "DeltaMethod", "ChannelAttention", "linear_probe", "channel_importance"]

CITATION = (
    "@inproceedings{li2019delta,\n"
    "  title     = {{DELTA}: {DE}ep Learning Transfer using Feature Map with Attention for Convolutional Networks},\n"
    "  author    = {Li, Xingjian and Xiong, Haoyi and Wang, Hanchao and Rao, Yuxuan and Liu, Liping and Chen, Zeyu and Huan, Jun},\n"
    "  booktitle = {International Conference on Learning Representations (ICLR)},\n"
    "  year      = {2019},\n"
    "  eprint    = {1901.09229},\n"
    "  archivePrefix = {arXiv}\n"
    "}"
)

# The linear probe whose loss the importance is measured with: the authors' channel_eval.py:102-111 (lixingjian/DELTA
# 6ba10d2) trains only the new fc layer of the pre-trained model (:103-105 freeze the rest) with SGD at lr 0.01
# (``--lr_init`` default, channel_eval.py:29; run.sh:7 passes 0.01), momentum 0.9 and weight decay 1e-4 (:107-108),
# for 10 epochs (:109; ``attention_epochs``), the rate decaying exponentially to 0.1x over 6 epochs (:110-111).
# Deliberate differences: the authors train the probe with the network in train mode (:119: BatchNorm normalises
# with batch statistics and updates its running statistics, which the importance pass at :176 then uses in eval
# mode) on training-transform batches (random crops and flips, :45-50, :65-66), batch 32 (run.sh:7); hubtune trains
# it on the frozen starting model's pooled features in eval mode, of the training images under the evaluation
# transform, in batches of the preparation loader's size. Not measured against the authors' way. (tllib's
# delta.py:160 sets ``classifier.backbone.requires_grad = False``, a plain attribute that freezes nothing, so its
# "probe" fine-tunes the whole network; hubtune follows the authors there.)
PROBE_LEARNING_RATE = 0.01
PROBE_MOMENTUM = 0.9
PROBE_WEIGHT_DECAY = 1e-4
PROBE_DECAY_EPOCHS = 6
# Copies of a batch pushed through the network at once while measuring importances (one zeroed channel per copy).
_IMPORTANCE_ROWS = 256


@dataclass
class DeltaConfig(MethodConfig):
    """DELTA's knobs.

    Args:
        alpha: weight of the attention-weighted feature-map distance; 0.01 is the DELTA authors' default
            (lixingjian/DELTA train.py:34; run.sh:15-18 uses it for Caltech60 and CUB_200_2011, 0.1 for
            Stanford_Dogs) and tllib's ``--trade-off-backbone`` (examples/task_adaptation/image_classification/
            delta.py:326).
        beta: weight of ``||w||^2 / 2`` over the new classifier's parameters; 0.01: DELTA train.py:35, tllib
            delta.py:328.
        layers: the regularised layers, comma-separated names of the backbone's feature levels (timm's
            ``feature_info`` modules, read with ``forward_intermediates``; transformers' blocks, read from
            ``hidden_states``), e.g. ``layer1,layer2,layer3,layer4`` for a ResNet; empty (the default): the last level
            of each of the backbone's last four resolutions (a ResNet's four stages; four evenly spaced blocks of a
            ViT), see ``BackboneLibrary.feature_map_modules``. The model's config records the names. The authors
            hook the last conv of each stage's last block, before its BatchNorm and the residual sum (train.py:128-129,
            ``layer1.2.conv3, ...``; tllib delta.py:88-93 the same); hubtune reads each stage's output, which every
            library returns: a stated difference, not measured against the conv3 outputs.
        attention_epochs: epochs of the linear probe trained on the frozen pre-trained features before the
            importances are measured; 10: DELTA channel_eval.py:109 (tllib delta.py:364).
        attention_batches: training batches (per process) over which each channel's importance is averaged; 4:
            DELTA channel_eval.py:179-180 (``if i >= 4: break``; tllib uses 10, delta.py:368).
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    alpha: float = 0.01
    beta: float = 0.01
    layers: str = ""
    attention_epochs: int = 10
    attention_batches: int = 4

    def validate(self) -> None:
        if not self.alpha >= 0:
            raise ConfigError(f"alpha (the feature-map distance weight) must be >= 0, got {self.alpha}.")
        if not self.beta >= 0:
            raise ConfigError(f"beta (the weight of the new head's L2 penalty) must be >= 0, got {self.beta}.")
        for name in ("attention_epochs", "attention_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.layers, str):
            raise ConfigError(f"layers must be comma-separated module names (a string), got {self.layers!r}.")

    def layer_names(self) -> list[str]:
        return [name.strip() for name in self.layers.split(",") if name.strip()]


class ChannelAttention(nn.Module):
    """One attention vector per regularised layer (buffers ``attention_<j>``, saved with checkpoints) and ``ready``,
    which says they were computed; ``prepared`` (Python) that this process checked it."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        for j, c in enumerate(channels):
            self.register_buffer(f"attention_{j}", torch.full((int(c),), 1.0 / int(c)))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.count = len(channels)
        self.prepared = False

    def weights(self) -> list[Tensor]:
        return [getattr(self, f"attention_{j}") for j in range(self.count)]


def _first_tensor(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _zero_one_channel_per_copy(output: Any, channels: Sequence[int]) -> Any:
    """Copy k of a batch repeated ``len(channels)`` times gets channel ``channels[k]`` zeroed (conv maps: axis 1;
    token maps: the last axis)."""
    tensor = _first_tensor(output)
    copies = len(channels)
    shape = tensor.shape
    view = tensor.reshape(copies, shape[0] // copies, *shape[1:])
    mask = torch.ones_like(view)
    index = torch.arange(copies, device=tensor.device)
    wanted = torch.as_tensor(list(channels), device=tensor.device)
    if tensor.ndim == 4:
        mask[index, :, wanted] = 0
    else:
        mask[index, ..., wanted] = 0
    zeroed = (view * mask).reshape(shape)
    return (zeroed, *output[1:]) if isinstance(output, tuple) else zeroed


@torch.no_grad()
def channel_importance(pooled: Callable[[nn.Module, Tensor], Tensor], head: nn.Module, network: nn.Module,
                       layers: Sequence[str], channels: Sequence[int],
                       batches: Iterable[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Per layer (a module name inside ``network`` with ``channels[j]`` output channels), each channel's mean (over
    ``batches``) increase of the cross-entropy ``CE(head(pooled(network, x)), y)`` when that channel of the layer's
    output is zeroed (DELTA channel_eval.py:168-208; a forward hook here, outside any compiled graph)."""
    sums = [torch.zeros(int(c), dtype=torch.float64) for c in channels]
    seen = 0
    for x, y in batches:
        base = F.cross_entropy(head(pooled(network, x)).double(), y)
        for j, name in enumerate(layers):
            step = max(1, _IMPORTANCE_ROWS // x.shape[0])
            for start in range(0, sums[j].numel(), step):
                chosen = list(range(start, min(start + step, sums[j].numel())))
                hook = network.get_submodule(name).register_forward_hook(
                    lambda module, inputs, output, chosen=chosen: _zero_one_channel_per_copy(output, chosen))
                try:
                    logits = head(pooled(network, x.repeat(len(chosen), *([1] * (x.ndim - 1))))).double()
                finally:
                    hook.remove()
                losses = F.cross_entropy(logits, y.repeat(len(chosen)), reduction="none").view(len(chosen), -1)
                sums[j][start:start + len(chosen)] += (losses.mean(dim=1) - base).cpu()
        seen += 1
    if not seen:
        raise MethodError("DELTA's channel attention needs training batches with 'labels'; got none.")
    return [s / seen for s in sums]


def linear_probe(features: Tensor, labels: Tensor, num_classes: int, epochs: int, batch_size: int) -> nn.Linear:
    """A linear classifier trained on frozen features (DELTA channel_eval.py:102-166: SGD lr 0.01, momentum 0.9,
    weight decay 1e-4, the rate x0.1 over 6 epochs), seeded on its own so that it draws nothing from the global
    random state (the runs of ``hubtune compare`` stay paired)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        probe = nn.Linear(features.shape[1], num_classes).to(features.device)
        order = torch.Generator().manual_seed(0)
        optimizer = torch.optim.SGD(probe.parameters(), lr=PROBE_LEARNING_RATE, momentum=PROBE_MOMENTUM,
                                    weight_decay=PROBE_WEIGHT_DECAY)
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=math.exp(math.log(0.1) / PROBE_DECAY_EPOCHS))
        with torch.enable_grad():
            for _ in range(epochs):
                for rows in torch.randperm(len(labels), generator=order).split(batch_size):
                    rows = rows.to(features.device)
                    loss = F.cross_entropy(probe(features[rows]), labels[rows])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                decay.step()
    return probe.requires_grad_(False).eval()


def _gather_rows(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every process's feature rows and labels, on every process (the probe then trains on all of them)."""
    if not is_distributed():
        return features, labels
    parts: list[Any] = [None] * get_world_size()
    torch.distributed.all_gather_object(parts, (features.cpu(), labels.cpu()))
    return (torch.cat([f for f, _ in parts]).to(features.device), torch.cat([y for _, y in parts]).to(labels.device))


@register_method
class DeltaMethod(TrainingMethod):
    """Cross-entropy plus an attention-weighted pull of several layers' feature maps towards the starting model's."""

    name = "delta"
    config_class = DeltaConfig
    title = "DELTA"
    description = (
        "DELTA fine-tunes with cross-entropy plus a penalty that keeps the feature maps of several layers of the "
        "backbone close to the ones the starting (pre-trained) backbone computes on the same images. Each channel's "
        "distance is weighted by an attention computed once before fine-tuning: how much the loss of a linear "
        "classifier trained on the pre-trained features grows when the channel is zeroed, so discriminative "
        "channels are held and the others may change. The new classifier gets a plain L2 penalty. The frozen copy "
        "of the starting backbone is used for training only and is not part of the exported classifier."
    )
    citation = CITATION
    tags = ("delta",)
    # tllib's fine-tuning recipe (methods.base.TLLIB_FINE_TUNING_RECIPE: SGD Nesterov 0.9, lr 0.01, backbone at 0.1x)
    # with NO weight decay: tllib delta.py:340 (``--wd`` default 0) and DELTA train.py:268-270 (SGD without weight
    # decay for every regulariser but plain L2, :265-267). The authors' own script trains every layer at lr 0.01
    # (train.py:31) with plain momentum 0.9 (:269-270) and, in run.sh:19 (``--lr_scheduler=explr``), an exponential
    # decay by 0.1x per 0.67 of the training (train.py:272-279), batch 64 for 6,000 iterations (run.sh:19);
    # hubtune follows tllib there, so that the four baselines share one recipe and the comparison with CE under that
    # recipe (`--method ce --recipe bss`) is like for like. Not measured against the authors' recipe.
    recipe = {**TLLIB_FINE_TUNING_RECIPE, "weight_decay": 0.0}
    recipe_source = ("DELTA as tllib trains it (thuml/Transfer-Learning-Library examples/task_adaptation/"
                     "image_classification/delta.py, --finetune): SGD Nesterov 0.9, lr 0.01, backbone 0.1x, no weight "
                     "decay; the penalty and attention of lixingjian/DELTA train.py and channel_eval.py")

    def setup(self, model: nn.Module) -> dict[str, nn.Module]:
        if not isinstance(model.classifier, nn.Linear):
            raise MethodError("DELTA's head penalty needs a linear classifier; drop classifier_type="
                              f"{model.config.classifier_type!r}.")
        warn_if_not_pretrained(model, "DELTA", "the starting backbone's feature maps")
        backbone = model.backbone
        library = backbone.library_entry  # the backbone's library reads its feature maps
        try:
            levels = [name for name, _ in library.feature_levels(backbone)]
            layers = self.config.layer_names() or library.feature_map_modules(backbone)
            library.level_indices(backbone, layers)
        except HubtuneError as e:
            raise MethodError(f"DELTA layers: {e}") from None
        layers = sorted(layers, key=levels.index)  # the library returns its feature maps in depth order
        self.config.layers = ",".join(layers)
        return {"start_backbone": FrozenCopy(backbone.model),
                "delta_attention": ChannelAttention(self._channels(backbone, layers))}

    @staticmethod
    @torch.no_grad()
    def _channels(backbone: nn.Module, layers: Sequence[str]) -> list[int]:
        was_training = backbone.model.training
        backbone.model.eval()
        try:
            _, maps = backbone.library_entry.pooled_and_maps(
                backbone, backbone.model, torch.zeros(1, *backbone.preprocessing.input_size), layers)
        finally:
            backbone.model.train(was_training)
        return [channels_first(m).shape[1] for m in maps]

    @torch.no_grad()
    def prepare(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        """The channel attention from filter importance on the pre-trained model (the frozen start, in eval mode):
        pooled features of the training images (under the evaluation transform), a linear probe trained on them,
        then each channel's mean loss increase when zeroed over the first ``attention_batches`` batches; nothing
        when a resumed checkpoint holds it."""
        attention: ChannelAttention = model.delta_attention
        if attention.prepared:
            return
        if not bool(attention.ready):
            importances = self._importances(model, batches)
            for j, importance in enumerate(importances):
                getattr(attention, f"attention_{j}").copy_(attention_from_importance(importance))
            attention.ready.fill_(True)
        attention.prepared = True

    def _importances(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> list[Tensor]:
        library, start = model.backbone.library_entry, model.start_backbone.module
        device = model.delta_attention.ready.device
        features, labels, kept, batch_size = [], [], [], 1
        for batch in batches:
            x, y = batch["pixel_values"].to(device), batch["labels"].to(device)
            features.append(library.pooled(start, x).float())
            labels.append(y)
            batch_size = max(batch_size, len(y))
            if len(kept) < self.config.attention_batches:
                kept.append((x, y))
        if not labels:
            raise MethodError("DELTA's channel attention needs training batches with 'labels'; got none.")
        all_features, all_labels = _gather_rows(torch.cat(features), torch.cat(labels))
        probe = linear_probe(all_features, all_labels, model.config.num_labels, self.config.attention_epochs,
                             batch_size)
        channels = [a.numel() for a in model.delta_attention.weights()]
        importances = channel_importance(library.pooled, probe, start, self.config.layer_names(), channels, kept)
        if is_distributed():  # each process measured its own batches: their mean
            stacked = torch.cat(importances).to(device)
            torch.distributed.all_reduce(stacked)
            importances = list((stacked.cpu() / get_world_size()).split([len(i) for i in importances]))
        return importances

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        return parameter_names_under(model, ("classifier.",))

    def build_loss(self) -> DeltaLoss:
        return DeltaLoss(alpha=self.config.alpha, beta=self.config.beta)

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        attention: ChannelAttention = model.delta_attention
        if not attention.prepared:
            raise MethodError(
                "DELTA's channel attention is not computed yet: call model.method.prepare(model, loader) with the "
                "training images before training (HubtuneTrainer does it)."
            )
        backbone, layers = model.backbone, self.config.layer_names()
        library = backbone.library_entry
        pooled, maps = library.pooled_and_maps(backbone, backbone.model, pixel_values, layers)
        with torch.no_grad():
            _, start_maps = library.pooled_and_maps(backbone, model.start_backbone.module, pixel_values, layers)
        features = model.classifier_input(pooled)
        logits = model.classifier(features)
        loss, ce, feature_term, head_term = model.loss_fn(
            logits, labels, [channels_first(m) for m in maps], [channels_first(m) for m in start_maps],
            attention.weights(), [p for p in model.classifier.parameters() if p.requires_grad],
        )
        components = detach_components(ce_loss=ce, feature_map_loss=feature_term, head_l2_loss=head_term)
        return MethodOutput(loss=loss, logits=logits, features=features, components=components)

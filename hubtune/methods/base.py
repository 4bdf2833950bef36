"""What every training method is: a typed config, a training recipe, training-only heads, a loss, logged parts and a
card section; optionally hooks on the created model (``setup``), on the training data before the first step
(``prepare``) and on which parameters the Trainer's weight decay leaves alone (``no_weight_decay``).

A method is one :class:`TrainingMethod` subclass registered under a name (see :mod:`hubtune.methods`). The
model, the Trainer, the callbacks, the command line and the model card ask the method; none of them
compares method names. To add a method, subclass :class:`MethodConfig` and :class:`TrainingMethod` and
decorate the latter with :func:`hubtune.methods.register_method`.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from hubtune.arguments import check_file_values
from hubtune.errors import MethodError

__all__ = ["MethodConfig", "MethodOutput", "TrainingMethod", "FrozenCopy", "SGD_FINE_TUNING_RECIPE",
           "TLLIB_FINE_TUNING_RECIPE"]

# Citations below name a file and line of the authors' public code at the commit read: Vanint/Core-tuning f70e1bf,
# thuml/Transfer-Learning-Library (tllib) c4aa59e, lixingjian/DELTA 6ba10d2, WentianZhang-ML/AdaptiveMix 163e5d5.
# docs/methods.md, section 3, tabulates every recipe value with its source.

# The fine-tuning recipe of the Core-tuning paper's public script, which hubtune's cross-entropy baseline shares so
# that CE and Core-tuning differ in the loss only (the script itself has no CE-only mode; its README reports
# CE-tuning beside Core-tuning, README.md:51-54) (Vanint/Core-tuning, Core-tuning.py:339-340: ``optim.SGD(model.parameters(), lr,
# momentum, weight_decay, nesterov=True)`` and ``CosineAnnealingLR(optimizer, args.epochs)``, stepped once per epoch
# at :389; defaults lr 0.01 at :61, momentum 0.9 at :68, weight decay 1e-4 at :70, 100 epochs at :53; no warm-up
# and no gradient clipping anywhere in the script). Deliberate differences:
# - the script decays every parameter (``model.parameters()``, :339); hubtune leaves biases and normalisation
#   parameters out (``filter_bias_and_bn=True``, timm's and the Trainer's convention). Not measured: every Evidence
#   run so far used hubtune's rule, none the script's.
# - the cosine runs over the user's optimizer steps (per step, not per epoch), and the batch is the user's (the
#   script's README.md:35 trains with 64 x 4 accumulation steps = 256).
# - no clipping, as in the script, against the Trainer's default max_grad_norm=1.0: that default shrinks every
#   few-label fine-tuning step about tenfold (gradient norms of 8-11) and hid the difference between methods
#   (measured: README, Evidence, "Gradient clipping at 1.0"; benchmarks/results/compare/{digits,animals}-k10-clip1/).
SGD_FINE_TUNING_RECIPE: dict[str, Any] = {
    "optim": "sgd",
    "optim_args": "momentum=0.9,nesterov=True",
    "learning_rate": 0.01,
    "lr_scheduler_type": "cosine",
    "weight_decay": 1e-4,
    "warmup_steps": 0,
    "max_grad_norm": 0.0,
}

# tllib's fine-tuning recipe, shared by its L2-SP, BSS, DELTA and Co-Tuning scripts and by its plain fine-tuning
# baseline (examples/task_adaptation/image_classification/erm.py; the files below are in that folder):
# - SGD with Nesterov momentum 0.9: erm.py:66-67 (``SGD(classifier.get_parameters(args.lr), ..., nesterov=True)``),
#   bss.py:68, co_tuning.py:96, delta.py:76; momentum default 0.9 at erm.py:183 (bss.py:188, co_tuning.py:221,
#   delta.py:338);
# - learning rate 0.01: the default of erm.py:179, bss.py:184, co_tuning.py:217, delta.py:334; 21 of the 34 commands
#   of each of erm.sh, bss.sh, co_tuning.sh and delta.sh run at 0.01 (12 by default, 9 with ``--lr 1e-2``), the
#   Caltech101 one at 1e-3, and the 12 MoCo-pretrained ones at 0.1 (with ``-i 2000 --lr-decay-epochs 3 6 9 --epochs
#   12``);
# - the pre-trained backbone at 0.1x that rate: every one of the 34 commands of each of those four .sh files passes
#   ``--finetune``, which tllib/modules/classifier.py:93 (``get_parameters``) turns into ``lr = 0.1 * base_lr`` for
#   the backbone (the new head, :95, at 1x);
# - weight decay 5e-4 on every parameter: erm.py:185, bss.py:190, co_tuning.py:223 (``SGD(params,
#   weight_decay=args.wd)`` decays biases and BatchNorm too: ``filter_bias_and_bn=False`` here);
# - no warm-up and no clipping (neither appears in the scripts).
# Deliberate differences, the same for every method so that only the regulariser and its reference rates differ:
# a cosine schedule over the user's steps instead of tllib's step decay (``MultiStepLR``, erm.py:68: x0.1 (:181) at
# epoch 12 (:182) of 20 (:189)), since the training length is the user's; no fixed iterations per epoch (tllib: 500,
# erm.py:191, drawn from a ForeverDataIterator) and the user's batch size (tllib: 48, erm.py:175). Not measured:
# cosine against tllib's step decay.
TLLIB_FINE_TUNING_RECIPE: dict[str, Any] = {
    "optim": "sgd",
    "optim_args": "momentum=0.9,nesterov=True",
    "learning_rate": 0.01,
    "lr_multipliers": "backbone=0.1",
    "lr_scheduler_type": "cosine",
    "weight_decay": 5e-4,
    "filter_bias_and_bn": False,
    "warmup_steps": 0,
    "max_grad_norm": 0.0,
}


@dataclass
class MethodConfig:
    """Base of a method's typed knobs: dataclass fields with defaults, plus ``preset``.

    ``PRESETS`` names the presets a method offers ("paper" is the method as published; "reference"
    follows the public script). Subclasses check their values in :meth:`validate` and raise
    :class:`~hubtune.errors.ConfigError` (or a subclass) with what to do.
    """

    PRESETS: ClassVar[tuple[str, ...]] = ("paper",)
    preset: str = "paper"

    def __post_init__(self) -> None:
        if self.preset not in self.PRESETS:
            raise MethodError(f"preset must be one of {self.PRESETS} for this method, not {self.preset!r}.")
        self.validate()

    def validate(self) -> None:
        """Check the knobs; raise ConfigError naming the bad one."""

    @classmethod
    def knob_names(cls) -> list[str]:
        """The method's knobs (every field but ``preset``)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "preset"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, method_name: str = "") -> "MethodConfig":
        """The config of ``values``, each checked against its field's type as a config file's values are (numbers
        from numeric strings; ``nan`` and ``inf`` refused, naming the knob), then by :meth:`validate`."""
        values = dict(values or {})
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        what = f"method {method_name!r}" if method_name else cls.__name__
        if unknown:
            raise MethodError(
                f"{', '.join(unknown)} {'is not a knob' if len(unknown) == 1 else 'are not knobs'} of {what}; "
                f"its knobs are: {', '.join(cls.knob_names()) or 'none'} (and preset)."
            )
        return cls(**check_file_values([cls], values, what, finite=True))


@dataclass
class MethodOutput:
    """What a method's training forward returns.

    loss: the scalar to back-propagate; logits: the clean images' logits (for metrics); features: the clean
    pooled features when the method computed them (else None); components: detached scalars to log.
    """

    loss: Tensor
    logits: Tensor
    features: Tensor | None
    components: dict[str, Tensor]


class TrainingMethod:
    """A registered training method, bound to one validated config.

    Class attributes (set by subclasses): ``name`` (registry key, e.g. ``"core-tuning"``), ``config_class``,
    and the card text ``title``, ``description``, ``citation`` and ``tags``. ``weight_attribute`` names the
    loss module's weight that :class:`~hubtune.training.callbacks.LossWeightWarmupCallback` may ramp, and
    ``warmup_knob`` the config field holding its warm-up ratio (None when the method has none).
    ``uses_source_classifier``: the backbone must keep its pretrained head aside for :meth:`setup` (Co-Tuning).

    ``recipe`` is the training recipe of the method's paper or public script: ``transformers.TrainingArguments``
    names (``optim``, ``optim_args``, ``learning_rate``, ``lr_scheduler_type``, ``weight_decay``,
    ``max_grad_norm``, ``warmup_steps`` ...), hubtune's optimizer options (``lr_multipliers`` per model part,
    ``filter_bias_and_bn``; :mod:`hubtune.training.param_groups`) and, where a knob's value depends on them, knob
    names, mapped to values; ``recipe_source`` says where it comes from (repository, file and line). ``hubtune finetune``, config files, ``run_finetune`` and
    ``hubtune compare`` apply it under what the user gave and over hubtune's general defaults
    (:mod:`hubtune.training.recipes`); ``HubtuneTrainer`` warns when plain ``TrainingArguments`` contradict it.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str | None] = None
    tags: ClassVar[tuple[str, ...]] = ()
    weight_attribute: ClassVar[str | None] = None
    warmup_knob: ClassVar[str | None] = None
    recipe: ClassVar[dict[str, Any]] = {}
    recipe_source: ClassVar[str] = ""
    # Whether the method needs the pretrained weights' own classifier (Backbone.source_classifier, Co-Tuning).
    uses_source_classifier: ClassVar[bool] = False
    # Training parts that hold pre-trained weights besides the backbone (Co-Tuning's source head): a recipe's
    # learning-rate multiplier for ``backbone`` applies to them too unless it names them (hubtune.training.param_groups).
    pretrained_parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig | dict[str, Any] | None = None):
        if not isinstance(config, MethodConfig):
            config = self.config_class.from_dict(config, self.name)
        elif not isinstance(config, self.config_class):
            raise MethodError(
                f"Method {self.name!r} takes a {self.config_class.__name__}, not a {type(config).__name__}."
            )
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    @classmethod
    def backbone_problem(cls, library: str | None) -> str | None:
        """Why this method cannot fine-tune a pretrained backbone of ``library`` (``"timm"``, ``"transformers"``), in
        one sentence that says what to do; None when it can. Asked before any training (``hubtune compare``) and when
        the model is built. A method that uses the source classifier needs timm: only timm backbones keep it."""
        if cls.uses_source_classifier and library not in (None, "timm"):
            return (f"{cls.title} needs a timm backbone with its ImageNet classifier; {library} backbones are not "
                    "supported yet (use a timm model, e.g. --model hf-hub:timm/resnet50.a1_in1k, or another method).")
        return None

    # ------------------------------------------------------------------------------------------ the model

    def model_defaults(self) -> dict[str, Any]:
        """Classifier settings this method's preset implies (``classifier_type``, ``classifier_bias``,
        ``normalize_features``); explicit model arguments override them."""
        return {}

    def build_training_heads(self, num_features: int) -> dict[str, nn.Module]:
        """Heads used in training only (not exported), keyed by the model attribute they become."""
        return {}

    def setup(self, model: nn.Module) -> dict[str, nn.Module]:
        """Training-only parts built from the created model, keyed by the model attribute they become.

        Called once, at the end of the model's construction, with the backbone (and its starting weights) and
        the classifier in place; :meth:`build_training_heads` sees only the feature width. L2-SP and DELTA keep
        a frozen copy of the starting backbone here, Co-Tuning the backbone's source classifier. Like the
        training heads, the parts are saved in the hubtune layout (checkpoints: an exact resume) and dropped from
        the timm / transformers layouts. A method may also resolve knobs from the model here (write them into
        ``self.config``); the model's config then records the resolved values.
        """
        return {}

    def prepare(self, model: nn.Module, batches: Iterable[dict[str, Tensor]]) -> None:
        """Work on the training data before the first step (Co-Tuning's category relationship, DELTA's channel
        attention); a no-op by default.

        ``batches`` are the training images under the EVALUATION transform (no random crops or flips), in a fixed
        order, as the references compute these quantities (tllib examples/task_adaptation/image_classification/
        co_tuning.py:36-37 and :83-84 build a ``determin_train_loader`` with ``val_transform``); in several processes each process gets its own part.
        ``HubtuneTrainer`` runs (``hubtune finetune``, ``hubtune compare``) call it at the start of training with a
        loader over ``preparation_dataset``; a hand-written loop calls ``model.method.prepare(model, loader)``.
        It must do nothing when a resumed checkpoint already holds its result.
        """

    @classmethod
    def needs_preparation(cls) -> bool:
        """Whether :meth:`prepare` does anything (the subclass overrides it)."""
        return cls.prepare is not TrainingMethod.prepare

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Names of the parameters (as ``model.named_parameters()`` gives them) that the Trainer's weight decay must
        leave alone because the method's own penalty replaces it there (L2-SP, DELTA). ``HubtuneTrainer`` honours
        it whatever ``--weight_decay`` says; a hand-written loop builds its optimizer's groups from it."""
        return set()

    def build_loss(self) -> nn.Module | None:
        """The loss module (parameter-free), or None for plain cross-entropy."""
        return None

    def forward_train(self, model: nn.Module, pixel_values: Tensor, labels: Tensor) -> MethodOutput:
        """The training loss of ``model`` (a HubtuneForImageClassification) on one batch."""
        features = model.forward_features(pixel_values)
        logits = model.classifier(features)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        return MethodOutput(loss=loss, logits=logits, features=features, components={})

    # ------------------------------------------------------------------------------------------ training

    def warmup_ratio(self) -> float:
        """Fraction of the training steps over which ``weight_attribute`` ramps up from 0 (0 = no ramp)."""
        return float(getattr(self.config, self.warmup_knob)) if self.warmup_knob else 0.0

    def logged_values(self, loss_module: nn.Module | None) -> dict[str, float]:
        """Scalars worth logging next to the loss (e.g. the current, possibly ramped, weight)."""
        if self.weight_attribute and loss_module is not None:
            return {self.weight_attribute: float(getattr(loss_module, self.weight_attribute))}
        return {}

    # ------------------------------------------------------------------------------------------ the card

    def card(self) -> dict[str, Any]:
        """The model card's method section, as plain values."""
        return {
            "title": self.title or self.name,
            "description": self.description,
            "citation": self.citation,
            "tags": list(self.tags),
        }

    def hyperparameters(self) -> dict[str, Any]:
        """The knobs to show in the card's hyper-parameter table."""
        return {k: v for k, v in self.config.to_dict().items() if k != "preset" and v is not None}


def detach_components(**values: Tensor) -> dict[str, Tensor]:
    """Detached float copies of logged loss parts."""
    return {k: v.detach().float() for k, v in values.items()}



class FrozenCopy(nn.Module):
    """A frozen copy of a module's starting state: no gradients, always in eval mode (``model.train()`` does not
    reach it, so BatchNorm keeps its pretrained statistics). ``module`` holds the copy."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenCopy":
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def warn_if_not_pretrained(model: nn.Module, method: str, what: str) -> None:
    """Warn once when a method that regularises towards the starting backbone gets randomly initialised weights."""
    spec = getattr(getattr(model, "config", None), "backbone_spec", None) or {}
    if spec.get("pretrained") is False:
        warnings.warn(
            f"{method} keeps the fine-tuned model close to the starting backbone ({what}), but this backbone is "
            "randomly initialised (pretrained=False): the penalty then pulls towards random weights. Use pretrained "
            "weights, or --method ce.",
            UserWarning, stacklevel=3,
        )


def parameter_names_under(model: nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    """Names in ``model.named_parameters()`` under ``prefixes`` (a DDP wrapper's ``module.`` prefix allowed); for
    :meth:`TrainingMethod.no_weight_decay`."""
    return {name for name, _ in model.named_parameters() if name.removeprefix("module.").startswith(prefixes)}

"""The classifier's model card (``README.md``), its training-curve plot and the run-info file it is written from.

Everything here receives plain values: the run description that training writes to ``hubtune_run.json``
(see :func:`write_run_info`), never a model object or the method registry. The method's card text comes
from ``run_info["method_card"]`` (``{"title", "description", "citation", "tags"}``), written by the training
code from the method registry. The OOD section is ``run_info["ood_table"]``, Markdown written by
``hubtune ood``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hubtune.hub.push import is_repo_id
from hubtune.hub.templates import load_template

__all__ = [
    "CURVE_FILENAME",
    "DEFAULT_LICENSE",
    "RUN_INFO_FILENAME",
    "method_card_of",
    "normalize_base_model",
    "plot_training_curve",
    "read_run_info",
    "render_classifier_card",
    "write_model_card",
    "write_run_info",
]

CURVE_FILENAME = "training_curve.png"
RUN_INFO_FILENAME = "hubtune_run.json"
DEFAULT_LICENSE = "apache-2.0"
_NON_RESULT_METRICS = ("runtime", "per_second", "epoch", "samples", "steps", "flos")


# --------------------------------------------------------------------------------------------- run info


def write_run_info(output_dir: str | Path, run_info: dict[str, Any]) -> Path:
    """Write ``run_info`` (plain values) to ``output_dir/hubtune_run.json``; returns the path."""
    path = Path(output_dir) / RUN_INFO_FILENAME
    path.write_text(json.dumps(run_info, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_run_info(folder: str | Path) -> dict[str, Any] | None:
    """The run info in ``folder/hubtune_run.json``, or None when the folder has none (or it is unreadable)."""
    path = Path(folder) / RUN_INFO_FILENAME
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------------------------- helpers


def method_card_of(run_info: dict[str, Any]) -> dict[str, Any]:
    """``run_info["method_card"]`` with every key present; the method's name as title for old run infos."""
    method = run_info.get("method") or "ce"
    card = dict(run_info.get("method_card") or {})
    tags = card.get("tags") or []
    return {
        "title": card.get("title") or method,
        "description": card.get("description") or "",
        "citation": card.get("citation") or None,
        "tags": [str(t) for t in tags] if isinstance(tags, (list, tuple)) else [str(tags)],
    }


def normalize_base_model(name: str | None, library: str | None = None, pretrained: bool = True) -> str | None:
    """The Hub model id a backbone name stands for, or None (random init, local folder, unknown).

    ``"hf-hub:timm/resnet18.a1_in1k"`` -> ``"timm/resnet18.a1_in1k"``; a timm registry name such as
    ``"resnet18"`` -> the Hub id of its default pretrained weights; a transformers id is kept as is.
    """
    if not name or not pretrained:
        return None
    name = str(name)
    if name.startswith(("local-dir:",)) or Path(name).exists():
        return None
    for prefix in ("hf-hub:", "timm:"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    name = name.split("@")[0]
    if "/" in name:
        return name if is_repo_id(name) else None
    if library in (None, "timm"):
        try:
            from timm.models import get_pretrained_cfg  # heavy optional third-party import

            cfg = get_pretrained_cfg(name)
            hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
            return hub_id if is_repo_id(hub_id) else None
        except Exception:  # noqa: BLE001 - an unknown name simply has no Hub id
            return None
    return None


def _display_name(name: str | None) -> str:
    if not name:
        return "unknown backbone"
    for prefix in ("hf-hub:", "timm:", "local-dir:"):
        if str(name).startswith(prefix):
            name = str(name)[len(prefix):]
    return Path(name).name if Path(name).is_absolute() else str(name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _result_metrics(metrics: dict[str, Any] | None) -> list[tuple[str, float]]:
    """(metric name, value) pairs worth reporting: numbers, not timings or counters."""
    out = []
    for key, value in (metrics or {}).items():
        if not _is_number(value) or any(part in key for part in _NON_RESULT_METRICS):
            continue
        out.append((re.sub(r"^(eval|test)_", "", key), float(value)))
    return out


def _model_name(run_info: dict[str, Any], repo_id: str | None) -> str:
    if repo_id:
        return repo_id.split("/")[-1]
    backbone = _display_name(run_info.get("base_model")).replace("/", "-")
    parts = [backbone, run_info.get("dataset"), run_info.get("method")]
    return "-".join(str(p) for p in parts if p)


def _eval_results(results: list[tuple[str, float]], dataset: str | None, split: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=str(dataset or "custom"),
            dataset_name=str(dataset or "custom"),
            dataset_split=split,
            metric_type=name,
            metric_name=name.replace("_", " ").capitalize(),
            metric_value=round(value, 6),
        )
        for name, value in results
    ]


def _card_data(run_info: dict[str, Any], method_card: dict[str, Any], base_model: str | None, model_name: str,
               eval_results: list[EvalResult], license: str | None) -> ModelCardData:  # noqa: A002
    library = run_info.get("backbone_library") or "timm"
    export_format = run_info.get("export_format") or library
    dataset = run_info.get("dataset")
    tags = ["hubtune", run_info.get("method") or "ce", "image-classification", library, *method_card["tags"]]
    return ModelCardData(
        library_name="transformers" if export_format in ("transformers", "hubtune") else "timm",
        license=license or run_info.get("license") or DEFAULT_LICENSE,
        tags=list(dict.fromkeys(str(t) for t in tags)),
        base_model=base_model,
        datasets=[str(dataset)] if dataset else None,
        pipeline_tag="image-classification",
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _label_values(run_info: dict[str, Any]) -> dict[str, Any]:
    id2label = {int(k): str(v) for k, v in (run_info.get("id2label") or {}).items()}
    labels = [id2label[i] for i in sorted(id2label)]
    preview = ", ".join(f"`{name}`" for name in labels[:10]) + (", ..." if len(labels) > 10 else "")
    return {"num_labels": run_info.get("num_labels") or len(id2label) or "?", "label_preview": preview}


def _preprocessing_values(run_info: dict[str, Any]) -> dict[str, Any]:
    hyperparameters = run_info.get("hyperparameters") or {}
    pre = dict(run_info.get("preprocessing") or {})
    image_size = hyperparameters.get("image_size", 224)
    return {
        "input_size": list(pre.get("input_size") or [3, image_size, image_size]),
        "mean": [round(float(x), 4) for x in pre["mean"]] if pre.get("mean") else None,
        "std": [round(float(x), 4) for x in pre["std"]] if pre.get("std") else None,
        "interpolation": pre.get("interpolation", "bicubic"),
    }


# --------------------------------------------------------------------------------------------- the card


def render_classifier_card(
    run_info: dict[str, Any],
    repo_id: str | None = None,
    *,
    training_curve: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's metadata field name
) -> ModelCard:
    """The model card (``huggingface_hub.ModelCard``) of a fine-tuned classifier, from plain values.

    Args:
        run_info: what the run wrote to ``hubtune_run.json``: base_model, backbone_library, export_format,
            pretrained, dataset, method, method_preset, method_card (``{"title", "description", "citation",
            "tags"}``), hyperparameters (a flat dict, shown as given), metrics, num_labels, id2label,
            log_history, optional preprocessing and ood_table (Markdown). Missing keys are tolerated.
        repo_id: the Hub repo the card is for (used in the loading code); a placeholder when None.
        training_curve: file name of the training-curve image in the repo, shown in the card.
        license: license identifier (default: run_info's ``license`` or apache-2.0).
    """
    library = run_info.get("backbone_library") or "timm"
    pretrained = bool(run_info.get("pretrained", False))
    method_card = method_card_of(run_info)
    dataset = run_info.get("dataset")
    base_model = normalize_base_model(run_info.get("base_model"), library, pretrained)
    model_name = _model_name(run_info, repo_id)
    results = _result_metrics(run_info.get("metrics"))
    split = run_info.get("eval_split") or "validation"
    eval_results = _eval_results(results, dataset, split)
    given = dict(run_info.get("hyperparameters") or {})
    sources = {k: v.get("source") for k, v in (run_info.get("training_settings") or {}).items() if isinstance(v, dict)}
    hyperparameters = [{"name": k, "value": _format_value(v), "source": sources.get(k)}
                       for k, v in given.items() if v is not None]
    ood_table = run_info.get("ood_table")

    template_kwargs = {
        "model_name": model_name,
        "repo_id": repo_id or "ORG/NAME",
        "pretrained": pretrained,
        "base_model_display": base_model or _display_name(run_info.get("base_model")),
        "base_model_url": f"/{base_model}" if base_model else None,
        "backbone_library": library,
        "export_format": run_info.get("export_format") or library,
        "dataset_display": dataset or "a custom dataset",
        "method_title": method_card["title"],
        "method_preset": run_info.get("method_preset"),
        "method_description": method_card["description"],
        "citation": method_card["citation"],
        "eval_split": split,
        "results": [{"name": n, "value": _format_value(v)} for n, v in results],
        "hyperparameters": hyperparameters,
        "hyperparameter_sources": bool(sources),
        "parameter_groups": _parameter_groups(run_info),
        "ood_table": ood_table if isinstance(ood_table, str) and ood_table.strip() else None,
        "training_curve": training_curve,
        **_label_values(run_info),
        **_preprocessing_values(run_info),
    }
    card_data = _card_data(run_info, method_card, base_model, model_name, eval_results, license)
    return ModelCard.from_template(card_data, template_str=load_template("classifier"), **template_kwargs)


def _parameter_groups(run_info: dict[str, Any]) -> list[dict[str, str]] | None:
    """Rows of the learning rate per model part, when the parts train at different rates (lr_multipliers)."""
    groups = [g for g in run_info.get("parameter_groups") or [] if isinstance(g, dict)]
    if len({g.get("learning_rate") for g in groups}) < 2:
        return None
    return [{"part": str(g.get("part")), "learning_rate": _format_value(g.get("learning_rate")),
             "multiplier": _format_value(g.get("lr_multiplier")), "parameters": f"{int(g.get('parameters', 0)):,}"}
            for g in groups]


def plot_training_curve(log_history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Plot training / evaluation loss (and evaluation accuracy) against the step; None if nothing to plot."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e and _is_number(e["loss"])]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    accuracy = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e and "step" in e]
    if not (train or evals or accuracy):
        return None
    import matplotlib  # heavy optional third-party import

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = 2 if accuracy else 1
    fig = Figure(figsize=(5 * panels, 3.5), dpi=100)
    ax = fig.add_subplot(1, panels, 1)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if accuracy:
        ax2 = fig.add_subplot(1, panels, 2)
        ax2.plot(*zip(*accuracy), marker="o", color="tab:green")
        ax2.set_xlabel("step")
        ax2.set_ylabel("eval accuracy")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _preprocessing_from_folder(folder: Path) -> dict[str, Any] | None:
    """The preprocessing recorded by the export in ``folder`` (any of the three layouts), if readable."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if config.get("model_type") == "hubtune":
        return config.get("preprocessing")
    if "pretrained_cfg" in config and "model_type" not in config:
        cfg = config["pretrained_cfg"]
        return {k: cfg[k] for k in ("input_size", "mean", "std", "interpolation") if k in cfg}
    try:
        proc = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    size = (proc.get("crop_size") if proc.get("do_center_crop") else proc.get("size")) or {}
    if "height" in size:
        channels = int(config.get("num_channels", 3))
        return {"input_size": [channels, size["height"], size["width"]], "mean": proc.get("image_mean"),
                "std": proc.get("image_std")}
    return None


def write_model_card(output_dir: str | Path, run_info: dict[str, Any], repo_id: str | None = None) -> Path:
    """Write ``README.md`` (and ``training_curve.png`` when ``run_info`` has a log history) to ``output_dir``.

    The preprocessing, when ``run_info`` lacks it, is read from the model files in ``output_dir``.
    Returns the path of README.md.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_info = dict(run_info)
    if not run_info.get("preprocessing"):
        pre = _preprocessing_from_folder(output_dir)
        if pre:
            run_info["preprocessing"] = pre
    curve = None
    if run_info.get("log_history"):
        curve = plot_training_curve(run_info["log_history"], output_dir / CURVE_FILENAME)
    card = render_classifier_card(run_info, repo_id=repo_id, training_curve=curve.name if curve else None)
    path = output_dir / "README.md"
    card.save(path)
    return path

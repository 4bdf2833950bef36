"""OOD results as Markdown tables and as the file ``ood_results.json``; plain values in, plain values out.

``ood_results.json`` keeps one entry per (in-distribution set, OOD set) pair, so evaluating the same model
again with another in-distribution or OOD set adds to the file; the same pair replaces only its own entry::

    {"format_version": 2, "convention": "...", "entries": [
        {"in_distribution": "digits", "ood_dataset": "noise", "model": "out/", "seed": 0,
         "scores": ["msp", ...], "in_distribution_images": 360, "in_distribution_accuracy": 0.99,
         "train_images": 1437, "num_images": 360, "metrics": {"msp": {"auroc": 0.97, ...}, ...}},
        ...]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hubtune.errors import OODError
from hubtune.ood.metrics import CONVENTION, METRIC_NAMES

__all__ = [
    "OOD_RESULTS_FILENAME",
    "format_ood_entries",
    "format_ood_table",
    "merge_ood_entries",
    "ood_result_entries",
    "read_ood_results",
    "write_ood_results",
]

OOD_RESULTS_FILENAME = "ood_results.json"
FORMAT_VERSION = 2
_TITLES = {
    "auroc": "AUROC ↑", "fpr_at_95_tpr": "FPR@95TPR ↓", "aupr_in": "AUPR-in ↑", "aupr_out": "AUPR-out ↑",
    "detection_error": "det. error ↓",
}
_COLUMNS = tuple((name, _TITLES[name]) for name in METRIC_NAMES)


# --------------------------------------------------------------------------------------------- tables


def _header() -> list[str]:
    titles = " | ".join(title for _, title in _COLUMNS)
    return [f"| OOD set | score | {titles} |", "|" + "---|" * (2 + len(_COLUMNS))]


def _row(set_name: str, score: str, metrics: Mapping[str, float]) -> str:
    values = " | ".join(f"{100 * metrics[key]:.1f}" for key, _ in _COLUMNS)
    return f"| {set_name} | {score} | {values} |"


def _caption(name: str, num_images: Any, accuracy: float | None) -> str:
    caption = f"In-distribution: {name} ({num_images} images"
    if accuracy is not None:
        caption += f", accuracy {100 * accuracy:.1f}%"
    return caption + "). Metrics in %."


def format_ood_table(results: Mapping[str, Any]) -> str:
    """A Markdown table (percentages) of one :func:`~hubtune.ood.evaluate_ood` result: a row per OOD set and score."""
    lines = _header()
    for set_name, entry in results["results"].items():
        for score, metrics in entry["metrics"].items():
            lines.append(_row(f"{set_name} ({entry['num_images']})", score, metrics))
    if len(results["results"]) > 1:
        for score, metrics in results["mean"].items():
            lines.append(_row("**mean**", score, metrics))
    in_info = results["in_distribution"]
    caption = _caption(in_info["name"], in_info["num_images"], in_info.get("accuracy"))
    return caption + "\n\n" + "\n".join(lines)


def _mean_rows(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Mean rows over the OOD sets, for the scores every entry has."""
    if len(entries) < 2:
        return []
    common = [s for s in entries[0]["metrics"] if all(s in e["metrics"] for e in entries)]
    rows = []
    for score in common:
        mean = {key: sum(e["metrics"][score][key] for e in entries) / len(entries) for key, _ in _COLUMNS}
        rows.append(_row("**mean**", score, mean))
    return rows


def format_ood_entries(entries: Iterable[Mapping[str, Any]]) -> str:
    """Markdown for every (in-distribution set, OOD set) entry: one table per in-distribution set."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(str(entry["in_distribution"]), []).append(entry)
    blocks = []
    for in_name, group in groups.items():
        latest = group[-1]
        lines = _header()
        for entry in group:
            for score, metrics in entry["metrics"].items():
                lines.append(_row(f"{entry['ood_dataset']} ({entry['num_images']})", score, metrics))
        lines += _mean_rows(group)
        caption = _caption(in_name, latest.get("in_distribution_images", "?"), latest.get("in_distribution_accuracy"))
        blocks.append(caption + "\n\n" + "\n".join(lines))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------------------------- entries


def ood_result_entries(results: Mapping[str, Any], **extra: Any) -> list[dict[str, Any]]:
    """One entry per OOD set of an :func:`~hubtune.ood.evaluate_ood` result (``extra``: e.g. model, seed)."""
    in_info = results["in_distribution"]
    entries = []
    for set_name, result in results["results"].items():
        entries.append({
            "in_distribution": str(in_info["name"]),
            "ood_dataset": str(set_name),
            **extra,
            "scores": list(result["metrics"]),
            "in_distribution_images": in_info.get("num_images"),
            "in_distribution_accuracy": in_info.get("accuracy"),
            "train_images": results.get("train_images"),
            "num_images": result["num_images"],
            "metrics": dict(result["metrics"]),
        })
    return entries


def _key(entry: Mapping[str, Any]) -> tuple[str, str]:
    return str(entry["in_distribution"]), str(entry["ood_dataset"])


def merge_ood_entries(existing: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``existing`` with ``new`` added; an entry of the same (in-distribution set, OOD set) is replaced in place."""
    merged = {_key(entry): dict(entry) for entry in existing}
    for entry in new:
        merged[_key(entry)] = dict(entry)
    return list(merged.values())


def _entries_of(content: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(content, dict) and isinstance(content.get("entries"), list):
        return [dict(e) for e in content["entries"]]
    if isinstance(content, dict) and isinstance(content.get("results"), dict) and "in_distribution" in content:
        # hubtune 0.1's file: one evaluate_ood result
        extra = {"model": content["model"]} if "model" in content else {}
        return ood_result_entries(content, **extra)
    raise OODError(f"{str(path)!r} is not an OOD results file written by hubtune ood; move it away and re-run.")


def read_ood_results(folder: str | Path) -> list[dict[str, Any]]:
    """The entries of ``folder/ood_results.json`` ([] when there is none); an old single-result file is converted."""
    path = Path(folder) / OOD_RESULTS_FILENAME
    if not path.is_file():
        return []
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise OODError(f"Cannot read {str(path)!r} ({type(e).__name__}: {e}); move it away and re-run.") from e
    return _entries_of(content, path)


def write_ood_results(folder: str | Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``entries`` to ``folder/ood_results.json``; returns the path."""
    path = Path(folder) / OOD_RESULTS_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"format_version": FORMAT_VERSION, "convention": CONVENTION, "entries": list(entries)}
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path

"""Out-of-distribution (OOD) detection: scores, metrics, OOD sources, an evaluation over datasets, reports.

Sign convention: every score is **higher = more in-distribution**, and the metrics treat the
in-distribution images as the **positive** class (AUROC, AUPR-in, and TPR in "FPR at 95% TPR" are about
in-distribution images; AUPR-out makes the OOD images the positives).

* :mod:`hubtune.ood.registry`: the registries ``OOD_SCORES`` and ``OOD_SOURCES``; a new score is one module calling
  :func:`register_ood_score`, a new named source one calling :func:`register_ood_source`.
* :mod:`hubtune.ood.scores`: msp, max-logit, energy, the class-subspace and Mahalanobis scores (registered there).
* :mod:`hubtune.ood.metrics`: :func:`ood_metrics` (AUROC, FPR at 95% TPR, AUPR-in/out, detection error).
* :mod:`hubtune.ood.sources`: the named sources ``"noise"`` and ``"skimage-photos"`` (registered there),
  :func:`load_ood_data`.
* :mod:`hubtune.ood.evaluate`: :func:`evaluate_ood`, a model run over an in-distribution set and OOD sets
  (its settings: :class:`OODSettings`).
* :mod:`hubtune.ood.report`: Markdown tables and ``ood_results.json`` (one entry per set pair).

``hubtune ood`` (:mod:`hubtune.commands.ood`) runs the evaluation from the command line. User-caused
failures raise :class:`hubtune.errors.OODError` (a ``ValueError``).
"""

from hubtune.errors import OODError
from hubtune.ood.evaluate import OODSettings, evaluate_ood, load_ood_sets
from hubtune.ood.metrics import METRIC_NAMES, ood_metrics
from hubtune.ood.report import (
    OOD_RESULTS_FILENAME,
    format_ood_entries,
    format_ood_table,
    merge_ood_entries,
    ood_result_entries,
    read_ood_results,
    write_ood_results,
)
from hubtune.ood.scores import (
    DEFAULT_SCORES,
    OOD_SCORES,
    ClassGaussians,
    ClassSubspaces,
    OODScore,
    energy_score,
    get_ood_score,
    register_ood_score,
    mahalanobis_score,
    max_logit_score,
    msp_score,
    resolve_scores,
    subspace_angle_score,
)
from hubtune.ood.registry import (
    OOD_SOURCES,
    OODSource,
    register_ood_source,
    unregister_ood_score,
    unregister_ood_source,
)
from hubtune.ood.sources import SKIMAGE_PHOTOS, check_ood_images, load_ood_data

__all__ = [
    "msp_score",
    "max_logit_score",
    "energy_score",
    "ClassSubspaces",
    "subspace_angle_score",
    "ClassGaussians",
    "mahalanobis_score",
    "OODScore",
    "OOD_SCORES",
    "DEFAULT_SCORES",
    "get_ood_score",
    "register_ood_score",
    "unregister_ood_score",
    "resolve_scores",
    "ood_metrics",
    "METRIC_NAMES",
    "OOD_SOURCES",
    "OODSource",
    "register_ood_source",
    "unregister_ood_source",
    "SKIMAGE_PHOTOS",
    "load_ood_data",
    "check_ood_images",
    "load_ood_sets",
    "evaluate_ood",
    "OODSettings",
    "format_ood_table",
    "format_ood_entries",
    "ood_result_entries",
    "merge_ood_entries",
    "read_ood_results",
    "write_ood_results",
    "OOD_RESULTS_FILENAME",
    "OODError",
]

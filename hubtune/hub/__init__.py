"""Model cards and publishing to the Hugging Face Hub; everything here receives plain values.

* :mod:`hubtune.hub.templates`: :func:`load_template`, the Jinja card templates of ``model_cards/``.
* :mod:`hubtune.hub.classifier_card`: the classifier's card (:func:`render_classifier_card`,
  :func:`write_model_card`), its training-curve plot and the run-info file ``hubtune_run.json``.
* :mod:`hubtune.hub.generator_card`: the GAN generator's card.
* :mod:`hubtune.hub.push`: :func:`push_folder`, publishing a finished output folder with typed errors.
* :mod:`hubtune.hub.space`: a Gradio Space beside the model (``hubtune push --space``), same fault handling.
"""

from hubtune.errors import HubAuthError, HubPushError
from hubtune.hub.classifier_card import (
    CURVE_FILENAME,
    DEFAULT_LICENSE,
    RUN_INFO_FILENAME,
    method_card_of,
    normalize_base_model,
    plot_training_curve,
    read_run_info,
    render_classifier_card,
    write_model_card,
    write_run_info,
)
from hubtune.hub.generator_card import render_generator_card
from hubtune.hub.push import (
    DEFAULT_COMMIT_MESSAGE,
    PUSH_IGNORE_PATTERNS,
    PUSH_IGNORED_SUFFIXES,
    check_push_folder,
    is_repo_id,
    push_folder,
    pushed_files,
    validate_repo_id,
)
from hubtune.hub.templates import load_template

__all__ = [
    "CURVE_FILENAME",
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_LICENSE",
    "PUSH_IGNORED_SUFFIXES",
    "PUSH_IGNORE_PATTERNS",
    "RUN_INFO_FILENAME",
    "HubAuthError",
    "HubPushError",
    "check_push_folder",
    "is_repo_id",
    "load_template",
    "method_card_of",
    "normalize_base_model",
    "plot_training_curve",
    "push_folder",
    "pushed_files",
    "read_run_info",
    "render_classifier_card",
    "render_generator_card",
    "validate_repo_id",
    "write_model_card",
    "write_run_info",
]

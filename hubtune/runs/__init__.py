"""The run layer: what every hubtune training job does around its training loop, in one place for both halves.

``hubtune finetune`` (:class:`~hubtune.training.trainer.HubtuneTrainer` and
:func:`~hubtune.training.finetune.run_finetune`) and ``hubtune gan`` (:func:`~hubtune.gan.loop.train_gan`) call the
same functions for six duties; each duty is one module:

=========================================  ===================================================================
duty                                       the one place
=========================================  ===================================================================
output-folder guard and lock               :func:`hubtune.runs.folder.guarded_output_dir` (the lock file itself:
                                           :mod:`hubtune.locking`)
resume: last complete checkpoint, its      :func:`hubtune.runs.checkpoints.resolve_resume` (content check:
``SHA256SUMS``                             :mod:`hubtune.manifest`)
the "past --max_steps" refusal             :func:`hubtune.runs.checkpoints.refuse_past_the_end`
interrupt handling and exit codes          :mod:`hubtune.runs.interrupt` (``resumable_on_interrupt``,
                                           ``sigterm_as_interrupt``, ``exit_line``)
atomic checkpoint writing + ``SHA256SUMS`` :func:`hubtune.runs.checkpoints.staging_folder` and
                                           :func:`~hubtune.runs.checkpoints.publish_checkpoint`
publishing: model, card and Space          :func:`hubtune.runs.publish.publish`
=========================================  ===================================================================

What each half writes INTO a checkpoint stays its own (the Trainer's files; the GAN's safetensors + JSON in
:mod:`hubtune.gan.checkpoint`), as does what it checks of the content before resuming (the classifier's model
identity, the GAN's options). Messages for the person running the job go through :mod:`hubtune.messages`.

Why a package of small modules rather than a base class both halves inherit from: the classifier half is a
``transformers.Trainer`` subclass and the GAN half a plain Accelerate loop; plain functions fit both without making
either one look like the other. The names below are imported when first used, so that the command line (which
takes the interrupt handling from here) stays light.
"""

from __future__ import annotations

from hubtune._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "guarded_output_dir": "hubtune.runs.folder",
    "refuse_to_overwrite": "hubtune.runs.folder",
    **dict.fromkeys(("LATEST", "checkpoint_folders", "checkpoint_step", "is_complete", "last_complete", "last_good",
                     "publish_checkpoint", "refuse_past_the_end", "resolve_resume", "resume_request",
                     "staging_folder"), "hubtune.runs.checkpoints"),
    **dict.fromkeys(("exit_line", "resumable_on_interrupt", "sigterm_as_interrupt", "where_to_resume"),
                    "hubtune.runs.interrupt"),
    **dict.fromkeys(("publish", "published_line"), "hubtune.runs.publish"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

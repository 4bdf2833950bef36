"""``hubtune finetune --streaming``: two processes on a stream and on tar shards (each example once per pass,
both stop at the same step), a killed run resumed where it stopped, unreadable images counted in hubtune_run.json,
and the one-line errors (missing / truncated shard, options that need a length).

Two processes run under torchrun (as tests/test_examples.py starts them: accelerate 1.15's ``accelerate launch
--cpu --num_processes 2`` starts one), gloo on the CPU, through tests/streaming_worker.py.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from PIL import Image

from hubtune.commands import main as hubtune_main
from hubtune.data import POSITION_KEY, ImageStream, load_image_classification_data
from streaming_worker import run as run_worker
from test_streaming import CLASSES, example_id, ids_transform, write_shards

TESTS = Path(__file__).resolve().parent
COMMON = ["--model", "test_resnet", "--image_size", "32", "--method", "ce", "--disable_tqdm", "true",
          "--per_device_train_batch_size", "4", "--report_to", "none", "--streaming"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*runs: list[str], cwd: Path) -> None:
    argv = [arg for i, run in enumerate(runs) for arg in ([*(["--next"] if i else []), *run])]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), str(TESTS / "streaming_worker.py"), *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _parquet_files(folder: Path, files: int, rows: int) -> None:
    folder.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    for f in range(files):
        ids = range(f * rows, (f + 1) * rows)
        images = [Image.new("RGB", (8, 8), (i % 256, i // 256, 7)) for i in ids]
        part = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in ids]}, features=features)
        part.to_parquet(str(folder / f"train-{f}.parquet"))


def _check_passes(out: Path, source: str, readable: set[int], max_steps: int) -> None:
    """Both processes trained max_steps steps, each on exactly its part of the stream in its order (an ImageStream
    iterated here, seed 0 as the run's); in every pass the two parts are disjoint and hold every readable example."""
    stream = load_image_classification_data(source, streaming=True).train
    by_pass: dict[int, list[int]] = {}
    for rank in (0, 1):
        seen = json.loads((out / f"seen_{rank}.json").read_text())
        assert [entry["step"] for entry in seen] == list(range(1, max_steps + 1)), "both stop at the same step"
        trained = [i for entry in seen for i in entry["ids"]]
        items = [(item[POSITION_KEY]["pass"], example_id(item["pixel_values"]))
                 for item in ImageStream(stream, ids_transform(), rank=rank, world_size=2, seed=0, passes=3)]
        assert trained == [i for _, i in items][:len(trained)], "each process trains on its own part, in its order"
        assert len(trained) > len(items) // 3, "the run went past a whole pass"
        for number, i in items:
            by_pass.setdefault(number, []).append(i)
    assert all(sorted(by_pass[number]) == sorted(readable) for number in range(3)), \
        "in every pass the processes' parts hold every example exactly once"
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == max_steps


def test_two_processes_split_a_stream_and_tar_shards_and_stop_together(tmp_path):
    # tar shards: 4 shards for 2 processes (whole shards each), one image corrupt, a validation shard
    write_shards(tmp_path / "shards", [12, 12, 12, 12], corrupt={5})
    write_shards(tmp_path / "shards", [8], prefix="validation", start=100)
    # a Parquet data set (a Hub data set's files): 3 files for 2 processes, so every other example each
    _parquet_files(tmp_path / "parquet", files=3, rows=16)
    shard_run = [*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "12", "--save_steps", "6",
                 "--output_dir", str(tmp_path / "out-shards")]
    parquet_run = [*COMMON, "--dataset", str(tmp_path / "parquet" / "*.parquet"), "--max_steps", "12",
                   "--output_dir", str(tmp_path / "out-parquet")]
    _torchrun(shard_run, parquet_run, cwd=tmp_path)

    _check_passes(tmp_path / "out-shards", str(tmp_path / "shards"), set(range(48)) - {5}, 12)
    info = json.loads((tmp_path / "out-shards" / "hubtune_run.json").read_text())
    assert info["data"]["streaming"] and info["data"]["unreadable_images"]["training"] == 2  # once a pass
    assert info["metrics"]["eval_accuracy"] >= 0  # evaluated on the validation shard
    for rank in (0, 1):  # every process's position is in the checkpoint
        state = json.loads((tmp_path / "out-shards" / "checkpoint-12" / f"stream_state_{rank}.json").read_text())
        assert state["positions"]["0"]["pass"] >= 1
    _check_passes(tmp_path / "out-parquet", str(tmp_path / "parquet" / "*.parquet"), set(range(48)), 12)


def test_a_killed_streaming_run_resumes_where_it_stopped(tmp_path):
    write_shards(tmp_path / "shards", [10, 10, 10])
    argv = [*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "9", "--save_steps", "4",
            "--dataloader_num_workers", "2", "--seed", "3"]
    whole = run_worker([*argv, "--output_dir", str(tmp_path / "whole")])
    with pytest.raises(KeyboardInterrupt):
        run_worker([*argv, "--output_dir", str(tmp_path / "resumed")], stop_at=6)  # killed after checkpoint-4
    resumed = run_worker([*argv, "--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", "true"])
    assert [e["step"] for e in resumed] == list(range(5, 10))
    # from step 5 on the same examples as the run that was never stopped (with 2 workers the two workers' batches
    # may take turns the other way after the resume: compared as a set of batches)
    assert sorted(e["ids"] for e in resumed) == sorted(e["ids"] for e in whole[4:])


def _one_line(argv, capsys) -> str:
    assert hubtune_main(["finetune", *argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_missing_or_truncated_shards_and_options_that_need_a_length_end_in_one_line(tmp_path, capsys):
    paths = write_shards(tmp_path / "shards", [6, 6])
    out = ["--output_dir", str(tmp_path / "out")]
    line = _one_line([*COMMON, "--dataset", str(tmp_path / "shards"), *out], capsys)
    assert "--streaming: the data set's length is unknown" in line and "--max_steps N" in line
    line = _one_line([*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "2", "--eval_strategy", "epoch",
                      *out], capsys)
    assert "--eval_strategy epoch: a stream has no epochs" in line
    line = _one_line([*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "2", "--eval_fraction", "0.2",
                      *out], capsys)
    assert "eval_fraction needs the data set's length" in line
    paths[1].write_bytes(paths[1].read_bytes()[:1536])
    line = _one_line([*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "2", *out], capsys)
    assert f"Shard '{paths[1]}' is truncated" in line
    paths[1].unlink()
    line = _one_line([*COMMON, "--dataset", f"{paths[0]},{paths[1]}", "--max_steps", "2", *out], capsys)
    assert "does not exist" in line and str(paths[1]) in line


def test_strict_data_names_a_bad_image_read_by_a_worker_in_one_line(tmp_path, capsys):
    write_shards(tmp_path / "shards", [6, 6], corrupt={7})
    line = _one_line([*COMMON, "--dataset", str(tmp_path / "shards"), "--max_steps", "4", "--strict_data",
                      "--dataloader_num_workers", "1", "--output_dir", str(tmp_path / "out")], capsys)
    assert line.startswith("hubtune finetune: error: Cannot read image '000007.png'") and "--strict_data" in line


def test_hubtune_gan_streams_counts_unreadable_images_and_resumes_its_stream(tmp_path):
    from hubtune.gan import GANTrainingConfig, train_gan

    write_shards(tmp_path / "shards", [6, 6], corrupt={2})  # 11 readable images: 4 steps of 4 go past a pass
    options = dict(dataset=str(tmp_path / "shards"), streaming=True, arch="dcgan", image_size=16,
                   per_device_train_batch_size=4, checkpoint_every=2, sample_every=100, eval_num_samples=0,
                   progress_bar=False, export_generator=False)

    def gan(**more):
        return train_gan(GANTrainingConfig.from_options(**options, **more))

    def stream_state(out, step):
        return json.loads((out / f"checkpoint-{step}" / "process_state_0.json").read_text())["stream"]

    whole = gan(output_dir=str(tmp_path / "whole"), max_steps=4)
    assert whole.unreadable_images >= 1 and stream_state(tmp_path / "whole", 4)["positions"]["0"]["pass"] == 1
    gan(output_dir=str(tmp_path / "resumed"), max_steps=2)
    resumed = gan(output_dir=str(tmp_path / "resumed"), max_steps=4, resume_from_checkpoint=True)
    # the resumed stream went on from step 2's position (a restarted one would stand in its first pass at step 4)
    assert resumed.steps == 4 and stream_state(tmp_path / "resumed", 4) == stream_state(tmp_path / "whole", 4)
    assert resumed.unreadable_images == whole.unreadable_images


def test_hubtune_compare_streams_too(tmp_path, capsys):
    write_shards(tmp_path / "shards", [8, 8])
    write_shards(tmp_path / "shards", [6], prefix="validation", start=100)
    code = hubtune_main(["compare", "--model", "test_resnet", "--image_size", "32", "--methods", "ce", "l2-sp",
                         "--seeds", "1", "--dataset", str(tmp_path / "shards"), "--streaming", "--max_steps", "2",
                         "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "cmp")])
    assert code == 0, capsys.readouterr().err[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "cmp" / "compare.jsonl").read_text().splitlines()]
    assert [(r["label"], r["steps"], r["train_samples"], r["eval_samples"]) for r in rows] == \
        [("ce", 2, 8, 6), ("l2-sp", 2, 8, 6)]


def test_a_length_stated_in_the_card_turns_epochs_into_steps(tmp_path):
    from hubtune.training.finetune import FinetuneTrainingArguments, stream_schedule

    write_shards(tmp_path / "shards", [6, 6])
    card = tmp_path / "shards" / "README.md"
    card.write_text(card.read_text().replace("\n---\n", "\n  splits:\n  - name: train\n    num_examples: 12\n---\n"))
    data = load_image_classification_data(str(tmp_path / "shards"), streaming=True)
    assert data.num_train_examples == 12
    args = FinetuneTrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2, report_to="none",
                                     per_device_train_batch_size=4)
    scheduled = stream_schedule(args, data)
    assert scheduled.max_steps == 6  # 2 epochs x 12 images / 4 per step
    assert (str(scheduled.save_strategy.value), str(scheduled.eval_strategy.value)) == ("steps", "no")  # no eval split

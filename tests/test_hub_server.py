"""The local Hub (tests/hub_server.py) answers the real huggingface_hub client over HTTP."""

from __future__ import annotations

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import git_blob_sha1, validate_card_yaml


def _write(folder, files: dict[str, bytes]):
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_endpoint_is_the_local_server(local_hub):
    from huggingface_hub import constants

    assert constants.ENDPOINT == local_hub.endpoint
    assert local_hub.endpoint.startswith("http://127.0.0.1:")


def test_upload_folder_list_and_download_by_revision(local_hub, hub_token, hub_repo_id, tmp_path):
    unhandled_before = list(local_hub.unhandled)
    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id)
    first = {"config.json": b'{"v": 1}', "README.md": b"---\nlicense: mit\n---\n# m\n", "sub/w.bin": bytes(range(256)) * 40}
    _write(tmp_path / "v1", first)
    c1 = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path / "v1")  # the client's default (pipelined) path

    api.create_branch(hub_repo_id, branch="dev")
    _write(tmp_path / "v2", {"config.json": b'{"v": 2}'})
    c2 = api.create_commit(
        hub_repo_id, operations=[CommitOperationAdd("config.json", str(tmp_path / "v2" / "config.json"))],
        commit_message="v2", revision="dev",
    )
    assert c1.oid != c2.oid and len(c1.oid) == 40

    assert sorted(api.list_repo_files(hub_repo_id)) == [".gitattributes", "README.md", "config.json", "sub/w.bin"]
    info = api.model_info(hub_repo_id)
    assert info.sha == c1.oid
    assert {s.rfilename: s.blob_id for s in info.siblings}["sub/w.bin"] == git_blob_sha1(first["sub/w.bin"])
    assert api.model_info(hub_repo_id, revision="dev").sha == c2.oid
    refs = api.list_repo_refs(hub_repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": c1.oid, "dev": c2.oid}

    def read(filename, revision=None):
        with open(hf_hub_download(hub_repo_id, filename, revision=revision), "rb") as f:
            return f.read()

    assert read("config.json") == b'{"v": 1}'
    assert read("config.json", revision="dev") == b'{"v": 2}'
    assert read("config.json", revision=c1.oid) == b'{"v": 1}'
    assert read("sub/w.bin", revision="dev") == first["sub/w.bin"]  # the branch started from main
    assert local_hub.unhandled == unhandled_before  # every request of this flow had a real route


def test_unchanged_files_are_not_recommitted(local_hub, hub_token, hub_repo_id, tmp_path):
    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id)
    _write(tmp_path, {"a.txt": b"same"})
    first = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path)
    again = api.upload_folder(repo_id=hub_repo_id, folder_path=tmp_path)  # preupload's oid says "unchanged"
    assert again.oid == first.oid


def test_private_repo_needs_a_valid_token(local_hub, hub_token, hub_repo_id, tmp_path):
    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id, private=True)
    assert api.model_info(hub_repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, ".gitattributes", token=False, cache_dir=tmp_path / "anon")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(hub_repo_id, token=False)
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(hub_repo_id, ".gitattributes", token="hf_not_a_valid_token", cache_dir=tmp_path / "bad")
    assert err.value.response.status_code == 401
    assert hf_hub_download(hub_repo_id, ".gitattributes", token=hub_token, cache_dir=tmp_path / "ok")


def test_writes_and_whoami_need_a_token(local_hub, hub_token, hub_repo_id):
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().create_repo(hub_repo_id, token=False)
    assert err.value.response.status_code == 401
    assert hub_repo_id not in local_hub.repos
    assert HfApi().whoami(token=hub_token)["name"] == "hubtune-tester"
    with pytest.raises(HfHubHTTPError):
        HfApi().whoami(token="hf_not_a_valid_token")


def test_missing_file_and_revision_carry_hub_error_codes(local_hub, hub_token, hub_repo_id, tmp_path):
    HfApi(token=hub_token).create_repo(hub_repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "config.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, ".gitattributes", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing-here", "config.json", cache_dir=tmp_path)


def test_validate_yaml_checks_the_fields_the_hub_checks(local_hub):
    good = "---\nlicense: apache-2.0\ntags: [a, b]\npipeline_tag: image-classification\nbase_model: timm/resnet18\n---\n# x"
    assert validate_card_yaml(good) == ([], [])
    errors, _ = validate_card_yaml("---\nlicense: not-a-license\npipeline_tag: dance\ntags: 3\n---\n")
    assert len(errors) == 3
    assert validate_card_yaml("# no metadata")[1]  # a warning, not an error
    bad_index = "---\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-classification}\n    metrics: []\n---\n"
    assert any("dataset" in e for e in validate_card_yaml(bad_index)[0])

    ModelCard(good).validate()  # the client posts to /api/validate-yaml on HF_ENDPOINT
    with pytest.raises(ValueError, match="license"):
        ModelCard("---\nlicense: not-a-license\n---\n# x").validate()
    assert local_hub.routes_seen().count("validate_yaml") >= 2


@pytest.mark.parametrize("kind", [500, "drop"])
def test_injected_faults_fail_the_commit_and_leave_the_repo_unchanged(local_hub, hub_token, hub_repo_id, tmp_path, kind):
    api = HfApi(token=hub_token)
    api.create_repo(hub_repo_id)
    head = api.model_info(hub_repo_id).sha
    _write(tmp_path, {"big.bin": b"x" * 200_000})
    local_hub.inject_fault("commit", kind)
    with pytest.raises(Exception) as err:
        api.create_commit(hub_repo_id, operations=[CommitOperationAdd("big.bin", str(tmp_path / "big.bin"))],
                          commit_message="m")
    if kind == 500:
        assert isinstance(err.value, HfHubHTTPError) and err.value.response.status_code == 500
    else:
        assert not isinstance(err.value, HfHubHTTPError)  # a transport error: no answer came back
    assert api.model_info(hub_repo_id).sha == head
    assert "big.bin" not in local_hub.files(hub_repo_id)

    api.create_commit(hub_repo_id, operations=[CommitOperationAdd("big.bin", str(tmp_path / "big.bin"))],
                      commit_message="m")  # the fault was for one request only
    assert local_hub.files(hub_repo_id)["big.bin"] == b"x" * 200_000


def test_injected_status_on_downloads(local_hub, hub_token, hub_repo_id, tmp_path):
    HfApi(token=hub_token).create_repo(hub_repo_id)
    local_hub.inject_fault("resolve", 404)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, ".gitattributes", cache_dir=tmp_path)
    assert hf_hub_download(hub_repo_id, ".gitattributes", cache_dir=tmp_path)

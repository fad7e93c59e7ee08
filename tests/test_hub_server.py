"""The fake Hub of ``tests/hub_server.py`` answers real ``huggingface_hub`` calls: create, upload, download, refuse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub.errors import HfHubHTTPError

from tests.hub_server import git_blob_sha1, serve_hub

TOKEN = "hf_fake_token_for_tests"


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online (for 127.0.0.1), no telemetry, and any cache or token lookup inside ``tmp_path``."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "hf_home" / "xet"))


def _model_folder(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": json.dumps({"architecture": "resnet18", "num_classes": 3}).encode(),
        "README.md": b"---\nlicense: apache-2.0\nlibrary_name: timm\n---\n\n# A tiny model\n",
        "model.safetensors": os.urandom(600_000),
        "onnx/model.onnx": os.urandom(70_000),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_create_repo_and_upload_folder_store_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    files = _model_folder(folder)
    with serve_hub() as (url, hub):
        api = huggingface_hub.HfApi(endpoint=url, token=TOKEN)
        repo_url = api.create_repo(repo_id="org/tiny", private=True, exist_ok=True, repo_type="model")
        again = api.create_repo(repo_id="org/tiny", private=True, exist_ok=True, repo_type="model")  # 409, kept
        commit = api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="Add model")
        info = api.model_info("org/tiny")
    assert repo_url.repo_id == again.repo_id == "org/tiny" and repo_url.endpoint == url
    repo = hub.repos["org/tiny"]
    assert repo["private"] is True and repo["type"] == "model"
    assert repo["files"] == files
    assert repo["commits"] == ["Add model"]
    assert commit.oid == repo["sha"] == info.sha and commit.commit_url == f"{url}/org/tiny/commit/{repo['sha']}"
    assert sorted(sibling.rfilename for sibling in info.siblings or []) == sorted(files)
    assert hub.auth_headers and set(hub.auth_headers) == {f"Bearer {TOKEN}"}
    assert ("POST", "/api/repos/create") in hub.requests
    assert ("POST", "/api/models/org/tiny/preupload/main") in hub.requests
    assert ("POST", "/api/models/org/tiny/commit/main") in hub.requests


def test_refused_token_raises_and_stores_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    _model_folder(folder)
    with serve_hub(fail_with=401) as (url, hub):
        api = huggingface_hub.HfApi(endpoint=url, token=TOKEN)
        with pytest.raises(HfHubHTTPError) as raised:
            api.create_repo(repo_id="org/tiny", private=True, exist_ok=True, repo_type="model")
        assert raised.value.response.status_code == 401
        assert "Invalid credentials in Authorization header" in str(raised.value)
        with pytest.raises(HfHubHTTPError):
            api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="Add model", repo_type="model")
    assert hub.repos == {}
    assert hub.requests and set(hub.auth_headers) == {f"Bearer {TOKEN}"}
    with serve_hub(fail_with=403, fail_only=r"/commit/") as (url, hub):  # the repository is made, the commit refused
        api = huggingface_hub.HfApi(endpoint=url, token=TOKEN)
        api.create_repo(repo_id="org/tiny", private=True, exist_ok=True, repo_type="model")
        with pytest.raises(HfHubHTTPError) as raised:
            api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="Add model", repo_type="model")
        assert raised.value.response.status_code == 403
    assert hub.repos["org/tiny"]["files"] == {} and hub.repos["org/tiny"]["commits"] == []


def test_download_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    files = _model_folder(folder)
    cache = tmp_path / "cache"
    with serve_hub() as (url, hub):
        api = huggingface_hub.HfApi(endpoint=url, token=TOKEN)
        api.create_repo(repo_id="org/tiny", private=True, exist_ok=True, repo_type="model")
        first = api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="one", repo_type="model")
        snapshot = huggingface_hub.snapshot_download(
            repo_id="org/tiny", endpoint=url, token=TOKEN, cache_dir=cache,
            allow_patterns=["config.json", "model.safetensors"],
        )  # fmt: skip
        assert Path(snapshot).name == first.oid
        assert {path.name: path.read_bytes() for path in Path(snapshot).iterdir()} == {
            name: files[name] for name in ("config.json", "model.safetensors")
        }
        onnx = huggingface_hub.hf_hub_download(
            "org/tiny", "onnx/model.onnx", endpoint=url, token=TOKEN, cache_dir=cache
        )
        assert Path(onnx).read_bytes() == files["onnx/model.onnx"]
        assert sorted(api.list_repo_files("org/tiny")) == sorted(files)
        # the same folder again: nothing changed, so no new commit
        same = api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="two", repo_type="model")
        assert same.oid == first.oid and hub.repos["org/tiny"]["commits"] == ["one"]
        # a changed file makes a second commit; the first stays downloadable by its id
        (folder / "config.json").write_text("{}")
        second = api.upload_folder(folder_path=folder, repo_id="org/tiny", commit_message="three", repo_type="model")
        assert second.oid != first.oid and hub.repos["org/tiny"]["commits"] == ["one", "three"]
        old = huggingface_hub.hf_hub_download(
            "org/tiny", "config.json", revision=first.oid, endpoint=url, token=TOKEN, cache_dir=tmp_path / "cache2"
        )
        assert Path(old).read_bytes() == files["config.json"]
        assert hub.repos["org/tiny"]["files"]["config.json"] == b"{}"
    head = [path for method, path in hub.requests if method == "HEAD"]
    assert "/org/tiny/resolve/" + first.oid + "/model.safetensors" in head
    # `echo -n hello | git hash-object --stdin`
    assert git_blob_sha1(b"hello") == "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"

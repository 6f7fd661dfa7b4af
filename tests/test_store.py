"""hf_tna.hub: the same suite against LocalStore and HubStore (on the loopback Hub test server), plus the real
huggingface_hub / transformers clients against that server."""

import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from hf_tna.hub import (
    HubStore,
    LocalStore,
    RepoNotFoundError,
    RevisionNotFoundError,
    StaleParentError,
    open_store,
    parse_repo_ref,
    resolve_folder,
)

ROOT = Path(__file__).resolve().parents[1]
BIG = 10 * 1024 * 1024 + 4096  # above the Hub's 10 MB limit for regular files: takes the LFS path


@pytest.fixture(params=["local", "hub"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def repo_id(request):
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", request.node.name).strip("-")[:60]
    return f"tester/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def repo(store, repo_id):
    store.create_repo(repo_id)
    return repo_id


def test_create_repo(store, repo_id):
    assert not store.repo_exists(repo_id)
    store.create_repo(repo_id)
    store.create_repo(repo_id, exist_ok=True)
    assert store.repo_exists(repo_id)
    assert store.list_files(repo_id) == [".gitattributes"]  # like the Hub, a repo starts with one commit
    assert set(store.list_refs(repo_id)["branches"]) == {"main"}
    with pytest.raises(FileExistsError, match=repo_id):
        store.create_repo(repo_id, exist_ok=False)


def test_commit_small_and_lfs_files(store, repo, tmp_path):
    big = os.urandom(BIG)
    (tmp_path / "notes.txt").write_text("from a local file")
    files = {"config.json": b'{"a": 1}', "sub/notes.txt": tmp_path / "notes.txt", "big.bin": big}
    sha = store.commit(repo, files, "add files")
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert store.resolve(repo) == sha == store.list_refs(repo)["branches"]["main"]
    assert store.list_files(repo, sha) == [".gitattributes", "big.bin", "config.json", "sub/notes.txt"]
    assert store.read_file(repo, "config.json") == b'{"a": 1}'
    assert store.read_file(repo, "sub/notes.txt", sha) == b"from a local file"
    assert store.read_file(repo, "big.bin") == big
    if isinstance(store, HubStore):  # the client really took the LFS upload path
        info = store.api.model_info(repo, files_metadata=True)
        lfs = {s.rfilename: s.lfs for s in info.siblings}
        assert lfs["big.bin"] is not None and lfs["big.bin"].size == BIG and lfs["config.json"] is None
    assert store.commit(repo, {"config.json": b'{"a": 1}'}, "no change") == sha  # no empty commit


def test_download_at_old_revision_gives_old_content(store, repo, tmp_path):
    old = store.commit(repo, {"w.bin": b"old weights", "a/b.txt": b"b"}, "v1")
    new = store.commit(repo, {"w.bin": b"new weights", "c.txt": b"c"}, "v2")
    folder, sha = store.download(repo, old)
    assert sha == old and (folder / "w.bin").read_bytes() == b"old weights" and not (folder / "c.txt").exists()
    folder, sha = store.download(repo)
    assert sha == new and (folder / "w.bin").read_bytes() == b"new weights"
    folder, sha = store.download(repo, old, allow_patterns=["a/"], local_dir=tmp_path / "out")
    assert folder == (tmp_path / "out").resolve() and sha == old
    assert (folder / "a" / "b.txt").read_bytes() == b"b" and not (folder / "w.bin").exists()


def test_branches_and_tags(store, repo):
    main = store.commit(repo, {"x.txt": b"main"}, "on main")
    feature = store.commit(repo, {"x.txt": b"feature"}, "on a new branch", revision="feature/x")
    refs = store.list_refs(repo)
    assert refs["branches"] == {"main": main, "feature/x": feature} and refs["tags"] == {}
    assert store.read_file(repo, "x.txt", "feature/x") == b"feature"
    assert store.read_file(repo, "x.txt") == b"main"

    store.create_tag(repo, "v1", main)
    assert store.resolve(repo, "v1") == main and store.list_refs(repo)["tags"] == {"v1": main}
    with pytest.raises(FileExistsError, match="v1"):
        store.create_tag(repo, "v1", feature)
    store.create_tag(repo, "v1", feature, exist_ok=True)
    assert store.resolve(repo, "v1") == main

    store.create_branch(repo, "from-tag", revision="v1")
    store.create_branch(repo, "from-tag", exist_ok=True)
    assert store.resolve(repo, "from-tag") == main
    with pytest.raises(FileExistsError, match="from-tag"):
        store.create_branch(repo, "from-tag", exist_ok=False)
    with pytest.raises(RevisionNotFoundError, match="nope"):
        store.commit(repo, {"y.txt": b"y"}, "no such branch", revision="nope", create_branch=False)
    with pytest.raises(ValueError, match="not a branch"):
        store.commit(repo, {"y.txt": b"y"}, "to a tag", revision="v1")


def test_resolve_errors_name_repo_and_revision(store, repo, repo_id):
    sha = store.resolve(repo)
    assert store.resolve(repo, sha) == sha
    with pytest.raises(RevisionNotFoundError, match=rf"'no-such-rev'.*{repo_id}"):
        store.resolve(repo, "no-such-rev")
    with pytest.raises(RevisionNotFoundError):
        store.list_files(repo, "f" * 40)
    with pytest.raises(RepoNotFoundError, match="tester/missing"):
        store.resolve("tester/missing")


def test_stale_parent_commit_raises(store, repo):
    first = store.commit(repo, {"a.txt": b"1"}, "one")
    second = store.commit(repo, {"a.txt": b"2"}, "two", parent_commit=first)
    with pytest.raises(StaleParentError, match=first):
        store.commit(repo, {"a.txt": b"3"}, "three, from a stale view", parent_commit=first)
    assert store.resolve(repo) == second and store.read_file(repo, "a.txt") == b"2"


def test_concurrent_commits_to_two_branches_both_land(store, repo):
    barrier, shas, errors = threading.Barrier(2), {}, []

    def work(branch):
        try:
            barrier.wait(timeout=10)
            shas[branch] = store.commit(repo, {f"{branch}.txt": branch.encode()}, f"commit on {branch}", branch)
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(b,)) for b in ("left", "right")]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    branches = store.list_refs(repo)["branches"]
    assert branches["left"] == shas["left"] and branches["right"] == shas["right"]
    assert store.read_file(repo, "left.txt", "left") == b"left"
    assert "left.txt" not in store.list_files(repo, "right")


def test_concurrent_commits_to_one_branch_all_land(store, repo):
    errors = []

    def work(i):
        try:
            for j in range(2):
                store.commit(repo, {f"f{i}-{j}.txt": b"x"}, f"commit {i}-{j}")
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    assert {f"f{i}-{j}.txt" for i in range(3) for j in range(2)} <= set(store.list_files(repo))


def test_read_missing_file_names_it(store, repo, repo_id):
    store.commit(repo, {"present.txt": b"here"}, "one file")
    with pytest.raises(FileNotFoundError, match=rf"absent\.txt.*{repo_id}"):
        store.read_file(repo, "absent.txt")


def test_delete_files_and_folders(store, repo):
    store.commit(repo, {"keep.txt": b"k", "gone.txt": b"g", "dir/a.txt": b"a", "dir/b.txt": b"b"}, "add")
    store.commit(repo, {"new.txt": b"n"}, "delete some", delete=["gone.txt", "dir/"])
    assert store.list_files(repo) == [".gitattributes", "keep.txt", "new.txt"]
    with pytest.raises(FileNotFoundError, match="never.txt"):
        store.commit(repo, {}, "delete a missing file", delete=["never.txt"])


def test_upload_folder(store, repo, tmp_path):
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    (tmp_path / "ckpt" / ".git").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "ckpt" / "sub" / "model.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "ckpt" / ".git" / "HEAD").write_text("ref")
    sha = store.upload_folder(repo, tmp_path / "ckpt", "upload", revision="round-1")
    assert store.resolve(repo, "round-1") == sha
    assert store.list_files(repo, sha) == [".gitattributes", "config.json", "sub/model.safetensors"]
    with pytest.raises(NotADirectoryError, match="missing"):
        store.upload_folder(repo, tmp_path / "missing", "upload")


def test_bad_arguments_are_refused(store, repo):
    with pytest.raises(ValueError, match="repo_id"):
        store.create_repo("no-namespace")
    with pytest.raises(ValueError, match="path in repo"):
        store.commit(repo, {"../escape.txt": b"x"}, "bad path")
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        store.commit(repo, {"w.bin": "/nowhere.bin"}, "missing local file")


def test_parse_repo_ref_and_open_store(tmp_path, hub_server):
    assert parse_repo_ref("org/name") == ("org/name", None)
    assert parse_repo_ref("org/name@feature/x") == ("org/name", "feature/x")
    with pytest.raises(ValueError, match="@"):
        parse_repo_ref("org/name@")
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path.resolve()
    assert open_store("hub").endpoint == hub_server == open_store(None).endpoint
    assert open_store(hub_server).endpoint == hub_server
    assert open_store(str(tmp_path)).root == open_store(f"file://{tmp_path}").root
    store = open_store(tmp_path)
    assert open_store(store) is store  # a store is used as it is
    with pytest.raises(TypeError, match="store must be .* got a int without create_repo"):
        open_store(3)


def test_resolve_folder_prefers_a_local_folder(local_store, tmp_path, monkeypatch):
    local_store.create_repo("org/model")
    sha = local_store.commit("org/model", {"config.json": b"{}"}, "add")
    folder, revision = resolve_folder("org/model@main", local_store)
    assert revision == sha and (folder / "config.json").read_bytes() == b"{}"
    (tmp_path / "cwd" / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_folder("org/model", local_store) == (Path("org/model"), None)
    with pytest.raises(FileNotFoundError, match="the folder org/model/x does not exist"):
        resolve_folder("org/model/x", local_store)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_folder(Path("org/other"), local_store)  # a Path is a folder, never a Hub id
    with pytest.raises(ValueError, match="org/other is not a local folder"):
        resolve_folder("org/other", local_store)


def test_local_store_two_processes_commit_at_once(local_store):
    local_store.create_repo("tester/multi")
    # load hf_tna/hub on its own (it imports nothing else of hf_tna): the package import would cost seconds of torch
    script = textwrap.dedent(f"""
        import importlib, sys, types
        package = types.ModuleType("hub_alone")
        package.__path__ = [{str(ROOT / "hf_tna" / "hub")!r}]
        sys.modules["hub_alone"] = package
        store_module = importlib.import_module("hub_alone.local")
        store = store_module.LocalStore({str(local_store.root)!r})
        for i in range(8):
            store.commit("tester/multi", {{f"p{{sys.argv[1]}}-{{i}}.txt": b"x"}}, "commit")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(p)]) for p in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    files = local_store.list_files("tester/multi")
    assert {f"p{p}-{i}.txt" for p in range(2) for i in range(8)} <= set(files)
    sha, chain = local_store.resolve("tester/multi"), 0
    repo_dir = local_store._repo("tester/multi")
    while sha:  # 16 commits on top of the initial one, none lost
        chain, parents = chain + 1, local_store._manifest(repo_dir, sha)["parents"]
        sha = parents[0] if parents else None
    assert chain == 17


def test_huggingface_hub_client_downloads_by_revision(hub_store, repo_id, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    hub_store.create_repo(repo_id)
    v1 = hub_store.commit(repo_id, {"a.txt": b"one", "w.safetensors": b"\1" * 64}, "v1")
    hub_store.create_tag(repo_id, "v1", v1)
    hub_store.commit(repo_id, {"a.txt": b"two"}, "v2")
    for revision in (v1, "v1"):
        assert Path(hf_hub_download(repo_id, "a.txt", revision=revision)).read_bytes() == b"one"
    assert Path(hf_hub_download(repo_id, "a.txt")).read_bytes() == b"two"
    folder = Path(snapshot_download(repo_id, revision="v1", local_dir=tmp_path / "snap"))
    assert (folder / "w.safetensors").read_bytes() == b"\1" * 64 and (folder / "a.txt").read_bytes() == b"one"
    assert [c.title for c in HfApi().list_repo_commits(repo_id)] == ["v2", "v1", "initial commit"]


def test_transformers_model_roundtrip_at_revision(hub_store, repo_id, tmp_path):
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=16,
    )  # fmt: skip
    hub_store.create_repo(repo_id)
    shas, models = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(BertModel(config))
        models[-1].save_pretrained(tmp_path / f"m{seed}")
        shas.append(hub_store.upload_folder(repo_id, tmp_path / f"m{seed}", f"model {seed}"))
    assert "model.safetensors" in hub_store.list_files(repo_id, shas[0])
    for sha, model in zip(shas, models, strict=True):
        loaded = AutoModel.from_pretrained(repo_id, revision=sha)
        expected = model.state_dict()
        assert loaded.state_dict().keys() == expected.keys()
        assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())

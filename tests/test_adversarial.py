"""The standing adversarial suite: checkpoints, stores, manifests and numbers from people who need not be trusted.

One test per probe that once got through (issue "Hold up against untrusted inputs"), so none can regress; the
probes that already held are pinned in the feature suites (test_soup, test_store, test_coldfuse, ...) and listed
in the README's reliability section. Tiny models, everything in-process.
"""

import json
import math
import shutil
import struct

import pytest
import torch
from safetensors.torch import save_file

from hf_tna import cli, verify_anchors
from hf_tna.anchors import AnchorSpec, anchor_mask, build_layouts
from hf_tna.io import SAFE_WEIGHTS_INDEX_NAME, CheckpointReader, StreamingCheckpointReader, read_safetensors_header
from hf_tna.manifest import CONFIG_NAME, FORMAT_VERSION, TNAFileConfig, manifest_entry
from hf_tna.merge.ops import average_tensors, check_weights, interpolate_tensors
from hf_tna.merge.soup import build_soup
from tests.common import build_tiny_bert

SPEC = AnchorSpec(ratio=0.4, seed=3)


def _save(model, folder, spec=SPEC, shard=None):
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    manifest = {layout.name: manifest_entry(p, layout, spec) for layout, p in build_layouts(model, spec)}
    TNAFileConfig(spec, manifest, base_model="tiny-bert").save(folder)
    return folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    return [_save(build_tiny_bert(seed=0), root / f"m{i}", shard="4KB") for i in range(2)]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# --- 1. reading files outside the checkpoint -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["absolute", "parent", "subfolder", "symlink"])
def test_index_shard_names_must_stay_inside_the_checkpoint(pair, tmp_path, where):
    private = _save(build_tiny_bert(seed=7), tmp_path / "private")
    evil = _copy(pair[1], tmp_path / "evil")
    index = json.loads((evil / SAFE_WEIGHTS_INDEX_NAME).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    target = {
        "absolute": str(private / "model.safetensors"),
        "parent": "../private/model.safetensors",
        "subfolder": "sub/model.safetensors",
        "symlink": "link.safetensors",
    }[where]
    if where == "symlink":
        (evil / "link.safetensors").symlink_to(private / "model.safetensors")
    index["weight_map"] = {k: (target if v == shard else v) for k, v in index["weight_map"].items()}
    (evil / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index))
    for reader in (CheckpointReader, StreamingCheckpointReader):
        with pytest.raises(ValueError, match="shard"):
            reader(evil)
    with pytest.raises(ValueError, match="shard"):
        build_soup([pair[0], evil], tmp_path / "soup", progress=False)
    assert not (tmp_path / "soup").exists()


# --- 2. header offsets validated like safetensors --------------------------------------------------------------
def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + size :])


def _names_by_offset(header):
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


@pytest.mark.parametrize("attack", ["alias", "overlap", "gap", "past_end", "wrong_size", "bad_dtype", "bad_shape"])
def test_header_offsets_are_validated_before_use(tmp_path, attack):
    folder = _save(build_tiny_bert(seed=1), tmp_path / "m")
    path = folder / "model.safetensors"

    def edit(header):
        names = [n for n in _names_by_offset(header) if header[n]["shape"] == header[_names_by_offset(header)[0]]["shape"]]
        a, b = _names_by_offset(header)[:2]
        if attack == "alias":  # two same-shaped tensors read the same bytes
            x, y = [n for n in _names_by_offset(header) if header[n]["shape"] == [16]][:2]
            header[y]["data_offsets"] = list(header[x]["data_offsets"])
        elif attack == "overlap":
            header[b]["data_offsets"][0] -= 4
        elif attack == "gap":
            header[b]["data_offsets"] = [o + 4 for o in header[b]["data_offsets"]]
        elif attack == "past_end":
            last = _names_by_offset(header)[-1]
            header[last]["data_offsets"][1] += 4
        elif attack == "wrong_size":
            header[a]["shape"] = [header[a]["shape"][0] + 1, *header[a]["shape"][1:]]
        elif attack == "bad_dtype":
            header[a]["dtype"] = "F7"
        elif attack == "bad_shape":
            header[a]["shape"] = [-1]
        del names

    _rewrite_header(path, edit)
    with pytest.raises(ValueError, match=str(path)):
        read_safetensors_header(path)
    clean = _save(build_tiny_bert(seed=1), tmp_path / "clean")
    with pytest.raises(ValueError):
        build_soup([clean, folder], tmp_path / "soup", progress=False, verify=False)
    assert not (tmp_path / "soup").exists()


def test_header_length_bounds(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ValueError, match="header length"):
        read_safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 64) + b"{}")
    with pytest.raises(ValueError, match="runs past the file end"):
        read_safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_safetensors_header(path)


def test_a_valid_file_passes_as_safetensors_writes_it(tmp_path):
    tensors = {"a": torch.zeros(3, 2), "b": torch.ones(5, dtype=torch.bfloat16), "empty": torch.zeros(0)}
    save_file(tensors, tmp_path / "ok.safetensors", metadata={"format": "pt"})
    header, start, metadata = read_safetensors_header(tmp_path / "ok.safetensors")
    assert set(header) == set(tensors) and metadata == {"format": "pt"} and start % 8 == 0


# --- 3. LocalStore never writes outside its folder ---------------------------------------------------------------
@pytest.mark.parametrize("entry", ["../../../../outside.txt", "/tmp/abs.txt", "a/../../x.txt", "ok.txt"])
def test_local_store_refuses_commit_entries_outside_the_repo(tmp_path, entry):
    from hf_tna.hub import LocalStore

    store = LocalStore(tmp_path / "store")
    store.create_repo("org/repo")
    sha = store.commit("org/repo", {"model.txt": b"weights"}, "add")
    repo_dir = store._dir("org/repo")
    manifest_path = repo_dir / "commits" / f"{sha}.json"
    manifest = json.loads(manifest_path.read_text())
    blob = manifest["files"]["model.txt"]
    if entry == "ok.txt":  # a blob name that is a path: reads outside blobs/
        manifest["files"][entry] = {"sha256": "../../../../etc/hostname", "size": 1}
    else:
        manifest["files"][entry] = blob
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "download" / "deep" / "deeper"
    with pytest.raises(ValueError, match="store is corrupt|not a safe path"):
        store.download("org/repo", sha, local_dir=out)
    assert not (tmp_path / "download" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


def test_local_store_refuses_refs_that_are_not_shas(tmp_path):
    from hf_tna.hub import LocalStore

    store = LocalStore(tmp_path / "store")
    store.create_repo("org/repo")
    (store._dir("org/repo") / "refs" / "branches" / "main").write_text("../../../../somewhere")
    with pytest.raises(ValueError, match="not a commit sha"):
        store.list_files("org/repo")


# --- 5. resume checks the anchors whoever built the optimizer ----------------------------------------------------
def _resume_setup(tmp_path, users_optimizer=False):
    from transformers import TrainingArguments

    from hf_tna import TNATrainer, create_anchored_optimizer
    from tests.common import text_dataset

    kwargs = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-2, report_to="none",
        use_cpu=True, save_strategy="steps", save_steps=2, max_steps=2, logging_strategy="no", seed=0,
    )
    model = build_tiny_bert()
    optimizers = (create_anchored_optimizer(model, torch.optim.AdamW, SPEC, lr=1e-2), None) if users_optimizer else (None, None)
    TNATrainer(model=model, args=TrainingArguments(**kwargs), train_dataset=text_dataset(), anchor_spec=SPEC,
               optimizers=optimizers).train()
    return kwargs, tmp_path / "checkpoint-2"


def _edit_anchor(checkpoint, manifest_too: bool):
    from safetensors.torch import load_file

    path = checkpoint / "model.safetensors"
    weights = load_file(path)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    layout = next(layout for layout, _ in build_layouts(build_tiny_bert(), SPEC) if layout.name == name)
    weights[name][anchor_mask(layout, SPEC)] += 0.5
    save_file(weights, path, metadata={"format": "pt"})
    if manifest_too:  # a consistent edit: the manifest's sha follows the new values
        config = TNAFileConfig.load(checkpoint)
        config.manifest[name] = manifest_entry(weights[name], layout, SPEC)
        config.save(checkpoint)
    return name


@pytest.mark.parametrize("consistent", [False, True])
def test_resume_refuses_edited_anchors_with_the_users_anchored_optimizer(tmp_path, consistent):
    from transformers import TrainingArguments

    from hf_tna import TNATrainer, create_anchored_optimizer
    from tests.common import text_dataset

    kwargs, checkpoint = _resume_setup(tmp_path, users_optimizer=True)
    name = _edit_anchor(checkpoint, manifest_too=consistent)
    model = build_tiny_bert()  # the base, as in the usual resume
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, SPEC, lr=1e-2)
    trainer = TNATrainer(model=model, args=TrainingArguments(**{**kwargs, "max_steps": 4}),
                         train_dataset=text_dataset(), optimizers=(optimizer, None))
    assert trainer.anchor_spec == SPEC  # taken from the optimizer
    with pytest.raises(ValueError, match=f"tensor '{name}'"):
        trainer.train(resume_from_checkpoint=str(checkpoint))


def test_resume_with_the_users_optimizer_and_a_fresh_model_keeps_the_checkpoints_anchors(tmp_path):
    from transformers import TrainingArguments

    from hf_tna import TNATrainer, create_anchored_optimizer, verify_anchors
    from tests.common import text_dataset

    kwargs, checkpoint = _resume_setup(tmp_path, users_optimizer=True)
    model = build_tiny_bert(seed=9)  # another init: its anchor values must not be restored over the checkpoint's
    optimizer = create_anchored_optimizer(model, torch.optim.AdamW, SPEC, lr=1e-2)
    trainer = TNATrainer(model=model, args=TrainingArguments(**{**kwargs, "max_steps": 4, "save_steps": 4}),
                         train_dataset=text_dataset(), optimizers=(optimizer, None))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert verify_anchors(tmp_path / "checkpoint-4", checkpoint)["intact"]


# --- 6. finite in, finite out, or refused ------------------------------------------------------------------------
def test_averages_of_finite_extremes_stay_finite():
    from hf_tna.merge.ops import finite_or_wide, interpolate, uniform_soup

    a = torch.tensor([3e38, -3e38, 1.0, 0.0], dtype=torch.float32)
    b = torch.tensor([-3e38, 3e38, 1.0, -0.0], dtype=torch.float32)
    assert not torch.isfinite(average_tensors([a, b])).all()  # float32 math overflows: the reason for the fallback
    mean = finite_or_wide(lambda: average_tensors([a, b]))
    assert torch.isfinite(mean).all() and mean[0] == 0 and mean[1] == 0
    assert mean[2] == 1.0 and str(mean[3].item()) == "0.0"  # equal entries bitwise, signed zero of the first
    assert torch.isfinite(finite_or_wide(lambda: average_tensors([a, b], [1.0, 3.0]))).all()
    assert torch.isfinite(finite_or_wide(lambda: interpolate_tensors(a, b, 0.3))).all()
    assert torch.isfinite(uniform_soup([{"w": a}, {"w": b}])["w"]).all()
    assert torch.isfinite(interpolate({"w": a}, {"w": b}, 0.3)["w"]).all()


def test_a_soup_of_finite_extremes_is_finite_and_the_anchors_exact(tmp_path):
    from safetensors.torch import load_file

    folders = []
    for i, sign in enumerate((1.0, -1.0)):
        model = build_tiny_bert(seed=0)
        layout, param = next((lay, p) for lay, p in build_layouts(model, SPEC) if lay.name.endswith("query.weight"))
        free = (~anchor_mask(layout, SPEC)).nonzero()[0]
        with torch.no_grad():
            param[tuple(free)] = sign * 3e38  # one free entry, opposite extremes in the two ingredients
        folders.append(_save(model, tmp_path / f"x{i}"))
    build_soup(folders, tmp_path / "soup", progress=False)
    soup = load_file(tmp_path / "soup" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in soup.values() if t.is_floating_point())
    assert verify_anchors(tmp_path / "soup")["intact"]


def test_weights_whose_sum_overflows_or_alpha_not_finite_are_refused(pair, tmp_path):
    with pytest.raises(ValueError, match="overflow"):
        check_weights([1e308, 1.5e308], 2)
    with pytest.raises(ValueError, match="overflow"):
        build_soup(pair, tmp_path / "w", method="weighted", weights=[1e308, 1.5e308], progress=False)
    for alpha in ("nan", "inf"):
        code = cli.main(["interpolate", str(pair[0]), str(pair[1]), "--alpha", alpha, "-o", str(tmp_path / alpha)])
        assert code == 2  # a flag value the config refuses: bad usage
        assert not (tmp_path / alpha).exists()
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        interpolate_tensors(torch.zeros(2), torch.ones(2), math.nan)


# --- 8. format_version is read ------------------------------------------------------------------------------------
def test_a_newer_format_version_is_refused_with_a_message_to_upgrade(pair, tmp_path):
    folder = _copy(pair[0], tmp_path / "future")
    data = json.loads((folder / CONFIG_NAME).read_text())
    data["format_version"] = FORMAT_VERSION + 1
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="upgrade hf_tna"):
        TNAFileConfig.load(folder)
    del data["format_version"]  # files from before the field are version 1
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    assert TNAFileConfig.load(folder).spec == SPEC


# --- 10 (the store side). Who made a commit: the Hub knows (one user per token), a LocalStore cannot ----------
def test_hub_commits_record_the_user_of_the_token(hub_user, local_store):
    alice, bob = hub_user("alice"), hub_user("bob")
    alice.create_repo("org/authors")
    base = alice.resolve("org/authors")
    alice.commit("org/authors", {"a.txt": b"a"}, "alice's", revision="contrib/alice")
    bob.commit("org/authors", {"b.txt": b"b"}, "bob's on alice's branch", revision="contrib/alice")
    assert alice.commit_authors("org/authors", "contrib/alice", since=base) == ["bob", "alice"]
    assert alice.api.whoami()["name"] == "alice"
    local_store.create_repo("org/authors")
    assert local_store.commit_authors("org/authors") is None


# --- 11. nothing left behind ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_during_a_soup_leave_nothing(pair, tmp_path, monkeypatch, capsys, sig):
    import os
    import signal

    from hf_tna.io import ShardedSafetensorsWriter

    real = ShardedSafetensorsWriter.write_range
    calls = []

    def write_then_signal(self, *args, **kwargs):
        calls.append(1)
        real(self, *args, **kwargs)
        if len(calls) == 3:  # mid-way through the weights
            os.kill(os.getpid(), getattr(signal, sig))

    monkeypatch.setattr(ShardedSafetensorsWriter, "write_range", write_then_signal)
    out = tmp_path / "soups" / "soup"
    out.parent.mkdir()
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["soup", str(pair[0]), str(pair[1]), "-o", str(out), "--no-progress"])
    assert code == 128 + getattr(signal, sig)
    assert "interrupted" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []  # no output, no hidden temporary folder
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the command line's only


def test_cli_errors_are_one_line_with_the_traceback_behind_debug(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hf-tna verify: error: ") and err.count("\n") == 1 and "missing" in err
    with pytest.raises(Exception, match="missing"):
        cli.main(["verify", str(tmp_path / "missing"), "--debug"])
    assert cli.main(["--version"]) == 0 and "hf-tna" in capsys.readouterr().out


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run_never_a_live_one(pair, tmp_path):
    import os
    import signal

    from hf_tna.merge.writer import scratch_for
    from hf_tna.workspace import locked_scratch

    out = tmp_path / "soup"
    pid = os.fork()
    if pid == 0:  # a soup killed with SIGKILL while writing: no clean-up code runs
        with scratch_for(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"\0" * 4096)
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".soup.tmp-") and p.is_dir()]
    assert len(left) == 1 and (left[0] / "model.safetensors").exists()
    with locked_scratch(tmp_path, ".soup.tmp-") as live:  # a concurrent live run's folder
        build_soup(pair, out, progress=False)
        assert live.exists()
        assert not left[0].exists()  # the dead run's folder and its lock are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup"]


def test_coldfuse_scratch_of_a_dead_fuser_is_removed(tmp_path):
    import os
    import signal

    from hf_tna.workspace import locked_scratch

    pid = os.fork()
    if pid == 0:
        with locked_scratch(tmp_path, "coldfuse-fuse-"):
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert len(list(tmp_path.glob("coldfuse-fuse-*"))) == 2  # the folder and its lock
    with locked_scratch(tmp_path, "coldfuse-fuse-") as mine:
        assert sorted(tmp_path.glob("coldfuse-fuse-*")) == sorted([mine, tmp_path / f"{mine.name}.lock"])
    assert list(tmp_path.iterdir()) == []


# --- 6/7 (outputs). Only floating output dtypes; a non-finite result is never published -----------------------
@pytest.mark.parametrize("dtype", ["int8", "bool", "int64", "uint8"])
def test_non_float_output_dtypes_are_refused(pair, tmp_path, dtype):
    with pytest.raises(ValueError, match="not a floating type"):
        build_soup(pair, tmp_path / "soup", dtype=dtype, progress=False)
    assert cli.main(["soup", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "cli"), "--dtype", dtype]) in (1, 2)
    assert not (tmp_path / "soup").exists() and not (tmp_path / "cli").exists()


def test_extrapolating_weights_that_overflow_the_output_dtype_are_refused(tmp_path):
    a, b = build_tiny_bert(seed=1), build_tiny_bert(seed=2)
    with torch.no_grad():
        next(b.parameters()).fill_(6e4)  # near float16's limit: -1/+2 weights extrapolate past it
    folders = [tmp_path / "m0", tmp_path / "m1"]
    a.save_pretrained(folders[0])
    b.save_pretrained(folders[1])
    with pytest.raises(ValueError, match="NaN/inf"), pytest.warns(UserWarning, match="un-anchored"):
        build_soup(folders, tmp_path / "soup", method="weighted", weights=[-1.0, 2.0], dtype="float16",
                   progress=False, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0", "m1"]


# --- 9/10. ColD fusion between parties who need not trust each other -----------------------------------------
def _cold_contribution(store, repo_id, name, tmp_path, shift, meta_update=None, pusher=None):
    """A contribution of `name` to round 0: the base body with every free entry moved by `shift`."""
    from safetensors.torch import load_file

    from hf_tna.anchors import AnchorSelection
    from hf_tna.coldfuse.repo import STATE_FORMAT, STATE_NAME, load_round_base
    from hf_tna.coldfuse.runner import publish_contribution
    from hf_tna.manifest import layout_from_manifest

    base = load_round_base(store, repo_id, 0)
    out = tmp_path / f"{name}-{shift}"
    shutil.copytree(base.folder, out, ignore=shutil.ignore_patterns(STATE_NAME, "README.md", ".gitattributes"))
    tensors = load_file(out / "model.safetensors")
    for key, entry in base.tna.manifest.items():
        anchored = AnchorSelection(layout_from_manifest(key, entry), base.spec).dense_mask()
        tensors[key] = torch.where(anchored, tensors[key], tensors[key] + shift)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    meta = {"format": STATE_FORMAT, "base_repo": repo_id, "round": 0, "base_revision": base.sha,
            "anchor_spec": base.spec.to_dict(), "task": name, "num_examples": 10, **(meta_update or {})}
    return publish_contribution(pusher or store, repo_id, 0, name, out, meta)


def test_contributors_cannot_speak_for_each_other_on_the_hub(hub_user, tmp_path):
    from hf_tna.coldfuse.fuser import fuse_round
    from hf_tna.coldfuse.runner import init_coldfuse

    fuser, alice = hub_user("fuser"), hub_user("alice")
    repo = "cold/trust"
    init_coldfuse(fuser, repo, build_tiny_bert(2), anchor_spec=SPEC)
    _cold_contribution(fuser, repo, "alice", tmp_path, 0.01, pusher=alice)
    _cold_contribution(fuser, repo, "bob", tmp_path, 0.02, pusher=alice)  # Alice on Bob's branch
    _cold_contribution(fuser, repo, "alice2", tmp_path, 0.03, pusher=alice)  # Alice again, under a second name
    _cold_contribution(fuser, repo, "carol", tmp_path, 0.01, pusher=hub_user("carol"))  # a copy of Alice's bytes
    report = fuse_round(fuser, repo, 0)
    assert [row["contributor"] for row in report["accepted"]] == ["alice"]
    reasons = {row["contributor"]: row["reason"] for row in report["rejected"]}
    assert "commits by alice" in reasons["bob"] and "commits by alice" in reasons["alice2"]
    assert "byte-identical to those of alice's" in reasons["carol"]


def test_metadata_must_name_the_branchs_contributor(local_store, tmp_path):
    from hf_tna.coldfuse.fuser import fuse_round
    from hf_tna.coldfuse.runner import init_coldfuse

    init_coldfuse(local_store, "cold/meta", build_tiny_bert(2), anchor_spec=SPEC)
    _cold_contribution(local_store, "cold/meta", "alice", tmp_path, 0.01)
    with pytest.raises(ValueError, match="a contribution speaks for its own contributor only"):
        _cold_contribution(local_store, "cold/meta", "bob", tmp_path, 0.02, meta_update={"contributor": "alice"})
    report = fuse_round(local_store, "cold/meta", 0)  # a LocalStore reports no authors: names must still agree
    assert [row["contributor"] for row in report["accepted"]] == ["alice"]


def test_the_loser_of_a_fuser_race_reports_already_fused(local_store, tmp_path, monkeypatch):
    from hf_tna.coldfuse import fuser as fuser_module
    from hf_tna.coldfuse.runner import init_coldfuse

    init_coldfuse(local_store, "cold/race", build_tiny_bert(2), anchor_spec=SPEC)
    for i, name in enumerate(("alice", "bob")):
        _cold_contribution(local_store, "cold/race", name, tmp_path, 0.01 * (i + 1))
    real = fuser_module.write_fused_base
    state = {"raced": False}

    def write_then_lose_the_race(*args, **kwargs):
        real(*args, **kwargs)
        if not state["raced"]:  # a second fuser, started a moment later, commits first
            state["raced"] = True
            assert fuser_module.fuse_round(local_store, "cold/race", 0)["status"] == "fused"

    monkeypatch.setattr(fuser_module, "write_fused_base", write_then_lose_the_race)
    report = fuser_module.fuse_round(local_store, "cold/race", 0)
    assert report["status"] == "already-fused" and len(report["accepted"]) == 2
    assert sum(1 for t in local_store.list_refs("cold/race")["tags"] if t == "round-1") == 1


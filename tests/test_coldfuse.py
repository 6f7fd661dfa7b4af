"""ColD fusion through a store: contributors and fuser against the loopback Hub test server and a LocalStore.

Protocol tests use a tiny BERT built from a config (pre-tokenised rows, a few optimizer steps). The
example's quick mode (real MiniLM, real tasks, contributors under `accelerate launch`) is the slow test.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_tna import cli
from hf_tna.anchors import AnchorSpec, anchor_mask
from hf_tna.coldfuse.contributor import ContributionConfig, TaskData, train_contribution
from hf_tna.coldfuse.fuser import fuse_round
from hf_tna.coldfuse.repo import (
    CONTRIBUTION_NAME,
    STATE_NAME,
    contribution_branch,
    load_round_base,
    read_state,
    round_tag,
)
from hf_tna.coldfuse.runner import (
    contribute,
    init_coldfuse,
    publish_contribution,
    run_coldfuse,
)
from hf_tna.manifest import TNAFileConfig, layout_from_manifest
from hf_tna.merge.ops import average_tensors
from hf_tna.verify import verify_anchors
from tests.common import build_tiny_bert, build_tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
SPEC = AnchorSpec(ratio=0.4, seed=3)
TRAIN = ContributionConfig(max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=5e-3,
                           max_eval_samples=8)
CONTRIB_FILES = {".gitattributes", "config.json", "model.safetensors", "tna_config.json", CONTRIBUTION_NAME}


def tiny_task(name: str, num_labels: int, n: int = 24, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, 8), generator=g).tolist()
    labels = torch.randint(0, num_labels, (n,), generator=g).tolist()
    rows = [{"input_ids": x, "label": y} for x, y in zip(ids, labels)]
    return TaskData(name, rows[: n - 8], rows[n - 8:], [f"{name}-{i}" for i in range(num_labels)])


TASKS = {"alice": tiny_task("sentiment", 3, 24, 1), "bob": tiny_task("topic", 21, 40, 2),
         "carol": tiny_task("language", 2, 32, 3)}


@pytest.fixture(params=["local", "hub"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def repo_id(request):
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", request.node.name).strip("-")[:50]
    return f"coldfuse/{name}-{uuid.uuid4().hex[:8]}"


def _tensors(store, repo, revision):
    folder, _ = store.download(repo, revision)
    return load_file(str(Path(folder) / "model.safetensors")), Path(folder)


def test_two_rounds_three_contributors(store, repo_id):
    events = []
    run = run_coldfuse(store, repo_id, build_tiny_bert(2), TASKS, rounds=2, anchor_spec=SPEC, redraw_anchors=True,
                       weighting="examples", training=TRAIN, base_model="tiny/bert",
                       callback=lambda event, info: events.append((event, info.get("round"))))
    assert [e for e, _ in events] == ["contributed"] * 3 + ["fused"] + ["contributed"] * 3 + ["fused"]
    tags = store.list_refs(repo_id)["tags"]
    assert {round_tag(r) for r in range(3)} <= set(tags) and run["revision"] == tags["round-2"]
    assert store.resolve(repo_id, "main") == tags["round-2"]
    for r in range(2):
        base = load_round_base(store, repo_id, r)
        nxt = load_round_base(store, repo_id, r + 1)
        assert base.spec == SPEC.for_round(r) and nxt.state["parent_revision"] == base.sha
        rows = nxt.state["contributions"]
        assert sorted(row["contributor"] for row in rows) == ["alice", "bob", "carol"]
        branches = store.list_refs(repo_id)["branches"]
        weights, contribs = [], []
        for row in rows:  # pinned by sha, exactly the branch head; body only, no head tensors
            repo, sha = row["ingredient"].split("@")
            assert repo == repo_id and sha == branches[contribution_branch(r, row["contributor"])]
            assert set(store.list_files(repo, sha)) == CONTRIB_FILES
            tensors, folder = _tensors(store, repo, sha)
            assert not any("classifier" in k for k in tensors)
            assert verify_anchors(folder, base.folder, spec=base.spec)["intact"]
            weights.append(row["num_examples"])
            contribs.append(tensors)
        assert sorted(weights) == [16, 24, 32] and abs(sum(row["weight"] for row in rows) - 1) < 1e-9
        fused, _ = _tensors(store, repo_id, nxt.sha)
        base_tensors, _ = _tensors(store, repo_id, base.sha)
        for key, tensor in fused.items():  # the fused base is the example-weighted average, bitwise
            assert torch.equal(tensor, average_tensors([c[key] for c in contribs], weights)), key
        # anchored entries of this round survive fusion bitwise; free entries moved
        assert verify_anchors(nxt.folder, base.folder, spec=base.spec, config=base.tna)["intact"]
        key = "encoder.layer.0.attention.self.query.weight"
        mask = anchor_mask(layout_from_manifest(key, base.tna.manifest[key]), base.spec)
        assert not torch.equal(fused[key][~mask], base_tensors[key][~mask])
        assert TNAFileConfig.load(nxt.folder).spec == SPEC.for_round(r + 1)  # re-drawn mask for the next round
    card = (nxt.folder / "README.md").read_text()
    meta = card.split("---")[1]
    assert "base_model_relation: merge" in meta and "tiny/bert" in meta
    for row in rows:
        assert f"`{row['ingredient']}`" in card and row["task"] in card
    # fusing a finished round again changes nothing; re-running the finished run trains nothing
    refs = store.list_refs(repo_id)
    again = fuse_round(store, repo_id, 1)
    assert again["status"] == "already-fused" and again["revision"] == tags["round-2"]
    rerun = run_coldfuse(store, repo_id, build_tiny_bert(2), TASKS, rounds=2, anchor_spec=SPEC, redraw_anchors=True,
                         weighting="examples", training=TRAIN)
    assert rerun["contributions"] == [] and rerun["revision"] == run["revision"]
    assert store.list_refs(repo_id) == refs
    with pytest.raises(ValueError, match="round 1 of .* is closed"):
        contribute(store, repo_id, TASKS["alice"], "alice", round=1, training=TRAIN)
    with pytest.raises(ValueError, match="other settings"):
        init_coldfuse(store, repo_id, build_tiny_bert(2), anchor_spec=AnchorSpec(ratio=0.2))


def _bad_contributions(store, repo_id, good, tmp_path):
    """Publish one contribution per refusal, derived from the good one; return {name: expected reason}."""
    folder, _ = store.download(repo_id, good["sha"])
    meta = json.loads((Path(folder) / CONTRIBUTION_NAME).read_text())
    tensors = load_file(str(Path(folder) / "model.safetensors"))
    base = load_round_base(store, repo_id, 0)
    key = "encoder.layer.0.attention.self.query.weight"
    mask = anchor_mask(layout_from_manifest(key, base.tna.manifest[key]), base.spec)

    def publish(name, weights=None, meta_update=None, config=None):
        out = tmp_path / name
        shutil.copytree(folder, out, ignore=shutil.ignore_patterns(CONTRIBUTION_NAME, ".gitattributes"))
        if weights is not None:
            save_file(weights, str(out / "model.safetensors"))
        if config is not None:
            for p in ("config.json", "model.safetensors"):
                (out / p).unlink()
            config.save_pretrained(out)
        publish_contribution(store, repo_id, 0, name, out, {**meta, "contributor": name, **(meta_update or {})})

    publish("stale", meta_update={"base_revision": good["sha"]})  # a real commit, not this round's base
    publish("otherspec", meta_update={"anchor_spec": {**SPEC.to_dict(), "seed": 99}})
    drifted = dict(tensors)
    drifted[key] = tensors[key] + 1.0
    publish("drifted", drifted)
    nan = dict(tensors)
    nan[key] = tensors[key].clone()
    nan[key][~mask] = float("nan")
    publish("nan", nan)
    publish("gpt2", config=build_tiny_gpt2().base_model)
    wide = build_tiny_bert(2)
    wide.config.intermediate_size = 48
    publish("wider", config=type(wide)(wide.config).base_model)
    return {
        "stale": rf"started from base revision {good['sha'][:12]}, but round 0's base is [0-9a-f]{{12}}",
        "otherspec": r"anchored with another spec than round 0 \(seed=99 instead of 3\)",
        "drifted": rf"anchored entries of tensor '{key}' drifted from the base",
        "nan": rf"tensor '{key}' holds \d+ NaN/inf value\(s\)",
        "gpt2": r"is a gpt2 \['GPT2Model'\], the base a bert \['BertModel'\]",
        "wider": r"tensor 'encoder.layer.0.intermediate.dense.bias' has shape \(48,\), the base has \(32,\)",
    }


def test_each_refusal_is_stated(store, repo_id, tmp_path):
    init_coldfuse(store, repo_id, build_tiny_bert(2), anchor_spec=SPEC)
    good = contribute(store, repo_id, TASKS["alice"], "alice", training=TRAIN)
    expected = _bad_contributions(store, repo_id, good, tmp_path)
    report = fuse_round(store, repo_id, 0, verify_authors=False)  # one test account plays every contributor
    assert [row["contributor"] for row in report["accepted"]] == ["alice"]
    reasons = {row["contributor"]: row["reason"] for row in report["rejected"]}
    assert set(reasons) == set(expected)
    for name, pattern in expected.items():
        assert re.search(pattern, reasons[name]), (name, reasons[name])
    state = read_state(store, repo_id, round_tag(1))
    assert {r["contributor"] for r in state["rejected"]} == set(expected)  # recorded with the round
    card = store.read_file(repo_id, "README.md", round_tag(1)).decode()
    assert "## Rejected contributions" in card and "drifted from the base" in card
    fused, _ = _tensors(store, repo_id, round_tag(1))  # the average of one contribution is that contribution
    alone, _ = _tensors(store, repo_id, good["sha"])
    assert all(torch.equal(fused[k], alone[k]) for k in alone)


def test_no_valid_contribution_writes_nothing(local_store, repo_id, tmp_path):
    init_coldfuse(local_store, repo_id, build_tiny_bert(2), anchor_spec=SPEC)
    good = contribute(local_store, repo_id, TASKS["alice"], "alice", training=TRAIN)
    folder, _ = local_store.download(repo_id, good["sha"])
    meta = json.loads((Path(folder) / CONTRIBUTION_NAME).read_text())
    publish_contribution(local_store, repo_id, 0, "alice", folder, {**meta, "base_revision": "f" * 40})
    main = local_store.resolve(repo_id, "main")
    with pytest.raises(ValueError, match=r"0 valid contribution\(s\), at least 1 needed .*alice: started from"):
        fuse_round(local_store, repo_id, 0)
    assert local_store.resolve(repo_id, "main") == main and round_tag(1) not in local_store.list_refs(repo_id)["tags"]


def test_resume_after_crash_between_uploads(store, repo_id, monkeypatch):
    import hf_tna.coldfuse.runner as run_module

    trained = []
    real_train = run_module.train_contribution

    def counting_train(*args, **kwargs):
        trained.append(args[1].name)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_contribution", counting_train)

    def crash_after_first_upload(event, info):
        if event == "contributed" and info["contributor"] == "alice":
            raise RuntimeError("injected crash")

    kwargs = dict(rounds=1, anchor_spec=SPEC, training=TRAIN)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_coldfuse(store, repo_id, build_tiny_bert(2), TASKS, callback=crash_after_first_upload, **kwargs)
    alice_sha = store.resolve(repo_id, contribution_branch(0, "alice"))
    # the fuser crashes too, between its commit on main and the round tag
    real_tag = store.create_tag

    def crash_on_round_tag(repo, tag, revision="main", exist_ok=False):
        if tag == round_tag(1):
            raise ConnectionError("injected crash before tagging")
        return real_tag(repo, tag, revision=revision, exist_ok=exist_ok)

    monkeypatch.setattr(store, "create_tag", crash_on_round_tag)
    with pytest.raises(ConnectionError):
        run_coldfuse(store, repo_id, build_tiny_bert(2), TASKS, **kwargs)
    monkeypatch.setattr(store, "create_tag", real_tag)
    fused_main = store.resolve(repo_id, "main")
    result = run_coldfuse(store, repo_id, build_tiny_bert(2), TASKS, **kwargs)
    assert result["rounds"][0]["status"] == "tagged" and result["revision"] == fused_main
    assert store.resolve(repo_id, "main") == fused_main  # no second fusion commit
    assert sorted(trained) == ["language", "sentiment", "topic"]  # nobody trained twice, nobody lost
    rows = read_state(store, repo_id, round_tag(1))["contributions"]
    assert sorted(r["contributor"] for r in rows) == ["alice", "bob", "carol"]
    assert f"{repo_id}@{alice_sha}" in {r["ingredient"] for r in rows}


def test_concurrent_contributions_all_land(store, repo_id, tmp_path):
    init_coldfuse(store, repo_id, build_tiny_bert(2), anchor_spec=SPEC)
    base = load_round_base(store, repo_id, 0)
    folders = {}
    for name in ("alice", "bob", "carol"):
        result = train_contribution(base.folder, TASKS[name], base.spec, tmp_path / name, TRAIN, 0, repo_id, base.sha)
        folders[name] = (result["folder"], {"format": "hf_tna-coldfuse-v1", "base_repo": repo_id, "round": 0,
                                            "base_revision": base.sha, "anchor_spec": base.spec.to_dict(),
                                            "task": TASKS[name].name, "num_examples": result["num_examples"]})
    barrier, errors = threading.Barrier(3), []

    def push(name):
        try:
            barrier.wait()
            own = f"{repo_id}-{name}" if name == "carol" else None  # carol publishes in a repository of her own
            publish_contribution(store, repo_id, 0, name, folders[name][0], folders[name][1], contrib_repo=own)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=push, args=(n,)) for n in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = fuse_round(store, repo_id, 0, extra_contributions=[f"{repo_id}-carol@contrib/round-0/carol"],
                        verify_authors=False)
    assert sorted(r["contributor"] for r in report["accepted"]) == ["alice", "bob", "carol"]
    assert report["rejected"] == []
    carol = store.resolve(f"{repo_id}-carol", "contrib/round-0/carol")
    assert f"{repo_id}-carol@{carol}" in {r["ingredient"] for r in report["accepted"]}


def _tiny_text_model(folder: Path) -> Path:
    from transformers import BertTokenizerFast

    words = ["good", "bad", "fine", "awful", "great", "poor", "cat", "dog", "car", "sun", "rain", "tree"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    build_tiny_bert(2).save_pretrained(folder)
    return folder


def test_cli_init_contribute_fuse_status(tmp_path, capsys):
    model = _tiny_text_model(tmp_path / "tiny")
    store = str(tmp_path / "store")
    base = "coldfuse/cli"
    rows = [("good fine great", "pos"), ("bad awful poor", "neg"), ("great good", "pos"), ("poor bad", "neg")] * 6
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    assert cli.main(["coldfuse", "init", "--store", store, "--base", base, "--model", str(model),
                     "--anchor-ratio", "0.3", "--weighting", "examples"]) == 0
    for seed, name in enumerate(("ann", "ben")):  # two seeds: byte-identical uploads would count once
        assert cli.main(["coldfuse", "contribute", "--store", store, "--base", base, "--contributor", name,
                         "--task", "polarity", "--train-data", str(tmp_path / "train.csv"), "--max-steps", "2",
                         "--per_device_train_batch_size", "4", "--max_length", "8", "--seed", str(seed)]) == 0
    capsys.readouterr()
    assert cli.main(["coldfuse", "status", "--store", store, "--base", base]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["round"] == 0 and {p["contributor"] for p in status["pending"]} == {"ann", "ben"}
    assert cli.main(["coldfuse", "fuse", "--store", store, "--base", base]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "fused" and len(report["accepted"]) == 2
    assert report["accepted"][0]["metrics"]["eval_examples"] == 5
    assert cli.main(["coldfuse", "fuse", "--store", store, "--base", base, "--round", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already-fused"
    other_rows = [("fine good", "pos"), ("awful", "neg")] * 8  # another task: identical uploads count once
    (tmp_path / "mood.csv").write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in other_rows) + "\n")
    for argv in (["coldfuse"], ["coldfuse", "run"]):  # a whole run; `run` is the default action
        other = f"coldfuse/cli-{len(argv)}"
        assert cli.main([*argv, "--store", store, "--base", other, "--model", str(model), "--rounds", "1",
                         "--task", f"polarity={tmp_path / 'train.csv'}", "--task", f"mood={tmp_path / 'mood.csv'}",
                         "--max-steps", "1", "--per-device-train-batch-size", "4", "--max-length", "8"]) == 0
        run = json.loads(capsys.readouterr().out)
        assert run["rounds"][0]["status"] == "fused" and len(run["rounds"][0]["accepted"]) == 2


@pytest.mark.parametrize("argv", [["coldfuse"], ["coldfuse", "run"], ["coldfuse", "init"], ["coldfuse", "contribute"],
                                  ["coldfuse", "fuse"], ["coldfuse", "status"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "coldfuse" in capsys.readouterr().out


@pytest.mark.slow
def test_example_quick_mode(hub_server, tmp_path):
    """examples/coldfuse in --quick mode: MiniLM, real offline tasks, contributors under `accelerate launch`,
    against the loopback Hub test server."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples/coldfuse/run_coldfuse.py"), "--quick",
                             "--store", hub_server, "--output-dir", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=560)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the contributors too: they are in the same session
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["quick"] is True
    assert {row["model"] for row in results["final"]} == {"pretrained", "vanilla", "tna"}
    assert (out / "coldfuse_rounds.png").exists()
    state = json.loads((out / "final_state_tna.json").read_text())
    assert state["round"] == results["settings"]["rounds"] and len(state["contributions"]) == 3
    assert STATE_NAME  # the state file name the example reads

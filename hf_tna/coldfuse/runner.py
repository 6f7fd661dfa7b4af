"""ColD fusion runs: initialise a base repository, contribute, and drive whole runs in one process."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..anchors import AnchorSpec, build_layouts
from ..hub import DEFAULT_BRANCH, StaleParentError, folder_files, open_store
from ..manifest import TNAFileConfig, manifest_entry
from .card import model_card
from .contributor import ContributionConfig, TaskData, train_contribution
from .fuser import _record, fuse_round
from .repo import (
    CONTRIBUTION_NAME,
    STATE_FORMAT,
    STATE_NAME,
    WEIGHTINGS,
    _json,
    contribution_branch,
    gather_contributions,
    latest_round,
    load_round_base,
    read_json_file,
    round_tag,
)


def _commit_exact(store, repo_id: str, files: dict, message: str, branch: str, retries: int = 3) -> str:
    """Make `branch` hold exactly `files` (plus `.gitattributes`), parent-pinned; retried when raced."""
    for attempt in range(retries + 1):
        head = store.resolve(repo_id, branch)
        stale = [p for p in store.list_files(repo_id, head) if p not in files and p != ".gitattributes"]
        try:
            return store.commit(repo_id, files, message, revision=branch, parent_commit=head, delete=stale)
        except StaleParentError:
            if attempt == retries:
                raise
            time.sleep(0.05 * (attempt + 1))


# --------------------------------------------------------------------------------------------------
# Initialising the base repository (round 0)
# --------------------------------------------------------------------------------------------------
def init_coldfuse(store, repo_id: str, model, tokenizer=None, anchor_spec: AnchorSpec | None = None,
                  redraw_anchors: bool = False, weighting: str = "uniform", base_model: str | None = None) -> dict:
    """Create the base repository with round 0's base: the body of `model` (a path, a Hub id or a
    `PreTrainedModel`), its tokenizer, `tna_config.json`, `coldfuse_state.json` and card; tag `round-0`.

    Idempotent: a repository already initialised with the same settings is left as it is.
    """
    store = open_store(store)
    spec = (anchor_spec or AnchorSpec()).for_round(0) if redraw_anchors else (anchor_spec or AnchorSpec())
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    settings = {"anchor_spec": spec.to_dict(), "redraw_anchors": bool(redraw_anchors), "weighting": weighting}
    store.create_repo(repo_id, exist_ok=True)
    tags = store.list_refs(repo_id)["tags"]
    head = store.resolve(repo_id, DEFAULT_BRANCH)
    existing = read_json_file(store, repo_id, STATE_NAME, tags.get(round_tag(0), head))
    if existing is not None:
        differ = {k: (existing.get(k), v) for k, v in settings.items() if existing.get(k) != v}
        if differ:
            raise ValueError(f"{repo_id} is already a ColD fusion base with other settings {differ} (theirs, yours); "
                             "use another repository or the existing settings")
        if round_tag(0) not in tags:
            store.create_tag(repo_id, round_tag(0), revision=head, exist_ok=True)
        return {"status": "exists", "repo_id": repo_id, "revision": store.resolve(repo_id, round_tag(0))}
    body, tokenizer, origin = _load_body(model, tokenizer)
    origin = base_model or origin
    state = {"format": STATE_FORMAT, "round": 0, **settings, "round_anchor_spec": spec.to_dict(),
             "base_model": origin, "parent_revision": None, "contributions": [], "rejected": [], "history": []}
    with tempfile.TemporaryDirectory(prefix="coldfuse-init-") as tmp:
        out = Path(tmp)
        body.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        manifest = {layout.name: manifest_entry(p, layout, spec) for layout, p in build_layouts(body, spec)}
        TNAFileConfig(spec, manifest, origin, None).save(out)
        (out / STATE_NAME).write_bytes(_json(state))
        (out / "README.md").write_text(model_card(repo_id, state))
        sha = _commit_exact(store, repo_id, folder_files(out), "ColD fusion: base of round 0", DEFAULT_BRANCH, 0)
    store.create_tag(repo_id, round_tag(0), revision=sha, exist_ok=True)
    return {"status": "created", "repo_id": repo_id, "revision": sha}


def _load_body(model, tokenizer):
    """(body model, tokenizer, origin name): a task model's `base_model`, or `AutoModel` of a path/Hub id."""
    if isinstance(model, (str, Path)):
        from transformers import AutoModel, AutoTokenizer

        body = AutoModel.from_pretrained(str(model))
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(model))
            except (OSError, ValueError):
                tokenizer = None
        origin = str(model) if not Path(str(model)).exists() else None
        return body, tokenizer, origin
    body = getattr(model, "base_model", model)
    return body, tokenizer, None


# --------------------------------------------------------------------------------------------------
# Contributing
# --------------------------------------------------------------------------------------------------
def publish_contribution(store, repo_id: str, round: int, contributor: str, folder, metadata: dict,
                         contrib_repo: str | None = None, head_folder=None) -> dict:
    """Upload a body folder and its `coldfuse_contribution.json` to branch `contrib/round-R/<contributor>`.

    The branch lives in the base repository (created from the round's base commit) or in the
    contributor's own `contrib_repo`. Only this contributor writes it; a re-upload replaces its files.
    """
    store = open_store(store)
    branch = contribution_branch(round, contributor)
    repo = contrib_repo or repo_id
    if repo != repo_id:
        store.create_repo(repo, exist_ok=True)
    if branch not in store.list_refs(repo)["branches"]:
        start = metadata.get("base_revision") if repo == repo_id else None
        store.create_branch(repo, branch, revision=start, exist_ok=True)
    files = dict(folder_files(folder))
    if head_folder is not None:
        files.update({f"head/{p}": src for p, src in folder_files(head_folder).items()})
    if metadata.get("contributor", contributor) != contributor:
        raise ValueError(f"metadata names contributor {metadata['contributor']!r}, but this is {contributor!r}'s "
                         "contribution: a contribution speaks for its own contributor only")
    files[CONTRIBUTION_NAME] = _json({**metadata, "contributor": contributor})
    sha = _commit_exact(store, repo, files, f"ColD fusion round {round}: contribution of {contributor} "
                        f"({metadata.get('task')})", branch)
    return {"repo": repo, "ref": branch, "sha": sha, "ingredient": f"{repo}@{sha}"}


def find_contribution(store, repo: str, round: int, contributor: str) -> dict | None:
    """The metadata (with its sha) already on a contributor's branch, or None."""
    branch = contribution_branch(round, contributor)
    sha = store.list_refs(repo)["branches"].get(branch)
    meta = read_json_file(store, repo, CONTRIBUTION_NAME, sha) if sha else None
    return {**meta, "sha": sha} if meta else None


def contribute(store, repo_id: str, task: TaskData, contributor: str | None = None, round: int | None = None,
               training: ContributionConfig | None = None, contrib_repo: str | None = None,
               upload_head: bool = False, overwrite: bool = False, work_dir=None) -> dict:
    """Fine-tune round R's base on `task` (TNATrainer, the round's anchors on the body, a fresh head) and
    publish the body with its metadata. Skipped (status "exists") when this contributor already published
    a contribution from this round's base revision, unless `overwrite`."""
    store = open_store(store)
    training = training or ContributionConfig()
    contributor = contributor or task.name
    round = latest_round(store, repo_id) if round is None else int(round)
    if round_tag(round + 1) in store.list_refs(repo_id)["tags"]:
        raise ValueError(f"round {round} of {repo_id} is closed (fused into {round_tag(round + 1)}); contribute "
                         f"to the latest round, {latest_round(store, repo_id)}")
    base = load_round_base(store, repo_id, round, download=False)
    done = find_contribution(store, contrib_repo or repo_id, round, contributor)
    if done and done.get("base_revision") == base.sha and not overwrite:
        return {"status": "exists", "repo": contrib_repo or repo_id, "ref": contribution_branch(round, contributor),
                "sha": done["sha"], "metrics": done.get("metrics"), "round": round}
    base = load_round_base(store, repo_id, round)
    work = Path(tempfile.mkdtemp(prefix=f"coldfuse-{contributor}-", dir=work_dir))
    try:
        result = train_contribution(base.folder, task, base.spec, work, training, round, repo_id, base.sha)
        if int(os.environ.get("RANK", "0")) != 0:  # under DDP every rank trains, the main process publishes
            return {"status": "trained", "metrics": result["metrics"], "round": round}
        head_folder = None
        if upload_head:
            from safetensors.torch import save_file

            head_folder = work / "head"
            head_folder.mkdir()
            save_file({k: v.contiguous() for k, v in result["head"].items()}, str(head_folder / "model.safetensors"))
        metadata = {"format": STATE_FORMAT, "base_repo": repo_id, "base_revision": base.sha, "round": round,
                    "contributor": contributor, "task": task.name, "num_labels": len(result["labels"]),
                    "labels": result["labels"], "num_examples": result["num_examples"], "metrics": result["metrics"],
                    "anchor_spec": base.spec.to_dict(), "training": training.to_dict(), "head_uploaded": upload_head}
        published = publish_contribution(store, repo_id, round, contributor, result["folder"], metadata,
                                         contrib_repo, head_folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"status": "published", **published, "metrics": result["metrics"], "round": round}


# --------------------------------------------------------------------------------------------------
# A whole run in one process
# --------------------------------------------------------------------------------------------------
def run_coldfuse(store, repo_id: str, model, contributors, rounds: int = 3, anchor_spec: AnchorSpec | None = None,
                 redraw_anchors: bool = False, weighting: str = "uniform", training: ContributionConfig | None = None,
                 tokenizer=None, base_model: str | None = None, min_contributions: int = 1, callback=None,
                 work_dir=None) -> dict:
    """Drive `rounds` rounds of ColD fusion in one process: initialise the base repository (or reuse it),
    then each round let every contributor contribute and fuse. Resumable: rounds already fused and
    contributions already published are skipped, so re-running after a crash finishes the run.

    `contributors`: a dict ``name -> TaskData`` (or a list of `TaskData`, named after their tasks).
    `callback(event, info)` is called after each contribution ("contributed") and fusion ("fused").
    Returns ``{"repo_id", "revision" (the last base), "rounds": [fuse reports], "contributions": [...]}``.
    """
    store = open_store(store)
    if not isinstance(contributors, dict):
        contributors = {t.name: t for t in contributors}
    if not contributors:
        raise ValueError("run_coldfuse needs at least one contributor")
    init_coldfuse(store, repo_id, model, tokenizer, anchor_spec, redraw_anchors, weighting, base_model)
    from tqdm.auto import tqdm

    reports, contributions = [], []
    for r in tqdm(range(rounds), desc="coldfuse rounds", unit="round", disable=None):  # shown on a terminal
        if round_tag(r + 1) not in store.list_refs(repo_id)["tags"]:
            for name, task in tqdm(contributors.items(), desc=f"round {r} contributions", unit="contribution",
                                   disable=None, leave=False):
                result = contribute(store, repo_id, task, name, r, training, work_dir=work_dir)
                contributions.append({"contributor": name, **result})
                if callback is not None:
                    callback("contributed", {"round": r, "contributor": name, **result})
        # one process plays every contributor under one account: commit authors cannot tell them apart
        report = fuse_round(store, repo_id, r, min_contributions=min_contributions, verify_authors=False)
        reports.append(report)
        if callback is not None:
            callback("fused", report)
    return {"repo_id": repo_id, "revision": store.resolve(repo_id, round_tag(rounds)), "rounds": reports,
            "contributions": contributions}


def coldfuse_status(store, repo_id: str) -> dict:
    """Latest round, its base revision, and the contribution branches waiting for it."""
    round = latest_round(store, repo_id)
    base = load_round_base(store, repo_id, round, download=False)
    pending = gather_contributions(store, repo_id, round)
    return {"repo_id": repo_id, "round": round, "revision": base.sha, "anchor_spec": base.spec.to_dict(),
            "weighting": base.state.get("weighting"), "pending": [_record(p) for p in pending],
            "history": base.state.get("history", [])}


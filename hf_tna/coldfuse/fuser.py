"""The fuser: validates a round's contributions and averages them into the next base."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .._version import __version__
from ..anchors import AnchorSpec
from ..hub import StaleParentError
from ..io import ShardedSafetensorsWriter, StreamingCheckpointReader
from ..manifest import CONFIG_NAME, TNAFileConfig, layout_from_manifest, manifest_entry
from ..merge.ingredients import model_architecture, read_model_config
from ..merge.ops import all_finite, average_tensors, check_output_finite, check_tensor_specs, finite_or_wide
from ..verify import verify_anchors_many
from ..workspace import locked_scratch
from .card import model_card
from .repo import (
    CONTRIBUTION_NAME,
    STATE_FORMAT,
    STATE_NAME,
    WEIGHTINGS,
    RoundBase,
    _json,
    gather_contributions,
    latest_round,
    load_round_base,
    read_json_file,
    read_state,
    round_spec,
    round_tag,
)

logger = logging.getLogger(__name__)


class ContributionRejected(ValueError):
    """A contribution does not fit the round; the message says why."""


class _AlreadyFused(Exception):
    """Another fuser committed this round's result to `main` first."""


def check_contributor_identity(store, item: dict, meta: dict, base: RoundBase, verify_authors: bool = True) -> None:
    """A contribution speaks for one contributor: its branch (or repo) name, the `contributor` of its metadata
    and, where the store reports one (the Hub: the user of the token that pushed each commit), every commit's
    author must agree. A `LocalStore` reports no authors: anyone who can write its folder can write any branch."""
    name = item["contributor"]
    if meta.get("contributor") != name:
        raise ContributionRejected(
            f"its {CONTRIBUTION_NAME} says contributor {meta.get('contributor')!r}, but it sits on {name!r}'s "
            f"{'branch' if item['repo'] == base.repo_id else 'repository'} ({item['ref']})"
        )
    if not verify_authors:
        return
    since = base.sha if item["repo"] == base.repo_id else None
    authors = store.commit_authors(item["repo"], item["sha"], since=since)
    if authors is None:
        return
    if item["repo"] != base.repo_id:
        authors = authors[:-1]  # the repository's initial commit (by its creator)
    others = sorted({a for a in authors if a != name})
    if others:
        raise ContributionRejected(
            f"{name!r}'s contribution holds commits by {', '.join(others)}: a contribution counts only when its "
            "contributor pushed it"
        )


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files of a contribution (names and bytes): equal for byte-identical uploads."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def check_contribution_meta(meta: dict | None, item: dict, base: RoundBase) -> None:
    """Cheap checks on `coldfuse_contribution.json` (before any weight is downloaded)."""
    if meta is None:
        raise ContributionRejected(f"has no {CONTRIBUTION_NAME}: an unfinished upload, or not a contribution")
    if meta.get("format") != STATE_FORMAT:
        raise ContributionRejected(f"{CONTRIBUTION_NAME} has format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    if int(meta.get("round", -1)) != base.round:
        raise ContributionRejected(f"is a contribution to round {meta.get('round')}, not round {base.round}")
    if meta.get("base_revision") != base.sha:
        raise ContributionRejected(
            f"started from base revision {str(meta.get('base_revision'))[:12]}, but round {base.round}'s base is "
            f"{base.sha[:12]} ({base.repo_id}@{round_tag(base.round)}): re-train it from this round's base")
    try:
        spec = AnchorSpec.from_dict(meta.get("anchor_spec") or {})
    except (TypeError, ValueError) as err:
        raise ContributionRejected(f"has an unreadable anchor spec: {err}") from None
    if spec != base.spec:
        diff = {k: (v, base.spec.to_dict()[k]) for k, v in spec.to_dict().items() if v != base.spec.to_dict()[k]}
        raise ContributionRejected(
            "was anchored with another spec than round {} ({}): the round's anchor spec is {}".format(
                base.round, ", ".join(f"{k}={a!r} instead of {b!r}" for k, (a, b) in diff.items()), base.spec.to_dict()))
    n = meta.get("num_examples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ContributionRejected(f"num_examples must be a positive int, got {n!r}")


def check_contribution_weights(folder: Path, name: str, base: RoundBase, base_specs: dict) -> None:
    """Same architecture, tensors, shapes and dtypes as the base, and finite values (anchors: `check_anchors`)."""
    ours, theirs = model_architecture(read_model_config(base.folder)), model_architecture(read_model_config(folder))
    if ours != theirs:
        raise ContributionRejected(f"is a {theirs[0]} {list(theirs[1])}, the base a {ours[0]} {list(ours[1])}: "
                                   "contributions must be the base's architecture (the body, without task head)")
    tna = TNAFileConfig.load(folder) if (folder / CONFIG_NAME).exists() else None
    if tna is None or tna.spec != base.spec:
        raise ContributionRejected(f"its {CONFIG_NAME} {'is missing' if tna is None else f'has spec {tna.spec}'}; "
                                   f"round {base.round} anchors with {base.spec}")
    with StreamingCheckpointReader(folder) as reader:
        try:
            check_tensor_specs([base_specs, reader.specs()], ["the base", name])
        except ValueError as err:
            raise ContributionRejected(str(err).replace(f"{name}: ", "")) from None
        for key in reader.keys():
            tensor = reader.get(key)
            if not all_finite(tensor):
                raise ContributionRejected(f"tensor {key!r} holds {int((~tensor.isfinite()).sum())} NaN/inf value(s): "
                                           "a diverged model is never averaged")


def check_anchors(base: RoundBase, folders: dict[str, Path]) -> dict[str, str]:
    """Reasons of the contributions (name -> folder) whose anchored entries differ from the base's.

    One `verify_anchors_many` over all contributions: each tensor's mask is drawn once (the draw costs more
    than the comparisons), with the round's spec and the base's manifest.
    """
    if not folders:
        return {}
    names = list(folders)
    reports = verify_anchors_many([folders[n] for n in names], base.folder, base.spec, base.tna, names=names)
    reasons = {}
    for name, report in zip(names, reports):
        tensors = report["tensors"]
        rows = [(key, t["num_drifted"], t["max_abs_drift"]) for key, t in tensors.items() if t["num_drifted"]]
        if rows:
            key, bad, gap = rows[0]
            share = sum(r[1] for r in rows) / max(report["num_anchored"], 1)
            reasons[name] = (f"{bad} anchored entries of tensor {key!r} drifted from the base (max |drift| {gap:.3g}; "
                             f"{len(rows)} tensor(s), {share:.2%} of all anchors): it was not fine-tuned with round "
                             f"{base.round}'s anchors")
    return reasons


def _record(item: dict, meta: dict | None = None, **extra) -> dict:
    row = {"contributor": item["contributor"], "ingredient": f"{item['repo']}@{item['sha']}", "ref": item["ref"]}
    if meta:
        row.update({k: meta.get(k) for k in ("task", "num_examples", "metrics", "num_labels")})
    return {**row, **extra}


# --------------------------------------------------------------------------------------------------
# Fusing a round
# --------------------------------------------------------------------------------------------------
def fuse_round(store, repo_id: str, round: int | None = None, extra_contributions=(), weighting: str | None = None,
               min_contributions: int = 1, progress: bool = False, verify_authors: bool = True) -> dict:
    """Fuse round R's contributions into the base of round R+1 (tag `round-{R+1}` on `main`).

    Validates every contribution (started from this round's base revision, same anchor spec, its contributor's
    own (`check_contributor_identity`; `verify_authors=False` skips the commit authors, for a simulation in which
    one account plays every contributor), same architecture and shapes, finite values, not a byte-identical copy
    of another, anchors intact against the base) and states why any is rejected; averages the accepted bodies
    (`weighting` "uniform" or "examples", default: the state's), streamed one tensor at a time; commits the new
    base, its `tna_config.json` (next round's spec), state and model card to `main` (parent-pinned) and tags it.
    Fusing a round already fused (also by a concurrent fuser) changes nothing and returns
    ``status="already-fused"``. Returns a report (status, revision, accepted, rejected).
    """
    round = latest_round(store, repo_id) if round is None else int(round)
    base = load_round_base(store, repo_id, round, download=False)
    done = _already_fused(store, repo_id, base)
    if done is not None:
        return done
    weighting = weighting or base.state.get("weighting", "uniform")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    base = load_round_base(store, repo_id, round)
    with StreamingCheckpointReader(base.folder) as reader:
        base_specs = reader.specs()
    candidates, rejected, seen = [], [], {}
    for item in gather_contributions(store, repo_id, round, extra_contributions):
        name = f"contribution {item['contributor']} ({item['repo']}@{item['sha'][:12]})"
        meta = None
        try:
            meta = read_json_file(store, item["repo"], CONTRIBUTION_NAME, item["sha"])
            check_contribution_meta(meta, item, base)
            check_contributor_identity(store, item, meta, base, verify_authors)
            folder, _ = store.download(item["repo"], item["sha"])
            check_contribution_weights(Path(folder), name, base, base_specs)
            digest = weights_digest(Path(folder))
            if digest in seen:
                raise ContributionRejected(f"its weights are byte-identical to those of {seen[digest]}'s contribution: "
                                           "identical uploads count once")
            seen[digest] = item["contributor"]
        except (ContributionRejected, ValueError) as err:
            rejected.append(_record(item, meta, reason=str(err)))
            continue
        candidates.append((name, _record(item, meta), Path(folder)))
    drifted = check_anchors(base, {name: folder for name, _, folder in candidates})
    rejected += [{**row, "reason": drifted[name]} for name, row, _ in candidates if name in drifted]
    accepted = [(row, folder) for name, row, folder in candidates if name not in drifted]
    for row in rejected:
        logger.warning("coldfuse round %d: rejected %s (%s): %s", round, row["contributor"], row["ingredient"],
                       row["reason"])
    if len(accepted) < max(1, min_contributions):
        why = "; ".join(f"{r['contributor']}: {r['reason']}" for r in rejected) or "none uploaded"
        raise ValueError(f"round {round} of {repo_id} has {len(accepted)} valid contribution(s), at least "
                         f"{max(1, min_contributions)} needed (rejected: {why}); nothing was written")
    weights = [float(row["num_examples"]) if weighting == "examples" else 1.0 for row, _ in accepted]
    for (row, _), w in zip(accepted, weights):
        row["weight"] = w / sum(weights)
    state = _next_state(base, [row for row, _ in accepted], rejected, weighting)
    with locked_scratch(None, "coldfuse-fuse-") as tmp:  # removed on any exit; stale ones of dead runs too
        out = Path(tmp) / "base"
        write_fused_base(base, [f for _, f in accepted], weights, state, out, progress)
        files = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
        stale = [p for p in store.list_files(repo_id, base.sha) if p not in files and p != ".gitattributes"]
        message = f"ColD fusion round {round} -> {round + 1}: {len(accepted)} contribution(s)"
        try:
            sha = store.commit(repo_id, files, message, revision="main", parent_commit=_main_parent(store, repo_id, base),
                               delete=stale)
        except (StaleParentError, _AlreadyFused):  # another fuser got there first: report its result
            done = _already_fused(store, repo_id, base)
            if done is None:
                raise
            return done
    store.create_tag(repo_id, round_tag(round + 1), revision=sha, exist_ok=True)
    return {"status": "fused", "round": round, "next_round": round + 1, "revision": sha, "base_revision": base.sha,
            "accepted": [row for row, _ in accepted], "rejected": rejected, "weighting": weighting}


def _main_parent(store, repo_id: str, base: RoundBase) -> str:
    """`main`'s head, which must still hold round R's state (only the fuser writes `main`)."""
    head = store.resolve(repo_id, "main")
    state = read_state(store, repo_id, head)
    if int(state["round"]) == base.round + 1 and state.get("parent_revision") == base.sha:
        raise _AlreadyFused()  # a concurrent fuser committed this round while we were averaging
    if int(state["round"]) != base.round:
        raise ValueError(f"{repo_id}@main holds round {state['round']}, not round {base.round}: round {base.round} "
                         f"is no longer the latest; fuse round {state['round']} instead (`--round {state['round']}`)")
    return head


def _already_fused(store, repo_id: str, base: RoundBase) -> dict | None:
    """The report of a round already fused (tagging the result when a crash left it untagged), else None."""
    nxt = round_tag(base.round + 1)
    tags = store.list_refs(repo_id)["tags"]
    sha = tags.get(nxt) or store.resolve(repo_id, "main")
    state = read_state(store, repo_id, sha)
    if int(state["round"]) != base.round + 1:
        return None
    if state.get("parent_revision") != base.sha:
        raise ValueError(f"{repo_id}@{sha[:12]} holds round {base.round + 1} fused from {state.get('parent_revision')}, "
                         f"not from {round_tag(base.round)} ({base.sha}): the repository history is inconsistent")
    status = "already-fused"
    if nxt not in tags:  # the state commit landed, the tag did not (crash in between): finish the job
        store.create_tag(repo_id, nxt, revision=sha, exist_ok=True)
        status = "tagged"
    return {"status": status, "round": base.round, "next_round": base.round + 1, "revision": sha,
            "base_revision": base.sha, "accepted": state["contributions"], "rejected": state.get("rejected", []),
            "weighting": state.get("weighting")}


def _next_state(base: RoundBase, accepted: list[dict], rejected: list[dict], weighting: str) -> dict:
    history = list(base.state.get("history", []))
    history.append({"round": base.round, "revision": base.sha,
                    "contributions": [row["ingredient"] for row in accepted]})
    return {**{k: v for k, v in base.state.items() if k not in ("round", "round_anchor_spec")},
            "round": base.round + 1, "round_anchor_spec": round_spec(base.state, base.round + 1).to_dict(),
            "parent_revision": base.sha, "contributions": accepted, "rejected": rejected, "weighting": weighting,
            "history": history, "hf_tna_version": __version__}


def write_fused_base(base: RoundBase, folders: list[Path], weights: list[float], state: dict, out: Path,
                     progress: bool = False) -> None:
    """Average the bodies in `folders` tensor by tensor into `out`, with config/tokenizer files of the base,
    the next round's `tna_config.json`, the state and the model card."""
    from tqdm.auto import tqdm

    from ..merge.soup import copy_side_files

    out.mkdir(parents=True)
    readers = [StreamingCheckpointReader(f) for f in folders]
    next_spec = AnchorSpec.from_dict(state["round_anchor_spec"])
    try:
        with StreamingCheckpointReader(base.folder) as base_reader:
            specs = {k: base_reader.specs()[k] for k in base_reader.keys()}
        manifest = {}
        uniform = len(set(weights)) == 1
        with ShardedSafetensorsWriter(out, specs) as writer:
            for key in tqdm(list(specs), desc="coldfuse", unit="tensor", disable=not progress):
                tensor = finite_or_wide(
                    lambda key=key: average_tensors((r.get(key) for r in readers), None if uniform else weights)
                )
                check_output_finite(tensor, key, f"the fused base of round {base.round + 1}")  # before any commit
                if key in base.tna.manifest and next_spec == base.spec:
                    manifest[key] = base.tna.manifest[key]  # same mask; the anchored values came through bitwise
                elif key in base.tna.manifest:
                    layout = layout_from_manifest(key, base.tna.manifest[key])
                    manifest[key] = manifest_entry(tensor, layout, next_spec)
                writer.write(key, tensor)
    finally:
        for r in readers:
            r.close()
    copy_side_files(base.folder, out)
    TNAFileConfig(next_spec, manifest, base.tna.base_model, None).save(out)
    (out / STATE_NAME).write_bytes(_json(state))
    (out / "README.md").write_text(model_card(base.repo_id, state))

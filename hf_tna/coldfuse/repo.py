"""The layout of a ColD fusion repository: file and branch names, the state file, round bases, contributions.

See `hf_tna.coldfuse` for how a run uses them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..anchors import AnchorSpec
from ..hub import RevisionNotFoundError, parse_repo_ref
from ..manifest import CONFIG_NAME, TNAFileConfig

STATE_NAME = "coldfuse_state.json"
CONTRIBUTION_NAME = "coldfuse_contribution.json"
STATE_FORMAT = "hf_tna-coldfuse-v1"
WEIGHTINGS = ("uniform", "examples")
CONTRIBUTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
WEIGHT_FILES = ("model.safetensors", "model-*.safetensors", "model.safetensors.index.json")


def round_tag(round: int) -> str:
    return f"round-{int(round)}"


def contribution_branch(round: int, contributor: str) -> str:
    if not CONTRIBUTOR_RE.match(str(contributor)):
        raise ValueError(f"contributor name {contributor!r} is not valid: use letters, digits, '-', '_', '.'")
    return f"contrib/round-{int(round)}/{contributor}"


def round_spec(state: dict, round: int) -> AnchorSpec:
    """The anchor spec of `round`: the state's spec, re-drawn per round when `redraw_anchors`."""
    spec = AnchorSpec.from_dict(state["anchor_spec"])
    return spec.for_round(round) if state.get("redraw_anchors") else spec


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def read_json_file(store, repo_id: str, path: str, revision: str) -> dict | None:
    """A JSON file of a revision, or None when it does not exist."""
    try:
        raw = store.read_file(repo_id, path, revision)
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} in {repo_id}@{revision} is not valid JSON: {err}") from None


def read_state(store, repo_id: str, revision: str = "main") -> dict:
    state = read_json_file(store, repo_id, STATE_NAME, revision)
    if state is None or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{repo_id}@{revision} is not a ColD fusion base: no {STATE_NAME} of format {STATE_FORMAT} "
                         "(create one with `hf-tna coldfuse init`)")
    return state


def latest_round(store, repo_id: str) -> int:
    """The round whose base is the newest tagged one."""
    rounds = [int(t.split("-", 1)[1]) for t in store.list_refs(repo_id)["tags"] if re.fullmatch(r"round-\d+", t)]
    if not rounds:
        raise ValueError(f"{repo_id} has no round tag: initialise it with `hf-tna coldfuse init`")
    return max(rounds)


@dataclass
class RoundBase:
    """The base of one round: its commit, state, anchor spec and (once downloaded) folder."""

    repo_id: str
    round: int
    sha: str
    state: dict
    spec: AnchorSpec
    folder: Path | None = None
    tna: TNAFileConfig | None = None


def load_round_base(store, repo_id: str, round: int, download: bool = True) -> RoundBase:
    """Resolve tag `round-R` and read its state (and download its files when `download`)."""
    try:
        sha = store.resolve(repo_id, round_tag(round))
    except RevisionNotFoundError:
        raise ValueError(f"round {round} of {repo_id} has no base: tag {round_tag(round)} does not exist (latest "
                         f"round: {latest_round(store, repo_id)}); fuse the rounds before it first") from None
    state = read_state(store, repo_id, sha)
    if int(state["round"]) != int(round):
        raise ValueError(f"{repo_id}@{round_tag(round)} holds the state of round {state['round']}, not {round}")
    base = RoundBase(repo_id, int(round), sha, state, round_spec(state, round))
    if download:
        folder, _ = store.download(repo_id, sha)
        base.folder = Path(folder)
        base.tna = TNAFileConfig.load(base.folder)
        if base.tna.spec != base.spec:
            raise ValueError(f"{repo_id}@{round_tag(round)}: {CONFIG_NAME} has spec {base.tna.spec}, the state says "
                             f"{base.spec}")
    return base


# --------------------------------------------------------------------------------------------------
# Gathering and validating contributions
# --------------------------------------------------------------------------------------------------
def gather_contributions(store, repo_id: str, round: int, extra=()) -> list[dict]:
    """Branches `contrib/round-R/*` of the base repo plus `extra` (``repo@ref``), each pinned to a sha."""
    prefix = f"contrib/round-{int(round)}/"
    found = [{"contributor": b[len(prefix):], "repo": repo_id, "ref": b, "sha": sha}
             for b, sha in store.list_refs(repo_id)["branches"].items() if b.startswith(prefix)]
    for item in extra:
        repo, ref = parse_repo_ref(item)
        ref = ref or contribution_branch(round, repo.split("/")[1])
        found.append({"contributor": ref.rsplit("/", 1)[-1], "repo": repo, "ref": ref, "sha": store.resolve(repo, ref)})
    return sorted(found, key=lambda c: (c["repo"], c["ref"]))


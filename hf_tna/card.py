"""Model cards (README.md) of everything hf_tna writes: trained models, soups and ColD fusion bases.

Cards are rendered with `huggingface_hub.ModelCard` from `ModelCardData`, with the metadata rules the Hub enforces:
`base_model` lists Hub ids only (no ``@revision``; revisions and local folders are written in the body),
`base_model_relation` is one of `BASE_MODEL_RELATIONS`, tags are strings. `anchor_section` is the one text about a
model's fixed neuron anchors; where another library wrote the card (transformers' `Trainer`, TRL's trainers at
every checkpoint) `append_anchor_section` adds it to that card instead of replacing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .anchors import AnchorSpec
from .manifest import CONFIG_NAME

MODEL_CARD_NAME = "README.md"
ANCHOR_TAGS = ("hf_tna", "tna-pfn")
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
ANCHOR_SECTION_TITLE = "## Fixed neuron anchors (hf_tna)"
PAPER = "[TNA-PFN, arXiv 2402.01342](https://arxiv.org/abs/2402.01342)"


def hub_model_id(ref) -> str | None:
    """The Hub id of a model reference (``org/name@revision`` -> ``org/name``), or None when it is not one: a local
    path that exists, an in-memory model, or a string the Hub would refuse as a repo id."""
    if not isinstance(ref, str) or not ref:
        return None
    repo_id = ref.partition("@")[0]
    if Path(repo_id).exists():
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id


def hub_model_ids(refs: Iterable) -> list[str]:
    """`hub_model_id` of each reference that is a Hub id, without duplicates, in order."""
    out = []
    for ref in refs:
        repo_id = hub_model_id(ref)
        if repo_id is not None and repo_id not in out:
            out.append(repo_id)
    return out


def build_card(body: str, base_model: Iterable[str] = (), base_model_relation: str | None = None,
               tags: Iterable[str] = (), library_name: str | None = "transformers", **metadata) -> ModelCard:
    """A `ModelCard` with `body` under its metadata. `base_model` keeps only Hub ids (see `hub_model_id`); the
    relation is written only when a base model is."""
    bases = hub_model_ids(base_model)
    if base_model_relation is not None and base_model_relation not in BASE_MODEL_RELATIONS:
        raise ValueError(f"base_model_relation must be one of {BASE_MODEL_RELATIONS}, got {base_model_relation!r}")
    data = ModelCardData(
        base_model=bases or None,
        base_model_relation=base_model_relation if bases else None,
        tags=_tags(tags),
        library_name=library_name,
        **metadata,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def _tags(tags: Iterable[str]) -> list[str]:
    out = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"card tags must be non-empty strings, got {tag!r}")
        if tag not in out:
            out.append(tag)
    return out


def write_card(folder, card: ModelCard) -> Path:
    path = Path(folder) / MODEL_CARD_NAME
    card.save(path)
    return path


def verify_command(target: str) -> str:
    """The command that checks a model's anchors: `target` is its Hub id or its folder."""
    quoted = target if re.fullmatch(r"[\w./@:+-]+", target) else "'" + target.replace("'", "'\\''") + "'"
    return f"hf-tna verify {quoted}"


def _patterns(patterns) -> str:
    return ", ".join(f"`{p}`" for p in patterns)


def anchor_section(spec: AnchorSpec, verify: str | None = None, base_model: str | None = None,
                   base_revision: str | None = None, num_tensors: int | None = None, context: str = "") -> str:
    """The card section on a model's fixed neuron anchors, written for people: what was anchored, from which base,
    where the manifest is and the command that checks them (`verify`: the model's Hub id or folder)."""
    if isinstance(spec, dict):
        spec = AnchorSpec.from_dict(spec)
    if spec.granularity == "neuron":
        unit, how = "output units", ("a row of each linear layer, a column of Conv1D, an output channel of a "
                                     "convolution, each with its bias entry")
    else:
        unit, how = "entries", "each entry drawn independently"
    targets = f"tensors matching {_patterns(spec.include)}" if spec.include else "every trainable tensor"
    if spec.exclude:
        targets += f", except those matching {_patterns(spec.exclude)}"
    lines = [
        ANCHOR_SECTION_TITLE, "",
        f"Trained with fixed neuron anchors ({PAPER}): a fixed random {spec.ratio:.0%} of the {unit} of {targets} "
        f"({how}) kept their base values bitwise through training, so models fine-tuned from the same base with the "
        "same anchors stay aligned and average well.", "",
        f"- Anchor settings: ratio {spec.ratio}, seed {spec.seed}, granularity `{spec.granularity}`, round "
        f"{spec.round}.",
    ]
    if base_model:
        where = f"`{base_model}`" + (f" at revision `{base_revision}`" if base_revision else "")
        lines.append(f"- Base model: {where}.")
    count = f" each of the {num_tensors} anchored tensors" if num_tensors is not None else " each anchored tensor"
    lines.append(f"- `{CONFIG_NAME}` holds the manifest: for{count}, its layout and the sha256 of its anchored "
                 "values, so the anchors can be checked without the base model.")
    if context:
        lines += ["", context.strip()]
    if verify:
        lines += ["", "Check that the anchors hold:", "", "```bash", verify_command(verify), "```"]
    return "\n".join(lines) + "\n"


def _without_section(text: str) -> str:
    """`text` without an anchor section written before (up to the next `## ` heading)."""
    start = text.find(ANCHOR_SECTION_TITLE)
    if start < 0:
        return text
    end = text.find("\n## ", start + len(ANCHOR_SECTION_TITLE))
    return text[:start].rstrip() + ("\n\n" + text[end + 1:] if end >= 0 else "\n")


def append_anchor_section(path, spec: AnchorSpec, verify: str | None = None, **kwargs) -> Path | None:
    """Add the anchor section (`anchor_section(spec, verify, **kwargs)`) and the hf_tna tags to the card another
    library wrote at `path`, replacing a section added before; `base_model` entries that are not Hub ids move from
    the metadata to the body. Nothing happens when there is no card."""
    path = Path(path)
    if not path.exists():
        return None
    card = ModelCard.load(path)
    data = card.data
    moved = []
    if data.base_model:
        given = [data.base_model] if isinstance(data.base_model, str) else list(data.base_model)
        data.base_model = hub_model_ids(given) or None
        moved = [str(b) for b in given if hub_model_id(b) is None]
        if data.base_model is None and getattr(data, "base_model_relation", None):
            data.base_model_relation = None
    data.tags = _tags([*(data.tags or []), *ANCHOR_TAGS])
    body = _without_section(card.text).rstrip()
    if moved:
        body += "\n\nFine-tuned from " + ", ".join(f"`{b}`" for b in moved) + " (not on the Hub)."
    body += "\n\n" + anchor_section(spec, verify, **kwargs)
    updated = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
    updated.save(path)
    return path

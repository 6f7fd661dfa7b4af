"""Model card (README.md) of a ColD fusion base, rendered through `hf_tna.card`: metadata with the merge relation,
then the round, its contributions, the anchors and the history."""

from __future__ import annotations

from ..card import anchor_section, build_card, hub_model_id

COLDFUSE_TAGS = ("hf_tna", "coldfuse", "tna-pfn", "merge")


def _cell(value) -> str:
    return "" if value is None else str(value).replace("|", "/")


def model_card(repo_id: str, state: dict) -> str:
    """README.md of a ColD fusion base: metadata (the pretrained model and the contributors' repositories as
    `base_model`, relation merge), contributions, anchors, history."""
    rows = state.get("contributions", [])
    origin = state.get("base_model")
    sources = sorted({r["ingredient"].split("@")[0] for r in rows} - {repo_id})
    round_ = state["round"]
    lines = [f"# ColD fusion base, round {round_}", "",
             f"Collaborative descent (ColD) fusion with hf_tna {state.get('hf_tna_version', '')}: each round, "
             "contributors fine-tune this base on their own tasks and upload the body; the repository averages "
             f"them ({state.get('weighting', 'uniform')} weights) into the next base. Round {round_} starts from this "
             f"revision (tag `round-{round_}`)."]
    if origin:
        where = "a Hub model" if hub_model_id(origin) else "not on the Hub"
        lines += ["", f"Round 0 was the pretrained model `{origin}` ({where})."]
    lines.append("")
    if rows:
        lines += [f"## Contributions fused into this base (round {round_ - 1}, parent "
                  f"`{repo_id}@{state.get('parent_revision')}`)", "",
                  "| contributor | task | labels | examples | weight | eval accuracy | ingredient |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            acc = (r.get("metrics") or {}).get("eval_accuracy")
            lines.append(f"| {_cell(r['contributor'])} | {_cell(r.get('task'))} | {_cell(r.get('num_labels'))} | "
                         f"{_cell(r.get('num_examples'))} | {r.get('weight', 0):.3f} | "
                         f"{'' if acc is None else f'{acc:.4f}'} | `{r['ingredient']}` |")
        lines.append("")
    if state.get("rejected"):
        lines += ["## Rejected contributions", "", "| contributor | ingredient | reason |", "|---|---|---|"]
        lines += [f"| {_cell(r['contributor'])} | `{r['ingredient']}` | {_cell(r['reason'])} |"
                  for r in state["rejected"]]
        lines.append("")
    redraw = "re-drawn each round" if state.get("redraw_anchors") else "the same mask every round"
    context = (f"Contributions must keep these entries bitwise at this base's values ({redraw}); task heads are "
               "neither anchored nor averaged.")
    lines.append(anchor_section(state["round_anchor_spec"], verify=repo_id, context=context))
    if state.get("history"):
        lines += ["## History", "", "| round | base revision | contributions |", "|---|---|---|"]
        lines += [f"| {h['round']} | `{h['revision']}` | {', '.join(f'`{c}`' for c in h['contributions'])} |"
                  for h in state["history"]]
        lines.append("")
    card = build_card("\n".join(lines), base_model=[origin, *sources], base_model_relation="merge",
                      tags=COLDFUSE_TAGS, library_name="transformers")
    return str(card)

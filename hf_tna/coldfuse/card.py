"""Model card (README.md) of a ColD fusion base: metadata with the merge relation, contributions, anchors, history."""

from __future__ import annotations


def model_card(repo_id: str, state: dict) -> str:
    """README.md of a ColD fusion base: metadata (base_model, merge relation), contributions, anchors, history."""
    import yaml

    rows = state.get("contributions", [])
    sources = sorted({r["ingredient"].split("@")[0] for r in rows} - {repo_id})
    origin = state.get("base_model")
    meta = {"base_model": ([origin] if origin else []) + sources or [repo_id], "base_model_relation": "merge",
            "library_name": "transformers", "tags": ["hf_tna", "coldfuse", "tna-pfn", "merge"]}
    spec = state["round_anchor_spec"]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# ColD fusion base, round {state['round']}", "",
             f"Collaborative descent (ColD) fusion with hf_tna {state.get('hf_tna_version', '')}: each round, "
             "contributors fine-tune this base on their own tasks and upload the body; the repository averages "
             f"them ({state.get('weighting', 'uniform')} weights) into the next base. Round {state['round']} "
             f"starts from this revision (tag `round-{state['round']}`).", ""]
    if rows:
        lines += [f"## Contributions fused into this base (round {state['round'] - 1}, parent "
                  f"`{repo_id}@{state.get('parent_revision')}`)", "",
                  "| contributor | task | labels | examples | weight | eval accuracy | ingredient |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            acc = (r.get("metrics") or {}).get("eval_accuracy")
            lines.append(f"| {r['contributor']} | {r.get('task')} | {r.get('num_labels')} | {r.get('num_examples')} | "
                         f"{r.get('weight', 0):.3f} | {'' if acc is None else f'{acc:.4f}'} | `{r['ingredient']}` |")
        lines.append("")
    if state.get("rejected"):
        lines += ["## Rejected contributions", "", "| contributor | ingredient | reason |", "|---|---|---|"]
        lines += [f"| {r['contributor']} | `{r['ingredient']}` | {r['reason'].replace('|', '/')} |"
                  for r in state["rejected"]]
        lines.append("")
    lines += ["## Anchors", "", f"Fixed neuron anchors (TNA-PFN): ratio {spec['ratio']}, seed {spec['seed']}, "
              f"granularity {spec['granularity']}, include {spec['include']}, exclude {spec['exclude']}, round "
              f"{spec['round']} ({'re-drawn each round' if state.get('redraw_anchors') else 'same mask every round'}). "
              "Contributions must keep these entries bitwise at this base's values; task heads are neither "
              "anchored nor averaged.", ""]
    if state.get("history"):
        lines += ["## History", "", "| round | base revision | contributions |", "|---|---|---|"]
        lines += [f"| {h['round']} | `{h['revision']}` | {', '.join(f'`{c}`' for c in h['contributions'])} |"
                  for h in state["history"]]
        lines.append("")
    return "\n".join(lines)

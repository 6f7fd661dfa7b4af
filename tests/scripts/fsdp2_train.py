"""FSDP2 (`fully_shard`) in a hand-written loop, run by tests/scripts/ddp_train.py in the same launch (CPU, gloo).

A tiny Llama-shaped model, `fully_shard` on every decoder layer and on the root, trained with both anchor paths
(restore; zero copy under a bf16 `MixedPrecisionPolicy`). Shards are uneven (a vocabulary of 65 rows) and one
is empty on rank 1 (a score head of 1 row). Each rank saves the masks of its local shards; rank 0 saves the full
state dict gathered from the shards with `tna_config.json`, so the test can check the masks' union, the
manifest and `hf-tna verify` against unsharded anchors.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from hf_tna import AnchorSpec, create_anchored_optimizer
from hf_tna.anchors import build_layouts
from hf_tna.manifest import TNAFileConfig, manifest_entry
from hf_tna.zero_copy import local_selection

SPEC = AnchorSpec(ratio=0.4, seed=5)


def build_llama():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=65, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=32, num_labels=1, pad_token_id=0,
    )
    return LlamaForSequenceClassification(config)


def train(out: Path, path: str, rank: int) -> None:
    model = build_llama()
    unsharded = {layout.name: manifest_entry(p, layout, SPEC) for layout, p in build_layouts(model, SPEC)}
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16) if path == "zero_copy" else MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    optimizer = create_anchored_optimizer(
        model, torch.optim.AdamW, SPEC, zero_copy=path == "zero_copy", lr=1e-2, weight_decay=0.1, foreach=False
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # the same batch on every rank: FSDP2 averages identical gradients
        ids = torch.randint(1, 65, (4, 8), generator=g)
        labels = torch.randn(4, generator=g)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.mask_gradients()  # before clipping: the norm counts free entries only
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    layouts = {layout.name: (layout, p) for layout, p in build_layouts(model, SPEC)}
    local = {name: local_selection(layout, SPEC, p).dense_mask() for name, (layout, p) in layouts.items()}
    torch.save(local, out / f"fsdp2_{path}_masks_rank{rank}.pt")
    manifest = optimizer.manifest()  # a collective: every rank
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        folder = out / f"fsdp2_{path}"
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
        model.config.save_pretrained(folder)
        TNAFileConfig(SPEC, manifest).save(folder)
        (folder / "unsharded_manifest.json").write_text(json.dumps(unsharded, sort_keys=True))
        shapes = {name: list(layout.shape) for name, (layout, _) in layouts.items()}
        (folder / "shapes.json").write_text(json.dumps(shapes))


def main(out_dir: str, rank: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    for path in ("restore", "zero_copy"):
        train(Path(out_dir), path, rank)
        torch.distributed.barrier()

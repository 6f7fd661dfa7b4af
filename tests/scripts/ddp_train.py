"""Run by tests/test_distributed.py under `accelerate launch --num_processes 2` (CPU, gloo); then the FSDP2
checks of tests/scripts/fsdp2_train.py in the same processes.

Each rank writes what it holds: per-tensor sha256 of its anchor masks, anchor values, and the final
anchored entries, so the test can compare ranks and check the anchors held through training.
"""

import json
import sys

import torch
from transformers import TrainingArguments

from hf_tna import AnchorSpec, TNATrainer
from hf_tna.anchors import anchor_mask
from hf_tna.manifest import values_sha256
from tests.common import build_tiny_bert, text_dataset


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    model = build_tiny_bert(seed=0)
    spec = AnchorSpec(ratio=0.4, seed=11)
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-2,
        weight_decay=0.1, report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
        gradient_accumulation_steps=2, max_grad_norm=1.0,
    )
    trainer = TNATrainer(model=model, args=args, train_dataset=text_dataset(n=64), anchor_spec=spec)
    trainer.train()
    rank = trainer.args.process_index
    anchors = trainer.anchored_optimizer.anchors
    report = {
        "world_size": trainer.args.world_size,
        "masks": {a.name: values_sha256(anchor_mask(a.layout, spec)) for a in anchors},
        "anchor_values": {a.name: values_sha256(a.values) for a in anchors},
        "final_anchored": {a.name: values_sha256(a.current_values()) for a in anchors},
        "drift": trainer.anchored_optimizer.anchor_drift(),
        "weights": values_sha256(torch.cat([p.detach().flatten() for p in model.parameters()])),
    }
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(report, f)

    from tests.scripts.fsdp2_train import main as fsdp2_main  # FSDP2 in the same launch: the suite has one

    fsdp2_main(out_dir, rank)


if __name__ == "__main__":
    main(sys.argv[1])

"""DDP and FSDP2 on CPU (gloo) under one `accelerate launch --num_processes 2`: masks and anchors agree across ranks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_and_fsdp2_two_processes_keep_anchors(tmp_path):
    command = [
        # `--multi_gpu` picks accelerate's torchrun launcher; with no GPU the ranks run DDP over gloo on CPU
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(ROOT / "tests" / "scripts" / "ddp_train.py"), str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["masks"] == ranks[1]["masks"]
    assert ranks[0]["anchor_values"] == ranks[1]["anchor_values"]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the replicas identical
    for rank in ranks:
        assert rank["final_anchored"] == rank["anchor_values"] and rank["drift"] == 0.0
    check_fsdp2(tmp_path)


def check_fsdp2(out):
    """FSDP2 (run by the same launch): the ranks' shard masks tile the unsharded masks bitwise (uneven shards, an
    empty one), the gathered checkpoint's manifest is the unsharded one and `verify` passes on it, both paths."""
    import torch

    from hf_tna import AnchorSpec, verify_anchors
    from hf_tna.anchors import anchor_mask
    from hf_tna.manifest import TNAFileConfig, layout_from_manifest

    spec = AnchorSpec(ratio=0.4, seed=5)
    for path in ("restore", "zero_copy"):
        folder = out / f"fsdp2_{path}"
        unsharded = json.loads((folder / "unsharded_manifest.json").read_text())
        config = TNAFileConfig.load(folder)
        assert config.manifest == unsharded, path
        assert verify_anchors(folder)["intact"], path
        ranks = [torch.load(out / f"fsdp2_{path}_masks_rank{r}.pt") for r in range(2)]
        uneven = empty = False
        for name, entry in unsharded.items():
            full = anchor_mask(layout_from_manifest(name, entry), spec)
            pieces = [ranks[0][name], ranks[1][name]]
            uneven |= pieces[0].shape[0] != pieces[1].shape[0]
            empty |= pieces[1].shape[0] == 0
            assert torch.equal(torch.cat(pieces), full), f"{path}: {name}"
        assert uneven and empty

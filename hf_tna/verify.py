"""`verify_anchors`: are a model's anchored entries still at their anchor values? (`hf-tna verify`)"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .anchors import (
    AnchorSpec,
    anchored_values,
    build_layouts,
    checkpoint_names,
)
from .io import CheckpointReader
from .manifest import CONFIG_NAME, TNAFileConfig, values_sha256


class _ModelTensors:
    """Checkpoint-named tensors of an in-memory model, with the `CheckpointReader` interface."""

    def __init__(self, model: torch.nn.Module):
        names = checkpoint_names(model)
        self.tensors = {names[id(p)]: p.detach() for p in model.parameters() if id(p) in names}

    def keys(self):
        return sorted(self.tensors)

    def get(self, name):
        if name not in self.tensors:
            raise KeyError(f"the model has no parameter {name!r}")
        return self.tensors[name]


def _open(source):
    if isinstance(source, torch.nn.Module):
        return _ModelTensors(source)
    return CheckpointReader(source)


def verify_anchors(model_or_path, base_or_path=None, spec: AnchorSpec | None = None, config: TNAFileConfig | None = None) -> dict:
    """Check that the anchored entries of a model hold their anchor values.

    Args:
        model_or_path: an in-memory model or a checkpoint folder (safetensors).
        base_or_path: the base (model or folder) the anchors were taken from. Without it, the anchored
            values are checked against the sha256 hashes in the manifest of `tna_config.json`.
        spec: the anchor spec; defaults to the one in `config` or the model folder's `tna_config.json`.
        config: a `TNAFileConfig` (spec + manifest); defaults to the model folder's `tna_config.json`.

    Returns a report: `intact` (bool), `fraction_intact` (anchored entries equal to their anchor values,
    over all anchored entries; from hashes, a tensor counts whole), `num_anchored`, and per tensor
    `num_anchored`, `num_drifted`, `max_abs_drift` (with a base) or `hash_ok` (from the manifest).
    """
    if config is None and not isinstance(model_or_path, torch.nn.Module) and (Path(model_or_path) / CONFIG_NAME).exists():
        config = TNAFileConfig.load(model_or_path)
    if spec is None:
        if config is None:
            raise ValueError(
                f"no anchor spec: {model_or_path} has no {CONFIG_NAME}; pass spec= (and base_or_path=) to verify it"
            )
        spec = config.spec
    elif config is not None and config.spec != spec:
        raise ValueError(f"spec {spec} differs from the {CONFIG_NAME} spec {config.spec}")

    model = _open(model_or_path)
    if config is not None and config.manifest:
        layouts = config.layouts()
    elif isinstance(model_or_path, torch.nn.Module):
        layouts = [layout for layout, _ in build_layouts(model_or_path, spec)]
    elif isinstance(base_or_path, torch.nn.Module):
        layouts = [layout for layout, _ in build_layouts(base_or_path, spec)]
    else:
        raise ValueError(f"cannot tell which tensors are anchored: {CONFIG_NAME} has no manifest and no model was given")
    if base_or_path is None and (config is None or not config.manifest):
        raise ValueError(f"nothing to compare with: pass base_or_path or a {CONFIG_NAME} with a manifest")
    base = _open(base_or_path) if base_or_path is not None else None

    tensors, total, intact = {}, 0, 0
    for layout in layouts:
        try:
            tensor = model.get(layout.name)
        except KeyError:
            raise ValueError(f"anchored tensor {layout.name!r} is missing from {model_or_path}") from None
        if tuple(tensor.shape) != layout.shape:
            raise ValueError(
                f"tensor {layout.name!r} has shape {tuple(tensor.shape)} in {model_or_path}, the anchors expect "
                f"{layout.shape}: the anchor spec was made for another model"
            )
        values = anchored_values(tensor, layout, spec)
        report = {"num_anchored": int(values.numel())}
        if base is not None:
            try:
                base_tensor = base.get(layout.name)
            except KeyError:
                raise ValueError(f"anchored tensor {layout.name!r} is missing from the base {base_or_path}") from None
            if tuple(base_tensor.shape) != layout.shape:
                raise ValueError(f"tensor {layout.name!r}: the base has another shape; it is not this model's base")
            reference = anchored_values(base_tensor, layout, spec)
            same = values == reference
            report["num_drifted"] = int(same.numel() - same.sum())
            diff = (values.double() - reference.double()).abs()
            report["max_abs_drift"] = float(diff.max()) if diff.numel() else 0.0
            ok = report["num_drifted"] == 0
            intact += int(same.sum())
        else:
            entry = config.manifest[layout.name]
            ok = values_sha256(values) == entry["sha256"] and values.numel() == entry["num_anchored"]
            report["hash_ok"] = ok
            intact += values.numel() if ok else 0
        total += values.numel()
        tensors[layout.name] = report
    return {
        "intact": intact == total,
        "fraction_intact": intact / total if total else 1.0,
        "num_anchored": total,
        "spec": spec.to_dict(),
        "tensors": tensors,
    }


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "verify", help="check that a checkpoint's anchored entries hold their anchor values",
        description="Check a checkpoint's anchors against its base (or the hashes in its tna_config.json). "
        "Exits 1 when any anchored entry drifted.",
    )
    parser.add_argument("model", help="checkpoint folder with safetensors weights and tna_config.json")
    parser.add_argument("--base", default=None, help="base checkpoint folder (default: use the manifest hashes)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.set_defaults(func=run_verify)
    return parser


def run_verify(args) -> int:
    report = verify_anchors(args.model, args.base)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        drifted = [name for name, t in report["tensors"].items() if t.get("num_drifted", 0) or t.get("hash_ok") is False]
        print(
            f"{args.model}: {'anchors intact' if report['intact'] else 'ANCHORS DRIFTED'} "
            f"({report['fraction_intact']:.6f} of {report['num_anchored']} anchored entries intact, "
            f"{len(report['tensors'])} tensors)"
        )
        for name in drifted[:20]:
            print(f"  drifted: {name} {report['tensors'][name]}")
    return 0 if report["intact"] else 1

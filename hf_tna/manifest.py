"""`tna_config.json`: the anchor spec a model was trained with, its base, and the per-tensor manifest.

The manifest records, for every anchored tensor, its shape, layout and the sha256 of its anchored values, so
a checkpoint can be verified without its base. `format_version` goes up when the file gains meaning; readers
accept every older version and refuse a newer one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._version import __version__
from .anchors import (
    HASH_NAME,
    AnchorSpec,
    TensorLayout,
    anchored_values,
)

CONFIG_NAME = "tna_config.json"
FORMAT_VERSION = 2
# Format history (readers accept every older version):
#   1: anchor_spec, base_model, base_revision, hash, manifest, tensor_namespace
#   2: + shared_init (tensors, or rows, initialised from the anchor seed: `hf_tna.shared_init`); manifest entries
#      may be `whole` (every entry fixed: the frozen LoRA A of FFA-LoRA, `anchor_lora_fa`)

def values_sha256(values: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (contiguous, on CPU)."""
    data = values.detach().contiguous().cpu().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def manifest_entry(tensor: torch.Tensor, layout: TensorLayout, spec: AnchorSpec, values=None) -> dict:
    values = anchored_values(tensor, layout, spec) if values is None else values
    entry = {
        "shape": list(layout.shape),
        "dtype": str(tensor.dtype).replace("torch.", ""),
        "unit_dim": layout.unit_dim,
        "key": layout.key,
        "num_anchored": int(values.numel()),
        "sha256": values_sha256(values),
    }
    if layout.whole:
        entry["whole"] = True
    return entry


def check_manifest_entry(name: str, entry, source: str = CONFIG_NAME) -> None:
    """Refuse a manifest entry that is malformed, naming the tensor and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{source}: manifest entry {name!r} is not an object")
    missing = {"shape", "num_anchored", "sha256"} - set(entry)
    if missing:
        raise ValueError(f"{source}: manifest entry {name!r} lacks {sorted(missing)}")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"{source}: manifest entry {name!r} has an invalid shape {shape!r}")
    unit_dim = entry.get("unit_dim")
    if unit_dim is not None and not (type(unit_dim) is int and 0 <= unit_dim < len(shape)):
        raise ValueError(f"{source}: manifest entry {name!r} has unit_dim {unit_dim!r}, not a dim of {shape}")
    if type(entry["num_anchored"]) is not int or entry["num_anchored"] < 0:
        raise ValueError(f"{source}: manifest entry {name!r} has an invalid num_anchored {entry['num_anchored']!r}")
    sha = entry["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"{source}: manifest entry {name!r} has an invalid sha256 {sha!r}")
    if not isinstance(entry.get("whole", False), bool):
        raise ValueError(f"{source}: manifest entry {name!r} has a non-boolean 'whole' {entry['whole']!r}")
    if entry.get("key") is not None and not isinstance(entry["key"], str):
        raise ValueError(f"{source}: manifest entry {name!r} has a non-string key {entry['key']!r}")


def _shared_init(value, source: str) -> dict:
    if not isinstance(value, dict) or not all(
        rows is None or (isinstance(rows, list) and len(rows) == 2 and all(type(r) is int and r >= 0 for r in rows))
        for rows in value.values()
    ):
        raise ValueError(f"{source}: 'shared_init' must map tensor names to null or [start_row, stop_row]")
    return dict(value)


def layout_from_manifest(name: str, entry: dict) -> TensorLayout:
    return TensorLayout(name, tuple(entry["shape"]), entry.get("unit_dim"), entry.get("key") or name,
                        bool(entry.get("whole", False)))


@dataclass
class TNAFileConfig:
    """Contents of `tna_config.json`: the spec, the base it was drawn on, and the per-tensor manifest."""

    spec: AnchorSpec
    manifest: dict[str, dict] = field(default_factory=dict)
    base_model: str | None = None
    base_revision: str | None = None
    hf_tna_version: str = __version__
    shared_init: dict[str, list[int] | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "anchor_spec": self.spec.to_dict(),
            "base_model": self.base_model,
            "base_revision": self.base_revision,
            "format_version": FORMAT_VERSION,
            "hash": HASH_NAME,
            "hf_tna_version": self.hf_tna_version,
            "manifest": self.manifest,
            "shared_init": dict(sorted(self.shared_init.items())),
            "tensor_namespace": "checkpoint",
        }

    def save(self, folder: str | Path) -> Path:
        """Write `tna_config.json` (sorted keys) into `folder` atomically."""
        path = Path(folder) / CONFIG_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, d: dict, source: str = CONFIG_NAME) -> TNAFileConfig:
        if not isinstance(d, dict) or "anchor_spec" not in d:
            raise ValueError(f"{source} is not an hf_tna config: no 'anchor_spec' field")
        version = d.get("format_version", 1)  # files before the field existed are version 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{source} has format_version {version!r}; expected a positive integer")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {version}, newer than this hf_tna {__version__} reads (up to "
                f"{FORMAT_VERSION}): upgrade hf_tna (`pip install -U hf_tna`) to read it"
            )
        if d.get("hash", HASH_NAME) != HASH_NAME:
            raise ValueError(f"{source} uses mask hash {d['hash']!r}; this hf_tna computes {HASH_NAME!r}")
        manifest = d.get("manifest") or {}
        if not isinstance(manifest, dict):
            raise ValueError(f"{source}: 'manifest' must map tensor names to entries")
        for name, entry in manifest.items():
            check_manifest_entry(name, entry, source)
        return cls(
            spec=AnchorSpec.from_dict(d["anchor_spec"]),
            manifest=manifest,
            base_model=d.get("base_model"),
            base_revision=d.get("base_revision"),
            hf_tna_version=d.get("hf_tna_version", "unknown"),
            shared_init=_shared_init(d.get("shared_init") or {}, source),
        )

    @classmethod
    def load(cls, path: str | Path) -> TNAFileConfig:
        """Read `tna_config.json` from a file or a folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no {CONFIG_NAME} at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(d, source=str(path))

    def layouts(self) -> list[TensorLayout]:
        return [layout_from_manifest(name, entry) for name, entry in sorted(self.manifest.items())]


def check_layouts_match(layouts: list[TensorLayout], manifest: dict[str, dict], what: str = "model") -> None:
    """Raise ValueError naming the first tensor where `layouts` and a manifest disagree."""
    by_name = {layout.name: layout for layout in layouts}
    manifest = {name: entry for name, entry in manifest.items() if not entry.get("whole")}  # frozen: not optimised
    missing = sorted(set(manifest) - set(by_name))
    extra = sorted(set(by_name) - set(manifest))
    if missing:
        raise ValueError(f"{CONFIG_NAME} anchors tensor {missing[0]!r}, which the {what} does not have as a targeted parameter")
    if extra:
        raise ValueError(f"the {what} has targeted parameter {extra[0]!r}, which {CONFIG_NAME} does not anchor")
    for name, layout in by_name.items():
        entry = manifest[name]
        if tuple(entry["shape"]) != layout.shape:
            raise ValueError(
                f"tensor {name!r}: {CONFIG_NAME} says shape {tuple(entry['shape'])}, the {what} has {layout.shape}"
            )
        if entry.get("unit_dim") != layout.unit_dim:
            raise ValueError(
                f"tensor {name!r}: {CONFIG_NAME} anchors along unit_dim {entry.get('unit_dim')}, "
                f"the {what} along {layout.unit_dim}"
            )

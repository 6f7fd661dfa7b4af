"""Streaming checkpoint I/O: read safetensors checkpoints (single file or sharded) one tensor at a time."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
ADAPTER_SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


class CheckpointReader:
    """Lazy reader over the safetensors files of a checkpoint folder.

    `reader.keys()` lists tensor names; `reader.get(name)` loads one tensor; `reader.shape(name)` and
    `reader.dtype(name)` read only the header. Use as a context manager to close the files.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.weight_map = checkpoint_weight_map(self.folder)
        self._handles: dict[str, object] = {}

    def _handle(self, name: str):
        filename = self.weight_map.get(name)
        if filename is None:
            raise KeyError(f"tensor {name!r} is not in checkpoint {self.folder}")
        if filename not in self._handles:
            try:
                self._handles[filename] = safe_open(str(self.folder / filename), framework="pt")
            except Exception as err:  # safetensors raises its own error types
                raise ValueError(f"{self.folder / filename} is not a readable safetensors file: {err}") from None
        return self._handles[filename]

    def keys(self) -> list[str]:
        return sorted(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        try:
            return self._handle(name).get_tensor(name)
        except (KeyError, ValueError):
            raise
        except Exception as err:
            raise ValueError(f"cannot read tensor {name!r} from {self.folder}: {err}") from None

    def get_slice(self, name: str):
        return self._handle(name).get_slice(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self.get_slice(name).get_dtype()

    def metadata(self) -> dict:
        files = sorted(set(self.weight_map.values()))
        return (self._handle(next(k for k, v in self.weight_map.items() if v == files[0])).metadata() or {}) if files else {}

    def close(self):
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checkpoint_weight_map(folder: str | Path) -> dict[str, str]:
    """tensor name -> safetensors file name, for a folder with one file, an index, or an adapter file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{index} is not a valid safetensors index: {err}") from None
        for filename in set(weight_map.values()):
            if not (folder / filename).exists():
                raise FileNotFoundError(f"{index} lists shard {filename}, which is missing from {folder}")
        return dict(weight_map)
    for filename in (SAFE_WEIGHTS_NAME, ADAPTER_SAFE_WEIGHTS_NAME):
        path = folder / filename
        if path.exists():
            try:
                with safe_open(str(path), framework="pt") as f:
                    return {k: filename for k in f.keys()}
            except Exception as err:
                raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    pickles = [n for n in PICKLE_WEIGHTS_NAMES if (folder / n).exists()]
    if pickles:
        raise ValueError(
            f"{folder} holds only pickle weights ({pickles[0]}); hf_tna reads safetensors. Convert with "
            "`model.save_pretrained(folder, safe_serialization=True)` (pickle files can run code on load)."
        )
    raise FileNotFoundError(f"no safetensors weights ({SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}) in {folder}")

"""Streaming checkpoint I/O: read safetensors checkpoints (single file or sharded) one tensor at a time."""

from __future__ import annotations

import json
import math
import re
import struct
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
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) for k in weight_map):
            raise ValueError(f"{index} is not a valid safetensors index: 'weight_map' must map tensor names to files")
        for filename in set(weight_map.values()):
            check_shard_name(folder, filename, index)
            if not (folder / filename).is_file():
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


def check_shard_name(folder: Path, filename, index: Path) -> str:
    """A shard named by an index must be a plain `.safetensors` file name inside the checkpoint folder: an
    absolute path, a sub-folder, '..' or a symlink leading out would read another model's weights."""
    ok = (
        isinstance(filename, str)
        and filename.endswith(".safetensors")
        and filename not in (".", "..")
        and not any(sep in filename for sep in ("/", "\\", "\x00"))
    )
    if not ok:
        raise ValueError(
            f"{index} names shard {filename!r}: shards must be plain .safetensors file names inside {folder}"
        )
    path = folder / filename
    if path.is_symlink() and not _link_allowed(folder, path):
        raise ValueError(f"{index} names shard {filename!r}, a link to a file outside {folder}; refusing it")
    return filename


def _link_allowed(folder: Path, path: Path) -> bool:
    """A shard that is a link stays inside the checkpoint folder, or (a Hugging Face cache snapshot,
    `.../snapshots/<sha>/`) inside the blobs of that cached repo, where huggingface_hub links every file."""
    target = path.resolve()
    if target.is_relative_to(folder.resolve()):
        return True
    snapshots = folder.absolute().parent
    return snapshots.name == "snapshots" and target.is_relative_to((snapshots.parent / "blobs").resolve())


# --------------------------------------------------------------------------------------------------
# Streaming without mmap: read one tensor with plain file reads, write shards tensor by tensor
# --------------------------------------------------------------------------------------------------
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def safetensors_dtype(dtype: torch.dtype | str) -> str:
    """The safetensors name of a dtype ("F32", "BF16", ...); strings are checked and returned."""
    if isinstance(dtype, str):
        name = dtype.replace("torch.", "")
        for st_name, torch_dtype in SAFETENSORS_DTYPES.items():
            if name in (st_name, str(torch_dtype).replace("torch.", "")):
                return st_name
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(SAFETENSORS_DTYPES)}")
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} cannot be stored in safetensors by hf_tna")
    return _DTYPE_NAMES[dtype]


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or a string like "5GB", "500MB", "2GiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(size))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"cannot read size {size!r}; write e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


MAX_HEADER_SIZE = 100_000_000  # as safetensors


def read_safetensors_header(path: str | Path) -> tuple[dict[str, dict], int, dict]:
    """(tensor name -> {dtype, shape, data_offsets}, byte offset of the data, __metadata__) of one file.

    The header is validated the way safetensors validates it before any byte of data is used: header length
    within bounds and the file, a JSON object, known dtypes, non-negative integer shapes, offsets that tile the
    data buffer in order from 0 without gap or overlap, each span = numel x dtype size, the last ending at the
    end of the file. A file that safetensors would refuse is refused here with the reason.
    """
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file: shorter than 8 bytes")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_SIZE:
            raise ValueError(f"{path} is not a safetensors file: header length {size} exceeds {MAX_HEADER_SIZE}")
        if 8 + size > file_size:
            raise ValueError(f"{path} is not a safetensors file: header length {size} runs past the file end")
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a safetensors file: bad header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    check_header_entries(header, file_size - 8 - size, path)
    return header, 8 + size, metadata


def check_header_entries(header: dict, data_size: int, path) -> None:
    """The per-tensor checks of `read_safetensors_header` (see there)."""
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{path}: tensor {name!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise ValueError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise ValueError(
                f"{path}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes, but shape {shape} of {dtype} "
                f"needs {nbytes}"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            what = "overlaps the tensor before it" if start < end else "leaves a gap before it"
            raise ValueError(f"{path}: invalid offset: tensor {name!r} starts at byte {start}, which {what}")
        end = stop
    if end != data_size:
        raise ValueError(
            f"{path}: the tensors cover {end} bytes of data, the file holds {data_size}: truncated or padded file"
        )


class StreamingCheckpointReader(CheckpointReader):
    """A `CheckpointReader` that reads each tensor with plain file reads instead of mmap.

    Only the tensors asked for occupy memory (mapped files would count every page touched in the
    process' resident set), so fusing N checkpoints needs memory for a few tensors, not N models.
    `specs()` gives name -> (shape, safetensors dtype) from the headers, without reading data.
    """

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        self._headers: dict[str, tuple[dict, int]] = {}
        self._files: dict[str, object] = {}
        for filename in sorted(set(self.weight_map.values())):
            header, start, _ = read_safetensors_header(self.folder / filename)
            self._headers[filename] = (header, start)
        for name, filename in self.weight_map.items():
            if name not in self._headers[filename][0]:
                raise ValueError(f"the index of {self.folder} puts tensor {name!r} in {filename}, which lacks it")

    def _entry(self, name: str) -> tuple[str, dict, int]:
        filename = self.weight_map.get(name)
        if filename is None:
            raise KeyError(f"tensor {name!r} is not in checkpoint {self.folder}")
        header, start = self._headers[filename]
        return filename, header[name], start

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)[1]["shape"])

    def dtype(self, name: str) -> str:
        return self._entry(name)[1]["dtype"]

    def specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {name: (self.shape(name), self.dtype(name)) for name in self.keys()}

    def get(self, name: str) -> torch.Tensor:
        shape = self.shape(name)
        return self.read_range(name, 0, math.prod(shape)).reshape(shape)

    def read_range(self, name: str, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor, read into `out` (a 1-D buffer of the tensor's
        dtype with at least stop - start elements, reused across calls) or a new tensor."""
        filename, entry, data_start = self._entry(name)
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} in {self.folder / filename} has unsupported dtype {entry['dtype']}")
        count = stop - start
        if out is None:
            out = torch.empty(count, dtype=dtype)
        elif out.dtype != dtype or out.dim() != 1 or out.numel() < count:
            raise ValueError(f"buffer for {name!r} must be 1-D {dtype} with >= {count} elements")
        out = out[:count]
        if filename not in self._files:
            self._files[filename] = open(self.folder / filename, "rb", buffering=0)
        f = self._files[filename]
        f.seek(data_start + entry["data_offsets"][0] + start * dtype.itemsize)
        view, done = memoryview(out.view(torch.uint8).numpy()), 0
        while done < len(view):
            got = f.readinto(view[done:])
            if not got:
                raise ValueError(f"{self.folder / filename} is truncated: tensor {name!r} ends past the file")
            done += got
        return out

    def close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()
        super().close()


def tensor_nbytes(shape, dtype: str) -> int:
    return math.prod(shape) * SAFETENSORS_DTYPES[safetensors_dtype(dtype)].itemsize


def plan_shards(specs: dict[str, tuple], max_shard_size: int | str) -> list[list[str]]:
    """Split tensor names (in the given order) into consecutive shards of at most `max_shard_size` bytes.

    A tensor bigger than the limit gets a shard of its own (as transformers does).
    """
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for name, (shape, dtype) in specs.items():
        nbytes = tensor_nbytes(shape, dtype)
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


class ShardedSafetensorsWriter:
    """Write a (sharded) safetensors checkpoint one tensor at a time, in any order.

    The layout is planned from `specs` (name -> (shape, dtype)) up front, so each shard's header is
    written first and every tensor goes straight to its place: memory holds one tensor, never a shard.
    Files are named like transformers' (`model.safetensors`, or `model-00001-of-00003.safetensors` plus
    `model.safetensors.index.json`). `close()` checks every tensor was written; use as a context manager.
    """

    def __init__(self, folder, specs: dict[str, tuple], max_shard_size: int | str = "5GB",
                 weights_name: str = SAFE_WEIGHTS_NAME, metadata: dict | None = None):
        self.folder = Path(folder)
        self.specs = {name: (tuple(shape), safetensors_dtype(dtype)) for name, (shape, dtype) in specs.items()}
        shards = plan_shards(self.specs, max_shard_size)
        stem, ext = weights_name.rsplit(".", 1)
        self.files = [weights_name] if len(shards) == 1 else [
            f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))
        ]
        self.index_name = f"{weights_name}.index.json"
        self.weight_map: dict[str, str] = {}
        self._where: dict[str, tuple[int, int]] = {}
        self._handles = []
        self._written: dict[str, int] = {}
        meta = {"format": "pt", **(metadata or {})}
        self.total_size = 0
        for filename, names in zip(self.files, shards):
            header, offset = {"__metadata__": meta}, 0
            for name in names:
                shape, dtype = self.specs[name]
                nbytes = tensor_nbytes(shape, dtype)
                header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            f = open(self.folder / filename, "wb")
            f.write(struct.pack("<Q", len(raw)) + raw)
            start = 8 + len(raw)
            f.truncate(start + offset)
            self._handles.append(f)
            for name in names:
                self.weight_map[name] = filename
                self._where[name] = (len(self._handles) - 1, start + header[name]["data_offsets"][0])
            self.total_size += offset

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write a whole tensor (shape and dtype as planned)."""
        if name in self.specs and tuple(tensor.shape) != self.specs[name][0]:
            raise ValueError(f"tensor {name!r} has shape {tuple(tensor.shape)}, the plan says {self.specs[name][0]}")
        self.write_range(name, tensor.reshape(-1), 0)

    def write_range(self, name: str, values: torch.Tensor, start: int) -> None:
        """Write 1-D `values` as elements [start, start + len) of the flattened tensor `name`."""
        if name not in self.specs:
            raise KeyError(f"tensor {name!r} is not in the planned checkpoint")
        shape, dtype = self.specs[name]
        if safetensors_dtype(values.dtype) != dtype:
            raise ValueError(f"tensor {name!r} is {values.dtype}, the plan says {dtype}")
        if start < 0 or start + values.numel() > math.prod(shape):
            raise ValueError(f"elements [{start}, {start + values.numel()}) are outside tensor {name!r} of shape {shape}")
        handle, offset = self._where[name]
        data = values.detach().cpu().contiguous().view(torch.uint8).numpy()
        f = self._handles[handle]
        f.seek(offset + start * SAFETENSORS_DTYPES[dtype].itemsize)
        f.write(memoryview(data))
        self._written[name] = self._written.get(name, 0) + values.numel()

    def close(self) -> list[str]:
        """Close the files, write the index when sharded; return the files written."""
        for f in self._handles:
            f.close()
        self._handles = []
        missing = sorted(n for n, (shape, _) in self.specs.items() if self._written.get(n, 0) < math.prod(shape))
        if missing:
            raise ValueError(f"checkpoint incomplete: tensor {missing[0]!r} (and {len(missing) - 1} more) never written")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(self.weight_map.items()))}
            (self.folder / self.index_name).write_text(json.dumps(index, indent=2) + "\n")
            return [*self.files, self.index_name]
        return list(self.files)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            for f in self._handles:
                f.close()
            self._handles = []

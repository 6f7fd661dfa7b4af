"""Writing a fused checkpoint: validated first, streamed tensor by tensor (or chunk by chunk) into planned
safetensors shards in a locked temporary folder beside the target, renamed into place at the end.

Every written tensor or chunk is checked finite (`check_output_finite`); output dtypes are floating only
(`hf_tna.merge.config.torch_dtype`); a failed or interrupted run leaves no output folder (`scratch_for`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME,
    SAFETENSORS_DTYPES,
    ShardedSafetensorsWriter,
    safetensors_dtype,
)
from ..manifest import TNAFileConfig, layout_from_manifest, manifest_entry
from ..workspace import locked_scratch
from .config import SoupConfig, torch_dtype
from .ingredients import Ingredient, validate_soup_ingredients
from .ops import all_finite, check_output_finite, finite_or_wide, is_excluded, wide

# files copied from the first ingredient (globs); weights, training state and custom code are not
COPIED_FILES = (
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "image_processor_config.json", "feature_extractor_config.json", "video_preprocessor_config.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
    "*.tiktoken", "chat_template.*", "adapter_config.json",
)
CHUNK_ELEMENTS = 1 << 18  # 1 MB of float32 per buffer: the working set stays in cache


def copy_side_files(src: Path | None, dst: Path, trust_remote_code: bool = False) -> list[str]:
    """Copy config, tokenizer and processor files (and custom `*.py` code only if trusted)."""
    if src is None:
        return []
    copied = []
    for path in sorted(src.iterdir()):
        if not path.is_file():
            continue
        wanted = any(fnmatch.fnmatch(path.name, g) for g in COPIED_FILES)
        if path.suffix == ".py":
            wanted = trust_remote_code
        if wanted and not path.name.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(path, dst / path.name)
            copied.append(path.name)
    return copied


def output_specs(ingredients, dtype, exclude, exclude_from):
    """name -> (shape, dtype) of the output, in the first ingredient's file order."""
    out = {}
    for key in ingredients[0].order():
        if exclude and is_excluded(key, exclude) and exclude_from is None:
            continue
        shape, st_dtype = ingredients[0].specs[key]
        floating = st_dtype.startswith(("F", "BF"))
        out[key] = (shape, safetensors_dtype(dtype) if dtype is not None and floating else st_dtype)
    return out


def check_output_dir(output_dir) -> Path:
    """The output folder: it must not exist, or be empty."""
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"output folder {output_dir} exists and is not empty; choose another or remove it")
    return output_dir


def scratch_for(output_dir: Path):
    """The hidden temporary folder beside `output_dir` that a result is written into, then renamed; removed on
    any failure, and by the next run if this process is killed (`hf_tna.workspace.locked_scratch`)."""
    return locked_scratch(output_dir.parent, f".{output_dir.name}.tmp-")


def finish_output(tmp: Path, output_dir: Path) -> None:
    if output_dir.exists():
        output_dir.rmdir()  # empty, checked in check_output_dir
    tmp.rename(output_dir)


def dtype_name_of(ingredient: Ingredient) -> str:
    """The floating dtype of an ingredient's tensors ('mixed' when several)."""
    dtypes = sorted({d for _, d in ingredient.specs.values() if d.startswith(("F", "BF"))})
    return str(SAFETENSORS_DTYPES[dtypes[0]]).replace("torch.", "") if len(dtypes) == 1 else "mixed"


@dataclass
class FusionPlan:
    """How a fused checkpoint is made.

    `fuse(key)` returns the fused tensor of a name (before the output dtype cast); element-wise methods also give
    `chunk_fuse(key, start, stop)`, the fused elements [start, stop) of the flattened tensor, and tensors are then
    streamed in chunks of `CHUNK_ELEMENTS`. The output has the tensors and side files of `template` (default: the
    first ingredient; a template, e.g. the base of merged LoRA soups, means no `tna_config.json`), in files named
    like `weights_name`. `validated`: the ingredients were already validated (and warned about)."""

    fuse: Callable[[str], torch.Tensor]
    chunk_fuse: Callable[[str, int, int], torch.Tensor] | None = None
    template: Ingredient | None = None
    weights_name: str = SAFE_WEIGHTS_NAME
    max_shard_size: int | str | None = None
    validated: bool = False


def write_fused(ingredients: Sequence[Ingredient], output_dir, plan: FusionPlan, config: SoupConfig,
                artefacts: Callable[[Path, TNAFileConfig | None, str], None] | None = None
                ) -> tuple[Path, TNAFileConfig | None, str]:
    """Validate, then write every tensor of `plan` into `output_dir`; `artefacts(folder, anchors, dtype)` writes
    the recipe and card into the temporary folder before it is renamed. Returns (output folder, the soup's anchor
    config or None, output dtype name). Uses `config`'s dtype, exclude, exclude_from, max_shard_size,
    require_anchors, verify, trust_remote_code and progress."""
    from tqdm.auto import tqdm

    dtype = torch_dtype(config.dtype)
    exclude, exclude_from = config.exclude, config.exclude_from
    with warnings.catch_warnings():
        if plan.validated:
            warnings.simplefilter("ignore")
        anchors = validate_soup_ingredients(ingredients, config.require_anchors,
                                            config.verify and not plan.validated, dtype)
    if plan.template is not None:
        anchors = None
    template = plan.template or ingredients[0]
    specs = output_specs([template], dtype, exclude, exclude_from)
    output_dir = check_output_dir(output_dir)
    threads = torch.get_num_threads()
    try:
        with scratch_for(output_dir) as tmp:  # removed on failure; renamed into place at the end
            manifest = dict(anchors.manifest) if anchors is not None else {}
            recompute = anchors is not None and dtype is not None
            torch.set_num_threads(1)  # streamed element-wise work is memory-bound; one thread avoids OpenMP waits
            pending = None  # the previous chunk's write runs in a thread while the next chunk is computed
            shard = plan.max_shard_size if plan.max_shard_size is not None else config.max_shard_size
            with ShardedSafetensorsWriter(tmp, specs, shard, plan.weights_name) as writer, \
                    ThreadPoolExecutor(max_workers=1) as pool:
                for key in tqdm(list(specs), desc="soup", unit="tensor", disable=not config.progress):
                    excluded = bool(exclude) and is_excluded(key, exclude)
                    if plan.chunk_fuse is not None and not excluded and not (recompute and key in manifest):
                        numel = math.prod(specs[key][0])
                        for start in range(0, numel, CHUNK_ELEMENTS):
                            stop = min(numel, start + CHUNK_ELEMENTS)
                            values = plan.chunk_fuse(key, start, stop)
                            finite = all_finite(values)
                            if not finite:
                                if pending is not None:  # its buffers are read again below
                                    pending.result()
                                    pending = None
                                with wide():  # a float32 overflow of finite inputs: the chunk again, in float64
                                    values = plan.chunk_fuse(key, start, stop)
                            if dtype is not None:
                                values, finite = values.to(dtype), False  # a cast can overflow the output dtype
                            if not finite:
                                check_output_finite(values, key)
                            pending = _write_async(pool, pending, writer.write_range, key, values, start)
                        continue
                    if excluded:
                        tensor = ingredients[exclude_from].get(key)
                    else:
                        tensor = finite_or_wide(lambda key=key: plan.fuse(key))
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    check_output_finite(tensor, key)
                    if recompute and key in manifest:
                        layout = layout_from_manifest(key, manifest[key])
                        manifest[key] = manifest_entry(tensor, layout, anchors.spec)
                    pending = _write_async(pool, pending, writer.write, key, tensor)
                if pending is not None:
                    pending.result()
            torch.set_num_threads(threads)
            copy_side_files(template.folder, tmp, config.trust_remote_code)
            if plan.weights_name == ADAPTER_SAFE_WEIGHTS_NAME and not (tmp / "adapter_config.json").exists():
                (tmp / "adapter_config.json").write_text(json.dumps(template.adapter_config, indent=2, sort_keys=True))
            soup_tna = None
            if anchors is not None:
                soup_tna = TNAFileConfig(anchors.spec, manifest, anchors.base_model, anchors.base_revision)
                soup_tna.save(tmp)
            dtype_name = str(dtype).replace("torch.", "") if dtype is not None else dtype_name_of(template)
            if artefacts is not None:
                artefacts(tmp, soup_tna, dtype_name)
            finish_output(tmp, output_dir)
    finally:
        torch.set_num_threads(threads)
        for ing in {id(i): i for i in [*ingredients, template]}.values():
            ing.close()
    return output_dir, soup_tna, dtype_name


def _write_async(pool, pending, write, *args):
    """Wait for the previous write, then start this one (one write in flight; double-buffered chunks)."""
    if pending is not None:
        pending.result()
    return pool.submit(write, *args)


def chunk_fuser(ingredients: Sequence[Ingredient], merge: Callable, reuse_buffers: bool,
                base: Ingredient | None = None):
    """``chunk_fuse(key, start, stop)``: `merge` (an element-wise method's `merge_tensors`) of elements
    [start, stop) of every ingredient (and of `base`, passed as ``base=``).

    With `reuse_buffers` (methods that consume their inputs one at a time, such as averages) file ingredients are
    read into three reused buffers (first, running deviation, current) and handed over as consumable, so memory
    holds three chunks whatever the number of ingredients and nothing is allocated per chunk; two such sets
    alternate so that one chunk is written while the next is computed. Other methods get fresh reads.
    """
    fresh = reuse_buffers and all(ing.reader is not None for ing in ingredients)
    buffers: dict[tuple, torch.Tensor] = {}

    def buffer(dtype, slot):
        if (dtype, slot) not in buffers:
            buffers[(dtype, slot)] = torch.empty(CHUNK_ELEMENTS, dtype=dtype)
        return buffers[(dtype, slot)]

    calls = [0]

    def chunk_fuse(key, start, stop):
        calls[0] += 1
        parity = 3 * (calls[0] % 2)  # two buffer sets: one is written out while the other is filled
        reads = (
            ing.get_range(key, start, stop, buffer(SAFETENSORS_DTYPES[ing.specs[key][1]], parity + min(i, 2))
                          if fresh else None)
            for i, ing in enumerate(ingredients)
        )
        extra = {} if base is None else {"base": base.get_range(key, start, stop)}
        return merge(reads, consume=fresh, **extra)

    return chunk_fuse

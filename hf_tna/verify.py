"""`verify_anchors`: are a checkpoint's anchored entries still at their anchor values? (`hf-tna verify`)

The one anchor verifier: `hf-tna verify`, soup ingredients (`hf_tna.merge.ingredients`) and ColD fusion
contributions (`hf_tna.coldfuse.fuser`) all go through `verify_anchors_many`, which

- opens each checkpoint: a local folder when one exists at the path, else a Hub id ``org/name@revision``
  through a store (`hf_tna.hub.resolve_folder`), an in-memory model or state dict, or an open reader;
- checks that the `tna_config.json` of the checkpoints agree (`check_manifests_agree`: one spec, the same
  anchored tensors with the same entries, whatever the order of the checkpoints);
- draws each tensor's anchor selection once and compares every checkpoint's anchored values with the base's,
  or (without a base) with the sha256 in the manifest;
- names the tensors the spec targets that the manifest does not list (`unlisted`): a manifest with an entry
  removed would otherwise hide that tensor's drift. Checkpoints fused together are compared symmetrically, so
  one with an entry removed is refused; a single checkpoint's unlisted tensors are compared with the base when
  one is given (without a base they are reported: a frozen parameter looks the same).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .anchors import AnchorSelection, AnchorSpec, build_layouts, checkpoint_names
from .hub import resolve_folder
from .io import SAFETENSORS_DTYPES, StreamingCheckpointReader
from .manifest import CONFIG_NAME, TNAFileConfig, layout_from_manifest, values_sha256

FLOAT_DTYPES = frozenset(name for name, dtype in SAFETENSORS_DTYPES.items() if dtype.is_floating_point)


class _Tensors:
    """Checkpoint-named tensors in memory (a model's parameters, a state dict), read like a `CheckpointReader`."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], where: str):
        self.tensors, self.where = tensors, where

    def keys(self) -> list[str]:
        return sorted(self.tensors)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise KeyError(f"{self.where} has no tensor {name!r}")
        return self.tensors[name]


@dataclass
class _Checkpoint:
    """One opened checkpoint: its name in messages, a reader, its anchor config, the model when in memory."""

    name: str
    reader: object
    config: TNAFileConfig | None = None
    model: torch.nn.Module | None = None
    owned: bool = False  # opened here, closed here

    def get(self, layout) -> torch.Tensor:
        try:
            tensor = self.reader.get(layout.name)
        except KeyError:
            raise ValueError(f"anchored tensor {layout.name!r} is missing from {self.name}") from None
        if tuple(tensor.shape) != layout.shape:
            raise ValueError(
                f"tensor {layout.name!r} has shape {tuple(tensor.shape)} in {self.name}, the anchors expect "
                f"{layout.shape}: the anchor spec was made for another model"
            )
        return tensor

    def float_names(self, spec: AnchorSpec) -> set[str]:
        """Names of the floating-point tensors the spec targets (for an in-memory model: its anchor layouts)."""
        if self.model is not None:
            return {layout.name for layout, _ in build_layouts(self.model, spec)}
        reader = self.reader
        if isinstance(reader, _Tensors):
            names = {k for k, t in reader.tensors.items() if t.is_floating_point()}
        else:
            names = {k for k in reader.keys() if reader.dtype(k) in FLOAT_DTYPES}
        return {name for name in names if spec.targets(name)}


def _open(source, store, name: str | None, config: TNAFileConfig | None, load_config: bool = True) -> _Checkpoint:
    if isinstance(source, torch.nn.Module):
        where = name or f"the {type(source).__name__} model"
        names = checkpoint_names(source)
        tensors = {names[id(p)]: p.detach() for p in source.parameters() if id(p) in names}
        return _Checkpoint(where, _Tensors(tensors, where), config, model=source)
    if isinstance(source, Mapping):
        where = name or "the state dict"
        return _Checkpoint(where, _Tensors(source, where), config)
    if callable(getattr(source, "get", None)) and callable(getattr(source, "keys", None)):  # an open reader
        return _Checkpoint(name or str(getattr(source, "folder", "the checkpoint")), source, config)
    folder, _ = resolve_folder(source, store)
    if config is None and load_config and (folder / CONFIG_NAME).exists():
        config = TNAFileConfig.load(folder)
    return _Checkpoint(name or str(source), StreamingCheckpointReader(folder), config, owned=True)


def _entry(name: str, entry: dict) -> tuple:
    """What a manifest entry says about the anchors (defaults filled in, so old and new files compare)."""
    return layout_from_manifest(name, entry), entry["num_anchored"], entry["sha256"], entry.get("dtype")


def check_manifests_agree(configs: Sequence[TNAFileConfig], names: Sequence[str]) -> TNAFileConfig | None:
    """The anchor config that all `configs` agree on (None when there is none), else ValueError.

    Symmetric: the spec, the set of anchored tensors and every tensor's entry must be the same in each, so the
    order of the checkpoints does not matter and an entry missing from any one of them is found. The error
    names the checkpoint (from `names`) and the tensor.
    """
    if not configs:
        return None
    lead, lead_name = configs[0], names[0]
    for config, name in zip(configs[1:], names[1:]):
        if config.spec != lead.spec:
            raise ValueError(
                f"{name} was anchored with {config.spec.to_dict()}, {lead_name} with {lead.spec.to_dict()}: "
                "checkpoints fused or verified together need one anchor spec"
            )
        only_lead = sorted(set(lead.manifest) - set(config.manifest))
        only_this = sorted(set(config.manifest) - set(lead.manifest))
        if only_lead or only_this:
            key, has, lacks = (only_lead[0], lead_name, name) if only_lead else (only_this[0], name, lead_name)
            raise ValueError(
                f"{lacks}: {CONFIG_NAME} does not list anchored tensor {key!r}, which the one of {has} lists "
                f"({len(only_lead) + len(only_this)} tensor(s) differ): an edited manifest, or checkpoints "
                "anchored on other models; checkpoints fused together need one base and one manifest"
            )
        for key in sorted(lead.manifest):
            if _entry(key, config.manifest[key]) != _entry(key, lead.manifest[key]):
                raise ValueError(
                    f"{name}: anchored tensor {key!r} has other anchor values than {lead_name} (anchored on "
                    "another base); checkpoints fused together need one base. If it is a weight the runs added "
                    "(a fresh head, new embedding rows, adapters), they were initialised differently: train them "
                    "with anchor_shared_init=True (the default) so every run starts them from the anchor seed"
                )
    return lead


def verify_anchors(
    model_or_path, base_or_path=None, spec: AnchorSpec | None = None, config: TNAFileConfig | None = None, store=None
) -> dict:
    """Check that the anchored entries of a model hold their anchor values.

    Args:
        model_or_path: an in-memory model, a checkpoint folder (safetensors) or a Hub id ``org/name@revision``.
        base_or_path: the base (model, folder or Hub id) the anchors were taken from. Without it, the anchored
            values are checked against the sha256 hashes in the manifest of `tna_config.json`.
        spec: the anchor spec; defaults to the one in `config` or the model folder's `tna_config.json`.
        config: a `TNAFileConfig` (spec + manifest); defaults to the model folder's `tna_config.json`.
        store: where Hub ids are read from (anything `hf_tna.hub.open_store` accepts; default: the Hub).

    Returns a report: `intact` (bool: no anchored entry drifted and, with a base, no targeted tensor missing from
    the manifest differs from the base), `fraction_intact` (anchored entries equal to their anchor values, over all anchored entries;
    from hashes, a tensor counts whole), `num_anchored`, `spec`, `unlisted` (tensors the spec targets that
    the manifest does not list: an entry removed from it, or a frozen parameter / float buffer the patterns
    match; without a base they cannot be checked), `unlisted_changed` (those that differ from the base), and per
    tensor `num_anchored`, `num_drifted`, `max_abs_drift` (with a base) or `hash_ok` (from the
    manifest). Several checkpoints at once: `verify_anchors_many`.
    """
    return verify_anchors_many([model_or_path], base_or_path, spec, config, store=store)[0]


def verify_anchors_many(
    checkpoints: Sequence,
    base=None,
    spec: AnchorSpec | None = None,
    config: TNAFileConfig | Sequence[TNAFileConfig | None] | None = None,
    names: Sequence[str] | None = None,
    store=None,
    progress: bool | None = False,
) -> list[dict]:
    """`verify_anchors` of several checkpoints against one base (or their manifests): one report each, in order.

    Each tensor's anchor selection is drawn once (and the base tensor read once) for all checkpoints.
    `progress`: a progress bar over the tensors (None: when the output is a terminal).
    `config` is one `TNAFileConfig` for all, or one per checkpoint (None: the folder's `tna_config.json`);
    the configs of all checkpoints must agree (`check_manifests_agree`). `names` name the checkpoints in
    errors (default: the path, or what an in-memory checkpoint is). Checkpoints may also be open readers
    (with `get` and `keys`), which are left open.
    """
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise ValueError("nothing to verify: pass at least one checkpoint")
    configs = list(config) if isinstance(config, Sequence) else [config] * len(checkpoints)
    names = list(names) if names is not None else [None] * len(checkpoints)
    if len(configs) != len(checkpoints) or len(names) != len(checkpoints):
        raise ValueError(f"{len(checkpoints)} checkpoints need as many configs and names, "
                         f"got {len(configs)} and {len(names)}")
    opened: list[_Checkpoint] = []
    try:
        for source, cfg, name in zip(checkpoints, configs, names):
            opened.append(_open(source, store, name, cfg))
        if base is not None:
            where = f"the base {type(base).__name__ if isinstance(base, torch.nn.Module) else base}"
            opened.append(_open(base, store, where, None, load_config=False))
            return _verify(opened[:-1], opened[-1], spec, progress)
        return _verify(opened, None, spec, progress)
    finally:
        for checkpoint in opened:
            if checkpoint.owned:
                checkpoint.reader.close()


def _verify(checkpoints: list[_Checkpoint], base: _Checkpoint | None, spec: AnchorSpec | None,
            progress: bool | None = False) -> list[dict]:
    with_config = [c for c in checkpoints if c.config is not None]
    agreed = check_manifests_agree([c.config for c in with_config], [c.name for c in with_config])
    if spec is None:
        if agreed is None:
            from .errors import in_command_line

            fix = ("it was not trained with anchors, or its manifest was not saved with it" if in_command_line()
                   else "pass spec= (and base_or_path=) to verify it")
            raise ValueError(f"no anchor spec: {checkpoints[0].name} has no {CONFIG_NAME}; {fix}")
        spec = agreed.spec
    elif agreed is not None and agreed.spec != spec:
        raise ValueError(f"spec {spec} differs from the {CONFIG_NAME} spec {agreed.spec}")
    manifest = agreed.manifest if agreed is not None else {}
    if manifest:
        layouts = agreed.layouts()
    else:
        model = next((c.model for c in [*checkpoints, base] if c is not None and c.model is not None), None)
        if model is None:
            raise ValueError(
                f"cannot tell which tensors are anchored: {CONFIG_NAME} has no manifest and no model was given"
            )
        layouts = [layout for layout, _ in build_layouts(model, spec)]
    if base is None and not manifest:
        raise ValueError(f"nothing to compare with: pass base_or_path or a {CONFIG_NAME} with a manifest")

    tensors: list[dict] = [{} for _ in checkpoints]
    totals, intacts = [0] * len(checkpoints), [0] * len(checkpoints)
    from tqdm.auto import tqdm

    for layout in tqdm(layouts, desc="verify", unit="tensor", disable=None if progress is None else not progress):
        selection = AnchorSelection(layout, spec)  # drawn once for every checkpoint
        reference = selection.take(base.get(layout)).cpu() if base is not None else None
        for i, checkpoint in enumerate(checkpoints):
            values = selection.take(checkpoint.get(layout)).cpu()
            report = {"num_anchored": int(values.numel())}
            if reference is not None:
                same = values == reference
                report["num_drifted"] = int(same.numel() - same.sum())
                diff = (values.double() - reference.double()).abs().nan_to_num(float("inf"))
                report["max_abs_drift"] = float(diff.max()) if diff.numel() else 0.0
                intacts[i] += int(same.sum())
            else:
                entry = manifest[layout.name]
                ok = values_sha256(values) == entry["sha256"] and values.numel() == entry["num_anchored"]
                report["hash_ok"] = ok
                intacts[i] += values.numel() if ok else 0
            totals[i] += values.numel()
            tensors[i][layout.name] = report
    reports = []
    for i, checkpoint in enumerate(checkpoints):
        unlisted = sorted(checkpoint.float_names(spec) - set(manifest)) if manifest else []
        # Without a base an unlisted tensor cannot be told from a frozen parameter or a float buffer: it is
        # reported. With a base, one that differs from the base was trained without anchors (or is a buffer
        # such as BatchNorm statistics): the checkpoint is not intact.
        changed = [name for name in unlisted if base is not None and _differs(checkpoint, base, name)]
        reports.append({
            "intact": intacts[i] == totals[i] and not changed,
            "unlisted_changed": changed,
            "fraction_intact": intacts[i] / totals[i] if totals[i] else 1.0,
            "num_anchored": totals[i],
            "spec": spec.to_dict(),
            "tensors": tensors[i],
            "unlisted": unlisted,
        })
    return reports


def _differs(checkpoint: _Checkpoint, base: _Checkpoint, name: str) -> bool:
    try:
        return not torch.equal(checkpoint.reader.get(name), base.reader.get(name))
    except (KeyError, RuntimeError):
        return True  # missing from the base, or another shape


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "verify", help="check that a checkpoint's anchored entries hold their anchor values",
        description="Check a checkpoint's anchors against its base (or the hashes in its tna_config.json). "
        "Exits 1 when any anchored entry drifted, or (with --base) a tensor the anchor spec targets but the manifest "
        "does not list differs from the base.",
    )
    parser.add_argument("model", help="checkpoint folder with safetensors weights and tna_config.json, or a Hub "
                        "id org/name[@revision]")
    parser.add_argument("--base", default=None, help="base checkpoint folder or Hub id (default: use the manifest "
                        "hashes)")
    parser.add_argument("--store", default=None, help="where Hub ids are read from: hub (HF_ENDPOINT, the "
                        "default), a Hub-compatible URL or a local store folder")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (default: shown on a terminal)")
    parser.set_defaults(func=run_verify)
    return parser


def run_verify(args) -> int:
    report = verify_anchors_many([args.model], args.base, store=args.store, progress=args.progress)[0]
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0 if report["intact"] else 1
    drifted = [name for name, t in report["tensors"].items() if t.get("num_drifted", 0) or t.get("hash_ok") is False]
    verdict = "anchors intact" if report["intact"] else "ANCHORS DRIFTED" if drifted else "ANCHORS UNVERIFIED"
    print(
        f"{args.model}: {verdict} "
        f"({report['fraction_intact']:.6f} of {report['num_anchored']} anchored entries intact, "
        f"{len(report['tensors'])} tensors)"
    )
    for name in drifted[:20]:
        print(f"  drifted: {name} {report['tensors'][name]}")
    unlisted, changed = report["unlisted"], report["unlisted_changed"]
    if unlisted:
        how = "they differ from the base" if changed else "compared with the base: unchanged" if args.base else (
            "pass --base to compare them with the base")
        print(f"  {len(unlisted)} tensor(s) the anchor spec targets are not in the {CONFIG_NAME} manifest (frozen "
              f"parameters, float buffers, or an edited manifest); {how}:")
        for name in (changed or unlisted)[:20]:
            print(f"  not in the manifest: {name}")
    return 0 if report["intact"] else 1

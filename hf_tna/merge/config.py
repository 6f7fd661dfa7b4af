"""`SoupConfig`: every setting of a soup, in one flat dataclass that is `build_soup`'s argument, the
`hf-tna soup` command line (`HfArgumentParser`) and, for the fields in `RECIPE_FIELDS`, hf_tna's recipe format.

The method's own settings (`weights`, `normalize`, `alpha`, `base`, `kept`, the evaluation set) are checked against
what the registered method takes (`hf_tna.merge.methods`): a setting it does not use is an error, not ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field

import torch

from ..errors import option
from ..io import parse_size
from .evaluation import TASKS
from .methods import get_method

METRICS = ("accuracy", "loss")
LORA_MODES = ("merged", "factors")
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "float64": torch.float64}
ALIASES = {"method": "merge_method"}  # also the --method flag
EVALUATION_FIELDS = ("dataset", "split", "task", "max_samples", "batch_size", "input_column", "label_column",
                     "max_length")
# the fields a recipe holds: what the weights are made from and how (not where they go or which checks run)
RECIPE_FIELDS = ("merge_method", "weights", "normalize", "alpha", "kept", "metric", "exclude", "exclude_from",
                 "dtype", "base", "lora_mode", *EVALUATION_FIELDS)


def torch_dtype(dtype) -> torch.dtype | None:
    """The output dtype: None (the inputs') or a floating type; integer and bool outputs are refused."""
    if dtype is None:
        return None
    value = dtype if isinstance(dtype, torch.dtype) else FLOAT_DTYPES.get(str(dtype).replace("torch.", ""))
    if value not in FLOAT_DTYPES.values():
        raise ValueError(f"dtype {dtype!r} is not a floating type a soup can be written in; use "
                         f"{', '.join(FLOAT_DTYPES)}")
    return value


def nearest(name: str, valid) -> str:
    """' (did you mean X?)' for the valid name closest to `name`, or ''."""
    near = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


@dataclass
class EvaluationArguments:
    """The held-out split a greedy soup or a barrier is scored on.

    Args:
        dataset (`str`, *optional*): a `save_to_disk` folder, a csv/json(l)/parquet file, a text file (one example
            per line) or a `datasets` loader name.
        split (`str`, defaults to `"validation"`): split of `dataset`.
        task (`str`, *optional*): image-classification, sequence-classification or causal-lm (default: from the
            model). Causal LMs are scored by the token-weighted mean cross-entropy of their next-token predictions
            (perplexity = exp of it) and next-token accuracy.
        max_samples (`int`, *optional*): evaluate on at most this many samples.
        batch_size (`int`, defaults to 32): evaluation batch size.
        input_column (`str`, *optional*): raw text or image column (default: text / image); also `--text-column`.
        label_column (`str`, defaults to `"label"`): label column (classifiers).
        max_length (`int`, *optional*): truncate texts to this many tokens (default: the tokenizer's limit for
            classifiers, none for causal LMs).
    """

    dataset: str | None = field(default=None, metadata={
        "help": "Evaluation data: a save_to_disk folder, a csv/json/parquet or .txt file or a datasets loader name."})
    split: str = field(default="validation", metadata={"help": "Split of --dataset."})
    task: str | None = field(default=None, metadata={
        "help": "Task of the models (default: from their class); causal-lm: token-weighted loss and perplexity.",
        "choices": list(TASKS)})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many samples."})
    batch_size: int = field(default=32, metadata={"help": "Evaluation batch size."})
    input_column: str | None = field(default=None, metadata={
        "help": "Raw text or image column (default: text / image).", "aliases": ["--text-column", "--text_column"]})
    label_column: str = field(default="label", metadata={"help": "Label column (classifiers)."})
    max_length: int | None = field(default=None, metadata={
        "help": "Truncate texts to this many tokens (default: the tokenizer's limit; none for causal LMs)."})

    def __post_init__(self):
        if isinstance(self.dataset, os.PathLike):
            self.dataset = os.fspath(self.dataset)
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be a split name such as 'validation', got {self.split!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("max_samples", "batch_size"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.max_length is not None and (type(self.max_length) is not int or self.max_length < 2):
            raise ValueError(f"max_length must be an int >= 2 (tokens), got {self.max_length!r}")


@dataclass
class SoupConfig(EvaluationArguments):
    """Settings of a model soup: the merge method and its parameters, the output, the checks and the upload.

    Args:
        merge_method (`str`, *optional*): a registered merge method (`hf_tna.merge.methods`): uniform, weighted,
            greedy, interpolate, or one you registered. Default: weighted when `weights` are given, else uniform.
        weights (`list[float]`, *optional*): one weight per ingredient (weighted).
        normalize (`bool`, defaults to True): divide by the sum of the weights (weighted mean); False gives the
            weighted sum.
        alpha (`float`, *optional*): interpolation position between the two ingredients (interpolate): 0 gives the
            first, 1 the second.
        kept (`list[int]`, *optional*): greedy: the ingredients to average, in order, as an earlier greedy run chose
            them (its recipe records them); without it they are chosen by evaluation.
        metric (`str`, defaults to `"accuracy"`): greedy criterion on the evaluation set: accuracy (a causal LM's
            next-token accuracy) or loss (minus the loss is maximised: the lowest perplexity wins).
        exclude (`list[str]`, *optional*): regex patterns of tensors not fused but copied from `exclude_from`.
        exclude_from (`int`, *optional*, defaults to 0): index of the ingredient excluded tensors are copied from;
            None (`--exclude_from none`) drops them.
        dtype (`str`, *optional*): output dtype (float32, bfloat16, float16, float64); default: the inputs'.
        base (`str`, *optional*): base model: the model PEFT LoRA adapter ingredients apply to, or the base of a
            method that takes one.
        lora_mode (`str`, defaults to `"merged"`): adapters souped as merged updates on `base` (exact, a full model)
            or as averaged factors (not exact, an adapter).
        dataset, split, task, max_samples, batch_size, input_column, label_column, max_length: the evaluation set of
            greedy soups
            (`EvaluationArguments`).
        require_anchors (`bool`, defaults to False): refuse ingredients without `tna_config.json`.
        verify (`bool`, defaults to True): check every ingredient's anchored entries against its manifest.
        allow_pickle (`bool`, defaults to False): accept pickle (.bin) weights, which can run code when loaded.
        trust_remote_code (`bool`, defaults to False): copy and run custom model code.
        max_shard_size (`str`, defaults to `"5GB"`): largest safetensors shard.
        progress (`bool`, defaults to True): show a progress bar.
        push_to_hub (`str`, *optional*): repo id (`org/name`) to upload the soup to.
        hub_revision (`str`, defaults to `"main"`): branch to upload to.
        private (`bool`, defaults to False): create the repo private.
        commit_message (`str`, *optional*): message of the upload commit.
        store (`str`, *optional*): where Hub ids are read from and pushed to: hub (HF_ENDPOINT, the default), a
            Hub-compatible URL or a local store folder (from Python, also a store object).
    """

    merge_method: str | None = field(default=None, metadata={
        "help": "Merge method: uniform, weighted, greedy, interpolate, or a registered one (default: weighted with "
        "--weights, else uniform).", "aliases": ["--method"]})
    weights: list[float] | None = field(default=None, metadata={"help": "One weight per ingredient (weighted)."})
    normalize: bool = field(default=True, metadata={
        "help": "Divide by the sum of the weights (weighted mean); --no-normalize gives the weighted sum."})
    alpha: float | None = field(default=None, metadata={
        "help": "Interpolation position (interpolate): 0 gives the first model, 1 the second."})
    kept: list[int] | None = field(default=None, metadata={
        "help": "Greedy: indices of the ingredients to average, in order, as an earlier greedy run chose them "
        "(skips the evaluation)."})
    metric: str = field(default="accuracy", metadata={"help": "Greedy criterion on --dataset (causal LMs: loss "
                                                               "picks by perplexity, accuracy is next-token accuracy).",
                                                       "choices": list(METRICS)})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "Regex patterns of tensors not fused but copied from --exclude-from."})
    exclude_from: int | None = field(default=0, metadata={
        "help": "Ingredient index excluded tensors are copied from, or none to drop them."})
    dtype: str | None = field(default=None, metadata={
        "help": "Output dtype: float32, bfloat16, float16 or float64 (default: the inputs')."})
    base: str | None = field(default=None, metadata={
        "help": "Base model (folder or Hub id): the model of PEFT LoRA adapter ingredients, or a method's base."})
    lora_mode: str = field(default="merged", metadata={
        "help": "LoRA adapters: merged updates on --base (exact, a full model) or averaged factors (not exact).",
        "choices": list(LORA_MODES)})
    require_anchors: bool = field(default=False, metadata={"help": "Refuse ingredients without tna_config.json."})
    verify: bool = field(default=True, metadata={"help": "Check every ingredient's anchors against its manifest."})
    allow_pickle: bool = field(default=False, metadata={
        "help": "Accept pickle (.bin) weights: they can run code when loaded."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Copy and run custom model code."})
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard, e.g. 5GB or 500MB."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Upload the soup to this repo (org/name).",
                                                             "metavar": "REPO"})
    hub_revision: str = field(default="main", metadata={"help": "Branch to upload to.", "aliases": ["--revision"]})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    commit_message: str | None = field(default=None, metadata={"help": "Message of the upload commit."})
    store: str | None = field(default=None, metadata={
        "help": "Where Hub ids are read from and pushed to: hub (HF_ENDPOINT, the default), a Hub-compatible URL "
        "or a local store folder."})

    def __post_init__(self):
        super().__post_init__()
        method = self.method
        for name in ("base", "store", "max_shard_size"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.weights is not None:
            self.weights = _numbers("weights", self.weights)
        if self.alpha is not None:
            self.alpha = _numbers("alpha", [self.alpha])[0]
        if self.kept is not None:
            kept = list(self.kept)
            if not kept or any(type(i) is not int or i < 0 for i in kept) or len(set(kept)) != len(kept):
                raise ValueError(f"kept must be distinct ingredient indices (ints >= 0), got {self.kept!r}")
            self.kept = kept
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        if self.exclude is not None:
            self.exclude = list(self.exclude)
            for pattern in self.exclude:
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as err:
                    raise ValueError(f"exclude pattern {pattern!r} is not a valid regex: {err}") from None
        if self.exclude_from is not None and type(self.exclude_from) is not int:
            raise ValueError(f"exclude_from must be an ingredient index or None, got {self.exclude_from!r}")
        dtype = torch_dtype(self.dtype)
        self.dtype = None if dtype is None else str(dtype).replace("torch.", "")
        if self.lora_mode not in LORA_MODES:
            raise ValueError(f"lora_mode must be one of {', '.join(LORA_MODES)}, got {self.lora_mode!r}")
        parse_size(self.max_shard_size)
        if self.push_to_hub is not None:
            from ..hub import parse_repo_ref

            parse_repo_ref(self.push_to_hub)
        if not isinstance(self.hub_revision, str) or not self.hub_revision:
            raise ValueError(f"hub_revision must be a branch name, got {self.hub_revision!r}")
        self._check_method(method)

    def _check_method(self, method) -> None:
        """Settings the method does not take are refused; settings it requires must be given."""
        name = method.name
        given = {"weights": self.weights is not None, "alpha": self.alpha is not None, "kept": self.kept is not None,
                 "normalize": not self.normalize}
        for setting, is_set in given.items():
            if is_set and setting not in method.settings:
                raise ValueError(f"merge_method {name!r} does not use {setting}; drop "
                                 f"{option(setting, getattr(self, setting))} or choose a method that takes it "
                                 f"({', '.join(_methods_taking(setting)) or 'none registered'})")
        for setting in method.required:
            if setting in ("weights", "alpha") and not given[setting]:
                raise ValueError(f"merge_method {name!r} needs {setting}: pass {option(setting)}")
        evaluates = "score_fn" in method.settings and self.kept is None
        if not evaluates:
            why = "kept skips the evaluation" if self.kept is not None else f"merge_method {name!r} does not evaluate"
            if self.metric != "accuracy":
                raise ValueError(f"metric is only used by soups that evaluate ({why}); drop {option('metric')}")
            if self.dataset is not None:
                raise ValueError(f"dataset is only used by soups that evaluate ({why}); drop {option('dataset')}")

    @property
    def method(self):
        """The registered merge method (`merge_method`, or its default: weighted with weights, else uniform)."""
        if self.merge_method is None:
            return get_method("weighted" if self.weights is not None else "uniform")
        return get_method(self.merge_method)

    def replace(self, **changes) -> SoupConfig:
        """A copy with `changes` (validated again); an unknown name is refused naming the nearest field."""
        names = {f.name for f in dataclasses.fields(self)}
        for alias, name in ALIASES.items():
            if alias in changes:
                if name in changes:
                    raise TypeError(f"give {name} or its alias {alias}, not both")
                changes[name] = changes.pop(alias)
        for key in changes:
            if key not in names:
                raise TypeError(f"SoupConfig has no setting {key!r}{nearest(key, names)}")
        return dataclasses.replace(self, **changes)

    def recipe_dict(self) -> dict:
        """The recipe fields whose value is not the default (`merge_method` always)."""
        defaults = SoupConfig()
        out = {"merge_method": self.method.name}
        for name in RECIPE_FIELDS[1:]:
            value = getattr(self, name)
            if value != getattr(defaults, name):
                out[name] = value
        return out


def _numbers(name: str, values) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    if any(isinstance(v, bool) for v in values) or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return out


def _methods_taking(setting: str) -> list[str]:
    from .methods import METHODS

    return sorted(n for n, m in METHODS.items() if setting in m.settings)

"""The merge-method registry: a merge method is one function in one file of this folder plus one registry line.

    @merge_method("weighted", description="weighted soup: ...", elementwise=True, mergekit="linear")
    def weighted(tensors, weights, normalize=True, consume=False):
        return average_tensors(tensors, weights, normalize, consume=consume)

What a method needs is read from its signature, as mergekit's `easy_define.merge_method` does: a keyword named
after a `SoupConfig` setting (`weights`, `normalize`, `alpha`, `base`; `score_fn` and `kept` for whole-model
methods) is passed that setting; without a default the setting is required, with one it is optional, and a
setting the signature does not name is refused when given. `consume=True` tells a tensor method that the inputs
are fresh buffers it may overwrite.

- Per-tensor methods (the default) get ``tensors``, an iterator over the ingredients' tensors of one name (read
  lazily: iterate once, or `list()` it) and return the fused tensor; `base` is the base model's tensor of the same
  name. ``elementwise=True`` says the output's entry i depends only on the inputs' entries i: tensors are then
  streamed through it in chunks of their flattened elements. The same function fuses PEFT LoRA updates
  (``B @ A``) onto their base model (`hf_tna.merge.lora`).
- Whole-model methods (``whole_model=True``, e.g. greedy soups) get ``state_dicts`` (lazy mappings) and return
  ``(state dict, details)``; `details` (JSON-able) goes into the result, the recipe (`kept`) and the card.

`description` is the card's sentence about the method; `mergekit` the name of the same method in mergekit, for
recipe conversion (`hf_tna.merge.recipe`); `num_models` an exact number of ingredients.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# SoupConfig settings a method may take, by the keyword its function names them with
TENSOR_SETTINGS = ("weights", "normalize", "alpha", "base")
MODEL_SETTINGS = ("weights", "normalize", "score_fn", "kept")
INTERNAL = {"tensor": ("tensors", "consume"), "model": ("state_dicts", "exclude", "exclude_from")}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method (see the module docstring). `required` / `optional`: the settings it needs or
    accepts, read from the function's signature."""

    name: str
    function: Callable
    description: str
    whole_model: bool = False
    elementwise: bool = False
    num_models: int | None = None
    mergekit: str | None = None
    required: tuple[str, ...] = field(init=False)
    optional: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(f"merge method name {self.name!r} must be lower-case letters, digits and '_'")
        if not callable(self.function):
            raise TypeError(f"merge method {self.name!r}: function must be callable, got "
                            f"{type(self.function).__name__}")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"merge method {self.name!r} needs a description (the sentence its model cards use)")
        if self.whole_model and self.elementwise:
            raise ValueError(f"merge method {self.name!r}: a whole-model method cannot be elementwise")
        if self.num_models is not None and (type(self.num_models) is not int or self.num_models < 1):
            raise ValueError(f"merge method {self.name!r}: num_models must be a positive int, got {self.num_models!r}")
        kind = "model" if self.whole_model else "tensor"
        settings = MODEL_SETTINGS if self.whole_model else TENSOR_SETTINGS
        params = list(inspect.signature(self.function).parameters.values())
        first = INTERNAL[kind][0]
        if not params or params[0].name != first:
            raise TypeError(f"merge method {self.name!r}: the first argument of {self.function.__name__} must be "
                            f"`{first}`")
        required, optional = [], []
        for p in params[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"merge method {self.name!r}: name its settings, no *args/**kwargs")
            if p.name in INTERNAL[kind]:
                continue
            if p.name not in settings:
                raise TypeError(f"merge method {self.name!r}: argument `{p.name}` is not a setting a "
                                f"{kind} method can take ({', '.join(settings + INTERNAL[kind][1:])})")
            (required if p.default is inspect.Parameter.empty else optional).append(p.name)
        object.__setattr__(self, "required", tuple(required))
        object.__setattr__(self, "optional", tuple(optional))

    @property
    def settings(self) -> tuple[str, ...]:
        return self.required + self.optional

    def _accepts(self, name: str) -> bool:
        return name in inspect.signature(self.function).parameters

    def merge_tensors(self, tensors, consume: bool = False, **settings):
        """Fuse one tensor name: `tensors` an iterable of the ingredients' tensors; `settings` the values of
        `self.settings` (others are dropped)."""
        kwargs = {k: v for k, v in settings.items() if k in self.settings}
        if self._accepts("consume"):
            kwargs["consume"] = consume
        return self.function(iter(tensors), **kwargs)

    def merge_state_dicts(self, state_dicts, exclude=None, exclude_from=0, **settings):
        kwargs = {k: v for k, v in settings.items() if k in self.settings}
        kwargs.update({k: v for k, v in (("exclude", exclude), ("exclude_from", exclude_from)) if self._accepts(k)})
        return self.function(list(state_dicts), **kwargs)


METHODS: dict[str, MergeMethod] = {}


def register_method(method: MergeMethod, replace: bool = False) -> MergeMethod:
    """Add a method to the registry (a name already taken is refused unless `replace`)."""
    if not isinstance(method, MergeMethod):
        raise TypeError(f"register_method takes a MergeMethod, got {type(method).__name__}")
    if method.name in METHODS and not replace:
        raise ValueError(f"merge method {method.name!r} is already registered; pass replace=True to replace it")
    METHODS[method.name] = method
    return method


def merge_method(name: str, description: str, *, whole_model: bool = False, elementwise: bool = False,
                 num_models: int | None = None, mergekit: str | None = None, replace: bool = False):
    """Decorator registering a function as merge method `name`; returns the function unchanged."""

    def register(function):
        register_method(MergeMethod(name, function, description, whole_model, elementwise, num_models, mergekit),
                        replace)
        return function

    return register


def unregister_method(name: str) -> None:
    get_method(name)
    del METHODS[name]


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name) -> MergeMethod:
    """The registered method `name`; a ValueError naming the nearest registered one and listing them all."""
    if isinstance(name, MergeMethod):
        return name
    if name in METHODS:
        return METHODS[name]
    near = difflib.get_close_matches(str(name), METHODS, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"merge_method {name!r} is not a registered merge method; {hint}registered: "
                     f"{', '.join(method_names())}")

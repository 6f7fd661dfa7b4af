"""Fusion: the pure math (`ops`), merge methods (`methods`), soup settings and recipes (`config`, `recipe`),
streamed soups and interpolations of checkpoints (`soup`, `writer`), their inputs (`ingredients`, `lora`),
evaluation for greedy soups and barriers (`evaluation`), soup cards (`card`) and the
`hf-tna soup / interpolate / barrier` command line (`cli`).

`build_soup`, `interpolate_checkpoints`, `SoupConfig`, `SoupResult` and `merge_method` are importable from here
(loaded on first use).
"""

_EXPORTS = {
    "build_soup": "soup",
    "interpolate_checkpoints": "soup",
    "SoupResult": "soup",
    "SoupConfig": "config",
    "merge_method": "methods",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

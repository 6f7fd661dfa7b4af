"""Fusion: the pure math (`ops`), streamed soups and interpolations of checkpoints (`soup`), their inputs
(`ingredients`, `lora`), evaluation for greedy soups and barriers (`evaluation`), recipes and cards (`card`),
and the `hf-tna soup / interpolate / barrier` command line (`cli`)."""

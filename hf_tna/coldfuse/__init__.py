"""ColD fusion through a Hub repository (Don-Yehiya et al., ACL 2023), with fixed neuron anchors.

Each round every contributor downloads the round's base, fine-tunes it on its own task and uploads the
body; the fuser validates the contributions and averages them into the next base. Where things live:

- base repository, branch `main`: the current base (`model.safetensors`, config, tokenizer),
  `tna_config.json` (the round's anchor spec and the manifest of the base's anchored values),
  `coldfuse_state.json` (round, anchor settings, what was fused, parent revision) and the model card.
  Tag `round-R` marks the commit holding the base of round R. Only the fuser writes `main` and the tags.
- contributions: branch `contrib/round-R/<contributor>` of the base repository (or of a contributor's
  own repository, named to the fuser), created from the round's base commit: model weights of the body,
  `tna_config.json`, `coldfuse_contribution.json` (base revision started from, round, anchor spec, task,
  number of examples, metrics). Each contributor writes only its own branch, so concurrent contributors
  never race; the fuser pins each contribution by commit sha and records `repo@sha`.

Fusing is idempotent (a round already fused is reported, nothing is written) and resumable: the state
commit on `main` and the `round-R+1` tag are the only writes, and a crash between them is repaired by
the next run. Initialising a base, contributing and whole runs (`run_coldfuse`) are in
`hf_tna.coldfuse.runner`; the contributor's fine-tuning is in `hf_tna.coldfuse.contributor`.
"""

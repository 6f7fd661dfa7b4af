"""Anchor spec, seeded masks, tensor namespace and tna_config.json."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from hf_tna import anchors as anchors_mod
from hf_tna.anchors import (
    AnchorSelection,
    AnchorSpec,
    TensorLayout,
    anchor_mask,
    build_layouts,
    draw_anchored,
    hash_counters,
)
from hf_tna.manifest import (
    CONFIG_NAME,
    TNAFileConfig,
    check_layouts_match,
    manifest_entry,
)
from tests.common import build_tiny_bert


@pytest.fixture
def tiny_bert():
    return build_tiny_bert()


def mask_sha(mask):
    return hashlib.sha256(mask.contiguous().numpy().tobytes()).hexdigest()


# Golden values: a change here breaks compatibility between contributors on different versions.
GOLDEN_ELEMENT = "8d4cb8d212fb9bfbac4956513c97b6f513aec84912a6766e97a7d5143aa57a66"


def test_golden_element_mask():
    mask = anchor_mask(TensorLayout("enc.weight", (64, 32)), AnchorSpec(ratio=0.4, seed=0))
    assert mask_sha(mask) == GOLDEN_ELEMENT


GOLDEN_NEURON = "3e2be8d7cc546ae6058985254ae695daa2e2c0a21b16970699c24011e4a68527"


def test_golden_neuron_mask():
    layout = TensorLayout("h.0.mlp.c_fc.weight", (16, 24), unit_dim=1, key="h.0.mlp.c_fc")
    assert mask_sha(anchor_mask(layout, AnchorSpec(ratio=0.4, granularity="neuron"))) == GOLDEN_NEURON


def test_golden_hash_values():
    key = anchors_mod.tensor_key(0, 0, "enc.weight")
    assert hash_counters(torch.arange(4, dtype=torch.int64), key).tolist() == [
        1440727068, 594573907, 1164774692, 832502100
    ]


def test_hash_matches_reference_python_implementation():
    """The tensor hash equals a plain-Python uint32 implementation (no overflow tricks hide a bug)."""

    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    key = anchors_mod.tensor_key(3, 2, "layer.weight")
    counters = [0, 1, 2, 12345, 2**32 - 1, 2**32, 2**40 + 7]
    expected = [mix(mix((c & 0xFFFFFFFF) ^ key[0]) ^ (c >> 32) ^ key[1]) for c in counters]
    assert hash_counters(torch.tensor(counters, dtype=torch.int64), key).tolist() == expected


def test_mask_fraction_and_ratio_zero():
    spec = AnchorSpec(ratio=0.4)
    mask = draw_anchored(200_000, "w", spec)
    assert abs(mask.float().mean().item() - 0.4) < 0.005
    assert not draw_anchored(1000, "w", AnchorSpec(ratio=0.0)).any()


def test_mask_is_pure_and_chunk_independent(monkeypatch):
    spec = AnchorSpec(ratio=0.3, seed=7)
    full = draw_anchored(10_000, "a.b", spec)
    monkeypatch.setattr(anchors_mod, "_CHUNK", 777)
    assert torch.equal(full, draw_anchored(10_000, "a.b", spec))
    # nested ratios: an entry anchored at 0.2 is anchored at 0.4 (same hash, higher threshold)
    low, high = draw_anchored(5000, "x", AnchorSpec(ratio=0.2)), draw_anchored(5000, "x", AnchorSpec(ratio=0.4))
    assert torch.equal(low & high, low)


@pytest.mark.parametrize("change", [{"seed": 1}, {"round": 1}])
def test_seed_round_and_name_change_the_mask(change):
    base = draw_anchored(4096, "w", AnchorSpec())
    assert not torch.equal(base, draw_anchored(4096, "w", AnchorSpec(**change)))
    assert not torch.equal(base, draw_anchored(4096, "w2", AnchorSpec()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ratio": 1.0}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"granularity": "row"}, "granularity"),
        ({"seed": -1}, "seed"),
        ({"include": ["("]}, "include"),
    ],
)
def test_spec_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AnchorSpec(**kwargs)


def test_spec_round_trip_and_unknown_field():
    spec = AnchorSpec(ratio=0.2, seed=3, granularity="neuron", include=["encoder"], exclude=["classifier"], round=2)
    assert AnchorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="Unknown anchor spec field"):
        AnchorSpec.from_dict({"ratio": 0.1, "ratoi": 2})


def test_patterns_matching_nothing_are_refused(tiny_bert):
    with pytest.raises(ValueError, match="include pattern 'nonexistent'"):
        build_layouts(tiny_bert, AnchorSpec(include=["nonexistent"]))
    with pytest.raises(ValueError, match="exclude pattern 'nope'"):
        build_layouts(tiny_bert, AnchorSpec(exclude=["nope"]))


def test_include_exclude_select_parameters(tiny_bert):
    names = [layout.name for layout, _ in build_layouts(tiny_bert, AnchorSpec(exclude=["classifier"]))]
    assert names and not any("classifier" in n for n in names)
    names = [layout.name for layout, _ in build_layouts(tiny_bert, AnchorSpec(include=[r"attention\.self"]))]
    assert names and all("attention.self" in n for n in names)


def test_vit_memory_and_checkpoint_masks_agree(tmp_path):
    """transformers v5 renames ViT parameters in memory; masks are keyed by the saved names."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(
        ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  image_size=8, patch_size=4, num_channels=1, num_labels=3)
    )
    in_memory = {n for n, _ in model.named_parameters()}
    model.save_pretrained(tmp_path)
    spec = AnchorSpec(ratio=0.4)
    layouts = build_layouts(model, spec)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
        assert {layout.name for layout, _ in layouts} == saved
        assert "vit.encoder.layer.0.attention.attention.query.weight" in saved
        assert "vit.encoder.layer.0.attention.attention.query.weight" not in in_memory
        for layout, param in layouts:
            mask = anchor_mask(layout, spec)
            assert torch.equal(param.detach()[mask], f.get_tensor(layout.name)[mask])


def test_wrapper_prefixes_are_stripped(tiny_bert):
    spec = AnchorSpec()
    plain = [layout for layout, _ in build_layouts(tiny_bert, spec)]
    compiled = torch.compile(tiny_bert)  # OptimizedModule: parameters named `_orig_mod.*`
    assert any(n.startswith("_orig_mod.") for n, _ in compiled.named_parameters())
    assert [layout for layout, _ in build_layouts(compiled, spec)] == plain
    assert anchors_mod.strip_wrapper_prefixes("module._orig_mod.bert.x.weight") == "bert.x.weight"


def test_peft_names_match_saved_adapter(tiny_bert, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert, LoraConfig(r=2, target_modules=["query", "value"]))
    layouts = build_layouts(model, AnchorSpec())
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as f:
        assert {layout.name for layout, _ in layouts} == set(f.keys())


def test_neuron_granularity_units():
    from transformers.pytorch_utils import Conv1D

    model = torch.nn.ModuleDict(
        {
            "lin": torch.nn.Linear(6, 40),
            "gpt": Conv1D(40, 6),  # weight (in=6, out=40)
            "conv": torch.nn.Conv2d(3, 40, 3),
            "emb": torch.nn.Embedding(10, 4),
            "norm": torch.nn.LayerNorm(4),
        }
    )
    spec = AnchorSpec(ratio=0.5, granularity="neuron")
    layouts = {layout.name: layout for layout, _ in build_layouts(model, spec)}
    assert layouts["lin.weight"].unit_dim == 0 and layouts["lin.bias"].unit_dim == 0
    assert layouts["gpt.weight"].unit_dim == 1 and layouts["gpt.bias"].unit_dim == 0
    assert layouts["conv.weight"].unit_dim == 0
    assert layouts["emb.weight"].unit_dim is None and layouts["norm.weight"].unit_dim is None
    weight = anchor_mask(layouts["lin.weight"], spec)
    bias = anchor_mask(layouts["lin.bias"], spec)
    rows = weight.all(dim=1)
    assert torch.equal(rows, weight.any(dim=1)) and torch.equal(rows, bias)  # whole rows, bias follows
    gpt = anchor_mask(layouts["gpt.weight"], spec)
    assert torch.equal(gpt.all(dim=0), gpt.any(dim=0))  # whole columns
    assert torch.equal(gpt.all(dim=0), anchor_mask(layouts["gpt.bias"], spec))
    conv = anchor_mask(layouts["conv.weight"], spec)
    assert torch.equal(conv.flatten(1).all(1), conv.flatten(1).any(1))


def test_converting_models_are_refused_unless_excluded():
    from transformers import MixtralConfig, MixtralForCausalLM

    model = MixtralForCausalLM(
        MixtralConfig(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_local_experts=2)
    )
    with pytest.raises(ValueError, match="converts parameter 'model.layers.0.mlp.experts"):
        build_layouts(model, AnchorSpec())
    layouts = build_layouts(model, AnchorSpec(exclude=["experts"]))
    assert layouts and not any("experts" in layout.name for layout, _ in layouts)


def test_tna_config_round_trip_and_mismatch(tiny_bert, tmp_path):
    spec = AnchorSpec(ratio=0.25, seed=5)
    rows = build_layouts(tiny_bert, spec)
    manifest = {layout.name: manifest_entry(param, layout, spec) for layout, param in rows}
    TNAFileConfig(spec, manifest, base_model="tiny-bert", base_revision="abc").save(tmp_path)
    text = (tmp_path / CONFIG_NAME).read_text()
    data = json.loads(text)
    assert list(data) == sorted(data) and data["hf_tna_version"]
    loaded = TNAFileConfig.load(tmp_path)
    assert loaded.spec == spec and loaded.manifest == manifest and loaded.base_revision == "abc"
    check_layouts_match([layout for layout, _ in rows], loaded.manifest)
    bad = dict(manifest)
    name = next(iter(bad))
    bad[name] = {**bad[name], "shape": [1, 2, 3]}
    with pytest.raises(ValueError, match=f"tensor '{name}'"):
        check_layouts_match([layout for layout, _ in rows], bad)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TNAFileConfig.load(tmp_path)


# --- AnchorSelection: one object for every user of anchors, whole tensors and dim-0 shards ------------------
@pytest.mark.parametrize(
    "shape,unit_dim",
    [((37, 11), None), ((37,), None), ((6, 5, 3), None), ((37, 11), 0), ((11, 37), 1), ((37,), 0), ((8, 4, 3, 3), 0)],
)
def test_selection_of_a_dim0_slice_equals_that_slice_of_the_full_selection(shape, unit_dim):
    spec = AnchorSpec(ratio=0.4, seed=5, granularity="element" if unit_dim is None else "neuron")
    layout = TensorLayout("enc.layer.weight", shape, unit_dim, "enc.layer" if unit_dim is not None else "")
    full = AnchorSelection(layout, spec)
    full_mask = full.dense_mask()
    assert torch.equal(full_mask, anchor_mask(layout, spec))
    tensor = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    # ragged shards, as FSDP2 makes them (the last one may be shorter or empty)
    bounds = [0, 3, 3, 10, shape[0]] if shape[0] > 10 else [0, 2, shape[0]]
    pieces, counted = [], 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        shard = AnchorSelection(layout, spec, offset=lo, rows=hi - lo)
        assert torch.equal(shard.dense_mask(), full_mask[lo:hi])
        pieces.append(shard.take(tensor[lo:hi]))
        counted += shard.num_anchored
    assert counted == full.num_anchored == int(full_mask.sum())
    if unit_dim in (None, 0):  # compact values of the shards concatenate to those of the whole tensor
        assert torch.equal(torch.cat(pieces, dim=unit_dim or 0), full.take(tensor))


def test_selection_predicate_is_the_mask():
    spec = AnchorSpec(ratio=0.3, seed=2, granularity="neuron")
    for layout in (TensorLayout("w", (20, 7)), TensorLayout("w", (20, 7), unit_dim=0, key="m")):
        selection = AnchorSelection(layout, spec, offset=5, rows=9)
        drawn = selection.predicate(selection.counters())
        if layout.unit_dim is None:
            assert torch.equal(drawn.view(selection.shape), selection.dense_mask())
        else:
            assert torch.equal(torch.nonzero(drawn).flatten(), selection.units)


@pytest.mark.parametrize("granularity", ["element", "neuron"])
def test_selection_take_zero_put_round_trip(granularity):
    spec = AnchorSpec(ratio=0.5, seed=1, granularity=granularity)
    layout = TensorLayout("fc.weight", (12, 5), 0 if granularity == "neuron" else None, "fc")
    selection = AnchorSelection(layout, spec)
    tensor = torch.randn(12, 5)
    values = selection.take(tensor)
    assert values.numel() == selection.num_anchored > 0
    work = tensor.clone()
    selection.zero_(work)
    mask = selection.dense_mask()
    assert torch.equal(work[mask], torch.zeros(int(mask.sum()))) and torch.equal(work[~mask], tensor[~mask])
    selection.put_(work, values)
    assert torch.equal(work, tensor)


def test_selection_refuses_slices_outside_the_tensor():
    layout = TensorLayout("w", (10, 3))
    with pytest.raises(ValueError, match=r"slice \[8:12\] of dim 0 is outside tensor 'w'"):
        AnchorSelection(layout, AnchorSpec(), offset=8, rows=4)
    with pytest.raises(ValueError, match="expect"):
        AnchorSelection(layout, AnchorSpec()).take(torch.zeros(3, 10))


def test_peft_names_are_the_saved_adapter_keys_modules_to_save_included():
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from hf_tna.anchors import checkpoint_names

    model = get_peft_model(build_tiny_bert(), LoraConfig(r=4, target_modules=["query"], modules_to_save=["classifier"],
                                                         lora_dropout=0.0))
    names = checkpoint_names(model)
    trainable = sorted(names[id(p)] for p in model.parameters() if p.requires_grad)
    assert trainable == sorted(get_peft_model_state_dict(model))  # a trained head too, as PEFT saves it
    assert "base_model.model.classifier.weight" in trainable

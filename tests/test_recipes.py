"""Soup recipes and merge methods: plugins registered from outside the package, strict recipes in hf_tna's and
mergekit's formats, the recipe written beside a soup making it again bitwise, and the soup command line."""

import json

import pytest
import torch
import yaml

from hf_tna import cli
from hf_tna.manifest import TNAFileConfig
from hf_tna.merge.config import SoupConfig
from hf_tna.merge.methods import get_method, merge_method, unregister_method
from hf_tna.merge.recipe import from_mergekit, load_recipe, parse_recipe
from hf_tna.merge.soup import build_soup
from tests.common import build_tiny_bert
from tests.test_soup import SPEC, _finetune_like, _tensors


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_ckpts")
    out = []
    for i in range(3):
        model = build_tiny_bert(seed=0)
        manifest = _finetune_like(model, SPEC, seed=20 + i)
        model.save_pretrained(root / f"bert{i}", max_shard_size="4KB")
        TNAFileConfig(SPEC, manifest, base_model="tiny-bert").save(root / f"bert{i}")
        out.append(root / f"bert{i}")
    build_tiny_bert(seed=0).save_pretrained(root / "base")
    out.append(root / "base")
    return out


def _bitwise_equal(a, b):
    x, y = _tensors(a), _tensors(b)
    return x.keys() == y.keys() and all(
        x[k].dtype == y[k].dtype and torch.equal(x[k].view(torch.uint8), y[k].view(torch.uint8)) for k in x)


def _cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


# --------------------------------------------------------------------------------------------------
# Merge methods as plugins
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def plugin_methods():
    @merge_method("elementwise_max", "element-wise maximum of the ingredients' weights (a test plugin)",
                  elementwise=True)
    def elementwise_max(tensors):
        tensors = list(tensors)
        if not tensors[0].is_floating_point():
            return tensors[0].clone()
        return torch.stack(tensors).amax(dim=0)

    @merge_method("task_sum", "base plus the weighted sum of the ingredients' task vectors (a test plugin)")
    def task_sum(tensors, base, weights):
        if not base.is_floating_point():
            return base.clone()
        out = base.double().clone()
        for w, x in zip(weights, tensors):
            out += w * (x.double() - base.double())
        return out.to(base.dtype)

    yield
    unregister_method("elementwise_max")
    unregister_method("task_sum")


def test_a_method_registered_in_a_test_file_runs_through_the_command_line(folders, plugin_methods, tmp_path,
                                                                          capsys):
    a, b = (str(f) for f in folders[:2])
    code, out, err = _cli(["soup", a, b, "--merge_method", "elementwise_max", "-o", str(tmp_path / "max"),
                           "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads(out)["merge_method"] == "elementwise_max"
    soup, x, y = _tensors(tmp_path / "max"), _tensors(a), _tensors(b)
    assert all(torch.equal(soup[k], torch.maximum(x[k], y[k]) if x[k].is_floating_point() else x[k]) for k in x)
    card = (tmp_path / "max" / "README.md").read_text()
    assert "element-wise maximum of the ingredients' weights" in card
    recipe = yaml.safe_load((tmp_path / "max" / "fusion_recipe.yaml").read_text())
    assert recipe["merge_method"] == "elementwise_max" and recipe["models"] == [a, b]  # hf_tna's format
    code, _, err = _cli(["soup", "--recipe", str(tmp_path / "max" / "fusion_recipe.yaml"), "-o",
                         str(tmp_path / "again"),
                         "--no-progress"], capsys)
    assert code == 0, err
    assert _bitwise_equal(tmp_path / "max", tmp_path / "again")
    # what a method takes is read from its signature: task_sum needs a base and weights
    assert get_method("task_sum").required == ("base", "weights")
    with pytest.raises(ValueError, match="needs weights"):
        SoupConfig(merge_method="task_sum")
    code, _, err = _cli(["soup", a, b, "--merge_method", "task_sum", "--weights", "0.5", "0.5", "-o",
                         str(tmp_path / "nobase")], capsys)
    assert code == 1 and err == "hf-tna soup: error: merge_method 'task_sum' needs a base model: pass --base"
    result = build_soup([a, b], tmp_path / "ts", merge_method="task_sum", weights=[0.5, 0.5], base=folders[3],
                        progress=False)
    base, soup = _tensors(folders[3]), _tensors(tmp_path / "ts")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    want = base[key].double() + 0.5 * (x[key].double() - base[key].double()) + 0.5 * (y[key].double() - base[key])
    assert torch.allclose(soup[key].double(), want, atol=1e-6)
    assert result.recipe["base"] == str(folders[3].resolve())


def test_settings_a_method_does_not_take_are_refused():
    with pytest.raises(ValueError, match=r"merge_method 'uniform' does not use alpha; drop alpha=0\.5"):
        SoupConfig(merge_method="uniform", alpha=0.5)
    with pytest.raises(ValueError, match="merge_method 'interpolate' needs alpha"):
        SoupConfig(merge_method="interpolate")
    with pytest.raises(ValueError, match="does not use normalize"):
        SoupConfig(merge_method="uniform", normalize=False)
    with pytest.raises(ValueError, match=r"'wieghted' is not a registered merge method; did you mean 'weighted'\?"):
        SoupConfig(merge_method="wieghted")
    with pytest.raises(ValueError, match="dataset is only used by soups that evaluate"):
        SoupConfig(merge_method="greedy", kept=[0], dataset="val")
    with pytest.raises(TypeError, match=r"no setting 'wieghts' \(did you mean `weights`\?\)"):
        SoupConfig().replace(wieghts=[1, 2])
    assert SoupConfig(weights=[1, 2]).method.name == "weighted" and SoupConfig().method.name == "uniform"
    assert SoupConfig().replace(method="greedy").method.name == "greedy"  # `method`: the alias of --method


def test_soup_config_is_the_command_line(capsys):
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(SoupConfig).parse_args_into_dataclasses(
        ["--weights", "1", "3", "--no-normalize", "--dtype", "bfloat16", "--exclude", "classifier", "--exclude_from",
         "1", "--max-shard-size", "1GB"])
    assert config == SoupConfig(weights=[1.0, 3.0], normalize=False, dtype="bfloat16", exclude=["classifier"],
                                exclude_from=1, max_shard_size="1GB")
    assert config.method.name == "weighted"


# --------------------------------------------------------------------------------------------------
# The recipe beside a soup makes it again
# --------------------------------------------------------------------------------------------------
CASES = {
    "uniform": {},
    "weighted": {"weights": [1, 2, 3]},
    "weighted_sum": {"weights": [0.2, 0.3, 0.5], "normalize": False},
    "bfloat16": {"weights": [1, 1, 2], "dtype": "bfloat16"},
    "exclude": {"exclude": ["classifier"], "exclude_from": 2},
    "dropped": {"exclude": ["pooler"], "exclude_from": None},
    "interpolate": {"merge_method": "interpolate", "alpha": 0.3},
    "greedy": {"merge_method": "greedy"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_written_beside_a_soup_makes_it_again_bitwise(folders, tmp_path, case, capsys):
    settings = dict(CASES[case])
    ingredients = folders[:2] if case == "interpolate" else folders[:3]
    score_fn = None
    if case == "greedy":
        target = _tensors(folders[1])["classifier.weight"]

        def score_fn(sd):
            return -float((sd["classifier.weight"] - target).abs().sum())

    first = build_soup(ingredients, tmp_path / "soup", score_fn=score_fn, progress=False, **settings)
    text = (tmp_path / "soup" / "fusion_recipe.yaml").read_text()
    linear = case in ("uniform", "weighted", "weighted_sum", "bfloat16")
    assert text.startswith("# mergekit (linear)" if linear else "# hf_tna recipe")
    if case == "greedy":
        assert first.recipe["kept"] == first.kept and first.kept[0] == 1  # re-run without evaluating
    code, _, err = _cli(["soup", "--recipe", str(tmp_path / "soup" / "fusion_recipe.yaml"), "-o",
                         str(tmp_path / "again"), "--no-progress"], capsys)
    assert code == 0, err
    assert _bitwise_equal(tmp_path / "soup", tmp_path / "again")
    if first.anchors is not None:
        assert TNAFileConfig.load(tmp_path / "again").to_dict() == first.anchors
    assert (tmp_path / "again" / "fusion_recipe.yaml").read_text() == text


def _mergekit_yaml():
    """The `mergekit-yaml` to run: $MERGEKIT_YAML, `make bench-soup`'s venv, or one on PATH (not in CI)."""
    import os
    import shutil
    from pathlib import Path

    for candidate in (os.environ.get("MERGEKIT_YAML"), Path(__file__).parents[1] / ".bench-venv/bin/mergekit-yaml",
                      shutil.which("mergekit-yaml")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@pytest.mark.skipif(_mergekit_yaml() is None, reason="mergekit is not installed (make bench-soup installs it)")
def test_linear_recipe_runs_in_mergekit(tmp_path):
    """mergekit makes the soup from the recipe hf_tna wrote, equal up to float32 rounding (mergekit sums in float32;
    hf_tna averages deviations in float64, which keeps anchors bitwise)."""
    import subprocess

    from tests.common import build_tiny_llama

    ingredients = []
    for i in range(3):
        model = build_tiny_llama(seed=0)
        _finetune_like(model, SPEC, seed=60 + i)
        model.save_pretrained(tmp_path / f"llama{i}")
        ingredients.append(tmp_path / f"llama{i}")
    build_soup(ingredients, tmp_path / "ours", weights=[1, 2, 3], progress=False)
    recipe = tmp_path / "ours" / "fusion_recipe.yaml"
    subprocess.run([_mergekit_yaml(), str(recipe), str(tmp_path / "theirs")], check=True, capture_output=True)
    ours, theirs = _tensors(tmp_path / "ours"), _tensors(tmp_path / "theirs")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype
        assert torch.allclose(ours[key].double(), theirs[key].double(), rtol=1e-6, atol=1e-7), key


def test_linear_recipe_is_mergekits_schema(folders, tmp_path):
    build_soup(folders[:2], tmp_path / "soup", weights=[1, 3], dtype="float16", progress=False)
    recipe = yaml.safe_load((tmp_path / "soup" / "fusion_recipe.yaml").read_text())
    assert recipe == {
        "merge_method": "linear",
        "models": [{"model": str(f.resolve()), "parameters": {"weight": w}} for f, w in zip(folders[:2], [1.0, 3.0])],
        "parameters": {"normalize": True},
        "dtype": "float32",
        "out_dtype": "float16",
    }
    models, settings = from_mergekit({**recipe, "dtype": "bfloat16"}, "r.yaml")
    assert settings == {"merge_method": "weighted", "weights": [1.0, 3.0], "normalize": True, "dtype": "float16"}
    _, settings = from_mergekit({"merge_method": "linear", "dtype": "bfloat16", "models": [
        {"model": "a", "parameters": {"weight": 2}}, {"model": "b", "parameters": {"weight": 2}}]}, "r.yaml")
    assert settings == {"merge_method": "uniform", "dtype": "bfloat16"}
    _, settings = from_mergekit({"merge_method": "linear", "base_model": "org/base", "parameters": {"weight": 1},
                                 "models": [{"model": "a"}, {"model": "b", "parameters": {"weight": 3}}]}, "r.yaml")
    assert settings == {"merge_method": "weighted", "weights": [1.0, 3.0], "normalize": True, "base": "org/base"}


# --------------------------------------------------------------------------------------------------
# Strict recipes
# --------------------------------------------------------------------------------------------------
MERGEKIT = {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": "org/a", "parameters": {"weight": 1}},
                       {"model": "org/b", "parameters": {"weight": 2}}]}


def _with(change):
    recipe = json.loads(json.dumps(MERGEKIT))
    change(recipe)
    return recipe


TYPOS = {
    "dtyp": (lambda r: r.update(dtyp=r.pop("dtype")), r"unknown recipe key `dtyp` \(did you mean `dtype`\?\)"),
    "merge_methd": (lambda r: r.update(merge_methd=r.pop("merge_method")),
                    r"unknown recipe key `merge_methd` \(did you mean `merge_method`\?\)"),
    "normalise": (lambda r: r.update(parameters={"normalise": False}),
                  r"parameters: unknown parameter `normalise` \(did you mean `normalize`\?\)"),
    "wieght": (lambda r: r["models"][1].update(parameters={"wieght": 2}),
               r"models\[1\]\.parameters: unknown parameter `wieght` \(did you mean `weight`\?\)"),
}
REFUSED = {
    "ties": (lambda r: r.update(merge_method="ties"), r"merge_method 'ties' is mergekit's; hf_tna does not implement"),
    "slerp": (lambda r: r.update(merge_method="slerp"), r"merge_method 'slerp' is mergekit's"),
    "slices": (lambda r: r.update(slices=[{"sources": []}]), r"mergekit's `slices` \(layer slices"),
    "tokenizer_source": (lambda r: r.update(tokenizer_source="union"), r"mergekit's `tokenizer_source`"),
    "gradient": (lambda r: r["models"][0].update(parameters={"weight": [0.0, 1.0]}), r"gradient \(a list\) weights"),
    "density": (lambda r: r["models"][0]["parameters"].update(density=0.5),
                r"mergekit's parameter `density` belongs to a method hf_tna does not implement"),
    "lora": (lambda r: r["models"][0].update(model="org/a+org/lora"), r"`model\+lora` paths are not supported"),
}


@pytest.mark.parametrize("name", sorted(TYPOS) + sorted(REFUSED))
def test_mergekit_recipe_typos_and_missing_features_are_refused(name, tmp_path, capsys):
    change, match = {**TYPOS, **REFUSED}[name]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    with pytest.raises(ValueError, match=match):
        load_recipe(path)
    code, _, err = _cli(["soup", "--recipe", str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("hf-tna soup: error: ")
    if name in REFUSED and "merge_method" in match:
        assert "Supported: greedy, interpolate, uniform, weighted" in err and "linear" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe, match", [
    ({"models": ["a"], "wieghts": [1]}, r"unknown recipe key `wieghts` \(did you mean `weights`\?\)"),
    ({"models": ["a"], "trust_remote_code": True}, r"`trust_remote_code` is a setting of the run, not of the recipe"),
    ({"models": ["a"], "merge_method": "linear"}, r"'linear' is mergekit's name, for recipes in mergekit's format"),
    ({"models": "a"}, r"`models` must be a non-empty list"),
    ({"models": ["a"], "exclude": ["x"], "parameters": {"normalize": True}}, r"unknown recipe key `exclude`"),
    (["a", "b"], r"a recipe is a YAML mapping"),
])
def test_hf_tna_recipe_is_strict(recipe, match):
    with pytest.raises(ValueError, match=match):
        parse_recipe(recipe, "r.yaml")


def test_local_recipe_paths_are_relative_to_the_recipe(folders, tmp_path, monkeypatch):
    root = folders[0].parent
    (root / "mine.yaml").write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": "bert0", "parameters": {"weight": 1}}, {"model": "bert1", "parameters": {"weight": 1}}]}))
    monkeypatch.chdir(tmp_path)  # elsewhere: the paths still mean the recipe's neighbours
    models, settings = load_recipe(root / "mine.yaml")
    assert models == [str(root / "bert0"), str(root / "bert1")] and settings == {"merge_method": "uniform"}
    assert cli.main(["soup", "--recipe", str(root / "mine.yaml"), "-o", "soup", "--no-progress"]) == 0
    assert _bitwise_equal(tmp_path / "soup", build_soup(folders[:2], tmp_path / "ref", progress=False).output_dir)


def test_flags_override_the_recipe(folders, tmp_path, capsys):
    build_soup(folders[:2], tmp_path / "soup", weights=[1, 3], progress=False)
    recipe = str(tmp_path / "soup" / "fusion_recipe.yaml")
    code, out, err = _cli(["soup", "--recipe", str(tmp_path / "soup"), "--dtype", "bfloat16", "-o",
                           str(tmp_path / "bf16"),
                           "--no-progress"], capsys)
    assert code == 0, err
    assert {t.dtype for t in _tensors(tmp_path / "bf16").values() if t.is_floating_point()} == {torch.bfloat16}
    code, _, err = _cli(["soup", "--recipe", recipe, "--merge_method", "uniform", "-o", str(tmp_path / "u")], capsys)
    assert code == 1 and "merge_method 'uniform' does not use weights; drop --weights 1.0 3.0" in err


def test_recipe_from_the_hub_names_only_hub_ids(folders, tmp_path, local_store, capsys):
    shas = []
    for i in range(2):
        local_store.create_repo(f"tna-org/r{i}", exist_ok=True)
        shas.append(local_store.upload_folder(f"tna-org/r{i}", folders[i], "add"))
    build_soup(["tna-org/r0", "tna-org/r1"], tmp_path / "soup", weights=[1, 2], store=local_store,
               push_to_hub="tna-org/soup", progress=False)
    store = str(local_store.root)
    code, _, err = _cli(["soup", "--recipe", "tna-org/soup", "--store", store, "-o", str(tmp_path / "again"),
                         "--no-progress"], capsys)
    assert code == 0, err
    assert _bitwise_equal(tmp_path / "soup", tmp_path / "again")
    models, _ = load_recipe("tna-org/soup", local_store)
    assert models == [f"tna-org/r{i}@{sha}" for i, sha in enumerate(shas)]
    # a Hub recipe naming a local path, or climbing out of the repo, is refused
    for bad in (str(folders[0]), "../../etc", "tna-org/..", "./bert0"):
        folder = tmp_path / f"evil{abs(hash(bad))}"
        folder.mkdir()
        (folder / "fusion_recipe.yaml").write_text(yaml.safe_dump({"models": [bad, "tna-org/r1"]}))
        local_store.create_repo("tna-org/evil", exist_ok=True)
        local_store.upload_folder("tna-org/evil", folder, "evil")
        with pytest.raises(ValueError, match=r"models\[0\] is .*a recipe from the Hub may name only Hub ids"):
            load_recipe("tna-org/evil", local_store)


# --------------------------------------------------------------------------------------------------
# The soup command line
# --------------------------------------------------------------------------------------------------
def test_soup_usage_errors_are_one_line(folders, tmp_path, capsys):
    a, b = str(folders[0]), str(folders[1])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["soup", a, b, "--wieghts", "1", "2", "-o", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-tna soup: error: unrecognized arguments: --wieghts (did you mean --weights?)")
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["soup", a, b, "--weights", "one", "-o", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-tna soup: error: argument --weights: invalid float value: 'one'")
    assert len(err.splitlines()) == 1
    code, _, err = _cli(["soup", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and err == "hf-tna soup: error: give the ingredients (positional MODEL ...) or a --recipe with " \
        "`models`"
    code, _, err = _cli(["soup", a, str(tmp_path / "missing"), "-o", str(tmp_path / "x")], capsys)
    assert code == 1 and err.startswith("hf-tna soup: error: ingredient 1: ") and "does not exist" in err
    assert not (tmp_path / "x").exists()


def test_hints_name_flags_on_the_command_line_and_keywords_in_python(folders, tmp_path, capsys):
    a, b = str(folders[0]), str(folders[1])
    code, _, err = _cli(["soup", a, b, "--exclude", "classifier", "--exclude_from", "7", "-o", str(tmp_path / "x")],
                        capsys)
    assert code == 1 and "use --exclude-from none to drop the excluded tensors" in err
    with pytest.raises(ValueError, match="use exclude_from=None to drop"):
        build_soup([a, b], tmp_path / "x", exclude=["classifier"], exclude_from=7)


def test_debug_shows_the_traceback(folders, tmp_path, monkeypatch, capsys):
    argv = ["soup", str(folders[0]), str(tmp_path / "missing"), "-o", str(tmp_path / "x")]
    with pytest.raises(FileNotFoundError):
        cli.main([*argv, "--debug"])
    monkeypatch.setenv("HF_TNA_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(argv)
    monkeypatch.setenv("HF_TNA_DEBUG", "0")
    assert cli.main(argv) == 1


@pytest.mark.parametrize("command", ["soup", "interpolate", "barrier", "verify", "coldfuse"])
def test_every_subcommand_documents_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"hf-tna {command}" in out
    if command in ("soup", "interpolate"):
        for flag in ("--merge_method", "--weights", "--no-normalize", "--dtype", "--exclude-from", "--push-to-hub"):
            assert flag in out, flag


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("hf-tna ")


def test_barrier_without_matplotlib_stops_before_any_work(folders, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    loaded = []
    import hf_tna.merge.ingredients as ingredients

    monkeypatch.setattr(ingredients, "load_ingredient", lambda *a, **k: loaded.append(a))
    code, _, err = _cli(["barrier", str(folders[0]), str(folders[1]), "--dataset", str(tmp_path / "data")], capsys)
    assert code == 1 and not loaded
    assert err == ("hf-tna barrier: error: --plot needs matplotlib, which is not installed: pip install matplotlib "
                   "(or hf_tna[examples]), or pass --plot '' for the JSON report only")

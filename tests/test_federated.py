"""FedPFN / FedPNU on Flower: strategy and client rules with hand-built messages (no Ray), plus exactly one
small simulation through Flower's simulation engine (marked `ray`)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from hf_tna.anchors import AnchorSpec  # noqa: E402
from hf_tna.federated import FederatedArguments  # noqa: E402
from hf_tna.federated.client import load_arrays, read_settings, run_local_training, run_train_message  # noqa: E402
from hf_tna.federated.server import (  # noqa: E402
    CONFIG_SPEC_KEY,
    AnchoredStrategy,
    anchor_layouts,
    anchor_masks,
    read_train_config,
    round_spec,
)
from tests.common import build_mlp as _build_mlp  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SPEC = AnchorSpec(ratio=0.4, seed=3)
SIZES = (24, 40, 16)  # unequal client sizes: weighted averages with non-trivial weights


def build_mlp(seed: int = 0):
    return _build_mlp(seed=seed, width=128)  # wide enough that npy headers do not dominate the bytes


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need a run / node identity; Flower sets it inside a run, the tests set it here."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class FakeGrid:
    """What the strategies' configure_* use of a Grid: the connected node ids."""

    def __init__(self, n=3):
        self.nodes = list(range(101, 101 + n))

    def get_node_ids(self):
        return self.nodes

    def send_and_receive(self, messages, timeout=None):
        """In-process 'clients' for Strategy.start: each message is trained on by a client_reply."""
        messages = sorted(messages, key=lambda m: m.metadata.dst_node_id)
        return [client_reply(m, seed=7 * i + len(messages), n=SIZES[i % len(SIZES)]) for i, m in enumerate(messages)]


def to_record(model) -> ArrayRecord:
    return ArrayRecord({k: Array(v.detach().numpy().copy()) for k, v in model.state_dict().items()})


def numpy_of(record: ArrayRecord) -> dict:
    return {k: a.numpy() for k, a in record.items()}


def client_reply(msg: Message, seed: int, n: int) -> Message:
    model = build_mlp()
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, n, 8)]
    return run_train_message(msg, model, batches, epochs=2, lr=0.2, momentum=0.9, weight_decay=0.01)


def run_round(strategy, arrays: ArrayRecord, server_round: int, grid=None):
    grid = grid or FakeGrid(len(SIZES))
    msgs = sorted(
        strategy.configure_train(server_round, arrays, ConfigRecord(), grid), key=lambda m: m.metadata.dst_node_id
    )
    replies = [client_reply(m, seed=100 * server_round + i, n=SIZES[i]) for i, m in enumerate(msgs)]
    return msgs, replies, strategy.aggregate_train(server_round, replies)


def wrapped(inner, mode="fedpfn", spec=SPEC, model=None):
    model = model or build_mlp()
    return AnchoredStrategy(inner, spec, anchor_layouts(model, spec), mode=mode), to_record(model)


# --------------------------------------------------------------------------------------------------
# Masks and config
# --------------------------------------------------------------------------------------------------
def test_all_clients_of_a_round_derive_the_server_mask():
    strategy, arrays = wrapped(FedAvg(), mode="fedpnu")
    msgs = list(strategy.configure_train(4, arrays, ConfigRecord(), FakeGrid(3)))
    assert len(msgs) == 3
    server_masks = strategy.masks_for_round(4)
    for msg in msgs:
        spec = read_train_config(msg.content["config"])
        assert spec == SPEC.for_round(4)
        # each client builds its own model instance (other init) and derives the mask from the config alone
        client_masks = anchor_masks(anchor_layouts(build_mlp(seed=7), spec), spec)
        assert client_masks.keys() == server_masks.keys()
        for key in server_masks:
            np.testing.assert_array_equal(client_masks[key], server_masks[key])
    frac = np.mean(np.concatenate([m.ravel() for m in server_masks.values()]))
    assert 0.3 < frac < 0.5


def test_fedpnu_redraws_each_round_and_fedpfn_does_not():
    layouts = anchor_layouts(build_mlp(), SPEC)
    pfn = [anchor_masks(layouts, round_spec(SPEC, "fedpfn", r)) for r in (1, 2)]
    pnu = [anchor_masks(layouts, round_spec(SPEC, "fedpnu", r)) for r in (1, 2)]
    for key in layouts:
        np.testing.assert_array_equal(pfn[0][key], pfn[1][key])
    assert any(not np.array_equal(pnu[0][k], pnu[1][k]) for k in layouts)
    # and through the strategy's train config
    for mode, same in (("fedpfn", True), ("fedpnu", False)):
        strategy, arrays = wrapped(FedAvg(), mode=mode)
        specs = [
            read_train_config(
                next(iter(strategy.configure_train(r, arrays, ConfigRecord(), FakeGrid()))).content["config"]
            )
            for r in (1, 2)
        ]
        assert (specs[0] == specs[1]) is same


# --------------------------------------------------------------------------------------------------
# Client rule
# --------------------------------------------------------------------------------------------------
def test_client_update_is_exactly_zero_on_anchored_entries_and_upload_is_compact():
    strategy, arrays = wrapped(FedAvg(), mode="fedpnu")
    msg = next(iter(strategy.configure_train(2, arrays, ConfigRecord(), FakeGrid())))
    reply = client_reply(msg, seed=0, n=32)
    sent = reply.content["arrays"]
    full_bytes = sum(len(a.data) for a in arrays.values())
    sent_bytes = sum(len(a.data) for a in sent.values())
    assert sent_bytes < 0.7 * full_bytes  # ~60 percent of the entries plus npy headers
    full = numpy_of(strategy.expand_reply(sent))
    glob = numpy_of(arrays)
    masks = strategy.masks_for_round(2)
    for key, mask in masks.items():
        update = full[key] - glob[key]
        assert np.all(update[mask] == 0.0), key
        assert np.count_nonzero(update[~mask]) > 0.9 * (~mask).sum(), key
    assert reply.content["metrics"]["num-examples"] == 32
    assert reply.content["metrics"]["anchor-drift"] == 0.0


def test_client_full_upload_keeps_anchored_entries_bitwise():
    model = build_mlp()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    spec = AnchorSpec(ratio=0.5, seed=1, granularity="neuron")
    batches = [(torch.randn(8, 8), torch.randint(0, 3, (8,))) for _ in range(3)]
    stats = run_local_training(model, batches, spec, epochs=2, lr=0.5, momentum=0.9, proximal_mu=0.1)
    assert stats["num-examples"] == 24 and stats["anchor-drift"] == 0.0
    masks = anchor_masks(anchor_layouts(model, spec), spec)
    for key, mask in masks.items():
        now = model.state_dict()[key].numpy()
        assert np.array_equal(now[mask], start[key].numpy()[mask])
        assert not np.array_equal(now[~mask], start[key].numpy()[~mask])


# --------------------------------------------------------------------------------------------------
# Server rule: anchors bitwise through aggregation
# --------------------------------------------------------------------------------------------------
INNER = {
    "fedavg": lambda: FedAvg(),
    "fedavgm": lambda: FedAvgM(server_learning_rate=1.0, server_momentum=0.9),
    "fedadam": lambda: FedAdam(eta=0.05, tau=1e-3),
    "fedprox": lambda: FedProx(proximal_mu=0.1),
}


@pytest.mark.parametrize("inner", sorted(INNER))
def test_fedpfn_global_anchors_stay_bitwise_at_initial_values(inner):
    strategy, arrays = wrapped(INNER[inner](), mode="fedpfn")
    initial = numpy_of(arrays)
    masks = strategy.masks_for_round(1)
    for server_round in (1, 2, 3):
        _, _, (arrays, metrics) = run_round(strategy, arrays, server_round)
        assert metrics["tna-upload-bytes"] < 0.7 * metrics["tna-upload-bytes-full"]
    final = numpy_of(arrays)
    for key, mask in masks.items():
        assert final[key].dtype == initial[key].dtype
        assert np.array_equal(final[key][mask], initial[key][mask]), key
        assert not np.array_equal(final[key][~mask], initial[key][~mask]), key
    assert [h["round"] for h in strategy.history] == [1, 2, 3]


def test_fedpnu_anchors_bitwise_within_each_round_under_fedavg():
    strategy, arrays = wrapped(FedAvg(), mode="fedpnu")
    initial = numpy_of(arrays)
    all_masks = []
    for server_round in (1, 2, 3):
        before = numpy_of(arrays)
        masks = dict(strategy.masks_for_round(server_round))
        all_masks.append(masks)
        _, _, (arrays, _) = run_round(strategy, arrays, server_round)
        after = numpy_of(arrays)
        for key, mask in masks.items():
            assert np.array_equal(after[key][mask], before[key][mask]), (server_round, key)
    # across rounds entries anchored in round 1 were updated too (each round re-draws); under FedAvg only
    # the entries anchored in every round keep their initial value
    final = numpy_of(arrays)
    always = {k: np.logical_and.reduce([m[k] for m in all_masks]) for k in final}
    for key in final:
        assert np.array_equal(final[key][always[key]], initial[key][always[key]])
    first = np.concatenate([(final[k] != initial[k])[all_masks[0][k]] for k in final])
    assert first.mean() > 0.5


def test_fedpnu_under_server_momentum_moves_anchored_entries_across_rounds():
    """Documented behaviour: FedAvgM's momentum (from rounds where an entry was free) moves it even in a
    round where it is anchored; the clients' contribution to it is still exactly zero."""
    strategy, arrays = wrapped(FedAvgM(server_learning_rate=1.0, server_momentum=0.9), mode="fedpnu")
    _, _, (arrays, _) = run_round(strategy, arrays, 1)
    before = numpy_of(arrays)
    masks = dict(strategy.masks_for_round(2))
    _, _, (arrays, _) = run_round(strategy, arrays, 2)
    after = numpy_of(arrays)
    assert any(not np.array_equal(after[k][m], before[k][m]) for k, m in masks.items())


def test_start_runs_flowers_round_loop_and_resets_between_runs():
    """Strategy.start (Flower's own loop) through the wrapper, twice on one object with different initial models."""
    model_a, model_b = build_mlp(seed=1), build_mlp(seed=2)
    strategy = AnchoredStrategy(FedProx(proximal_mu=0.1), SPEC, anchor_layouts(model_a, SPEC), mode="fedpfn")
    masks = anchor_masks(strategy.layouts, SPEC)
    for model in (model_a, model_b):
        initial = to_record(model)
        result = strategy.start(FakeGrid(3), initial, num_rounds=2, evaluate_fn=lambda r, a: MetricRecord({"r": r}))
        final, start = numpy_of(result.arrays), numpy_of(initial)
        for key, mask in masks.items():
            assert np.array_equal(final[key][mask], start[key][mask])
            assert not np.array_equal(final[key][~mask], start[key][~mask])
        assert [h["round"] for h in strategy.history] == [1, 2]
        assert sorted(result.train_metrics_clientapp) == [1, 2]
        assert (
            result.train_metrics_clientapp[2]["tna-upload-bytes"]
            < result.train_metrics_clientapp[2]["tna-upload-bytes-full"]
        )


# --------------------------------------------------------------------------------------------------
# Ratio 0 is a pass-through
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fedpfn", "fedpnu"])
def test_ratio_zero_passes_the_inner_strategy_through(mode):
    spec0 = AnchorSpec(ratio=0.0, seed=3)
    model = build_mlp()
    plain = FedAvgM(server_learning_rate=1.0, server_momentum=0.9)
    wrapper = AnchoredStrategy(
        FedAvgM(server_learning_rate=1.0, server_momentum=0.9), spec0, anchor_layouts(model, spec0), mode=mode
    )
    a_plain = a_wrap = to_record(model)
    for server_round in (1, 2):
        m_plain, _, (a_plain, met_plain) = run_round(plain, a_plain, server_round)
        m_wrap, _, (a_wrap, met_wrap) = run_round(wrapper, a_wrap, server_round)
        for p, w in zip(m_plain, m_wrap):
            assert dict(p.content["config"]) == dict(w.content["config"])
            assert CONFIG_SPEC_KEY not in w.content["config"]
            assert p.metadata.message_type == w.metadata.message_type == MessageType.TRAIN
        assert dict(met_plain) == dict(met_wrap)
        assert list(a_plain) == list(a_wrap)
        for key in a_plain:
            assert a_plain[key].data == a_wrap[key].data  # bitwise, dtype and shape included
    assert wrapper.history[0]["upload_bytes"] == wrapper.history[0]["upload_bytes_full"]


def test_evaluate_is_delegated():
    strategy, arrays = wrapped(FedAvg(fraction_evaluate=1.0))
    msgs = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), FakeGrid(2)))
    assert len(msgs) == 2 and all(m.metadata.message_type == MessageType.EVALUATE for m in msgs)
    assert CONFIG_SPEC_KEY not in msgs[0].content["config"]
    replies = [
        Message(RecordDict({"metrics": MetricRecord({"num-examples": n, "acc": a})}), reply_to=m)
        for m, n, a in zip(msgs, (1, 3), (0.0, 1.0))
    ]
    assert strategy.aggregate_evaluate(1, replies)["acc"] == pytest.approx(0.75)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_are_refused_with_named_fields():
    with pytest.raises(TypeError, match="Message API"):
        AnchoredStrategy(object(), SPEC, {})
    with pytest.raises(ValueError, match="mode"):
        wrapped(FedAvg(), mode="fedxyz")
    with pytest.raises(ValueError, match="layouts is empty"):
        AnchoredStrategy(FedAvg(), SPEC, {})
    strategy, _ = wrapped(FedAvg())
    other = to_record(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="anchored tensor '0.bias': layout shape"):
        list(strategy.configure_train(1, other, ConfigRecord(), FakeGrid()))
    strategy, arrays = wrapped(FedAvg())
    list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid()))
    bad = ArrayRecord({k: Array(np.zeros(5, np.float32)) for k in arrays})
    with pytest.raises(ValueError, match="free entries"):
        strategy.expand_reply(bad)
    with pytest.raises(ValueError, match="tna-anchor-spec"):
        read_train_config({CONFIG_SPEC_KEY: "not json"})


def test_load_arrays_is_strict():
    model = build_mlp()
    record = to_record(build_mlp(seed=5))
    load_arrays(model, record)
    assert torch.equal(model.state_dict()["0.weight"], torch.from_numpy(record["0.weight"].numpy()))
    del record["0.weight"]
    with pytest.raises(RuntimeError, match="0.weight"):
        load_arrays(model, record)


# --------------------------------------------------------------------------------------------------
# Settings: the AnchorArguments fields under Flower's hyphenated run-config keys
# --------------------------------------------------------------------------------------------------
RUN_CONFIG = {"anchor-ratio": 0.25, "anchor-seed": 7, "anchor-granularity": "neuron", "anchor-include": "0\\. 2\\.",
              "anchor-exclude": "bias$", "anchor-round": 2}


def test_federated_arguments_from_run_config_equal_direct_construction():
    direct = FederatedArguments(anchor_ratio=0.25, anchor_seed=7, anchor_granularity="neuron",
                                anchor_include=["0\\.", "2\\."], anchor_exclude=["bias$"], anchor_round=2)
    parsed = FederatedArguments.from_run_config(RUN_CONFIG)
    assert parsed == direct and parsed.to_spec() == direct.to_spec()
    assert parsed.to_spec() == AnchorSpec(0.25, 7, "neuron", ("0\\.", "2\\."), ("bias$",), 2)
    assert RUN_CONFIG.items() <= parsed.to_run_config().items()
    assert FederatedArguments.from_run_config(parsed.to_run_config()) == parsed
    assert FederatedArguments.from_run_config({}) == FederatedArguments()
    # TOML gives 0 for a float written without a point; "" is no pattern list
    assert FederatedArguments.from_run_config({"anchor-ratio": 0, "anchor-include": ""}).to_spec() == AnchorSpec(0.0)


def test_federated_arguments_refuse_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['anchor-ratoi'\]"):
        FederatedArguments.from_run_config({"anchor-ratoi": 0.3})
    with pytest.raises(ValueError, match="anchor_ratio"):
        FederatedArguments.from_run_config({"anchor-ratio": 1.5})
    with pytest.raises(ValueError, match="'anchor-seed' = 1.5, expected an integer"):
        FederatedArguments.from_run_config({"anchor-seed": 1.5})
    with pytest.raises(ValueError, match="'anchor-ratio' = True, expected a number"):
        FederatedArguments.from_run_config({"anchor-ratio": True})
    with pytest.raises(ValueError, match="anchor_granularity"):
        FederatedArguments.from_run_config({"anchor-granularity": "row"})


def test_client_reads_back_the_settings_the_server_sends():
    """The train ConfigRecord carries the settings plus the keys hf_tna and Flower add; the client gets the
    server's settings back and unknown keys still fail."""
    settings = FederatedArguments.from_run_config(RUN_CONFIG)
    strategy, arrays = wrapped(FedProx(proximal_mu=0.1), mode="fedpnu")
    msg = next(iter(strategy.configure_train(3, arrays, ConfigRecord(settings.to_run_config()), FakeGrid())))
    assert {"server-round", "proximal-mu", CONFIG_SPEC_KEY} <= set(msg.content["config"])
    assert read_settings(msg, FederatedArguments) == settings
    assert read_settings(msg, FederatedArguments, {"anchor-seed": 99}) == settings  # the message wins
    msg.content["config"]["typo-key"] = 1
    with pytest.raises(ValueError, match="typo-key"):
        read_settings(msg, FederatedArguments)


def test_example_settings_match_the_app_run_config(monkeypatch):
    """Every key of the example's `[tool.flwr.app.config]` is an FLSettings field with the same default, and the
    command line of run_simulation.py parses into the same settings."""
    import tomllib

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "federated"))
    from run_simulation import parse_args
    from tna_fl_app.task import FLSettings

    app = tomllib.loads((ROOT / "examples/federated/pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert FLSettings.from_run_config(app) == FLSettings()
    settings, simulation = parse_args(["--quick", "--anchor-ratio", "0.3", "--anchor_exclude", "2\\.", "--seed", "4"])
    assert settings == FLSettings(anchor_ratio=0.3, anchor_exclude=["2\\."], seed=4, rounds=2, model="mlp",
                                  data="synthetic", train_size=200, test_size=200)
    assert simulation.num_clients == 2
    assert settings.to_spec() == AnchorSpec(0.3, seed=4, exclude=("2\\.",))  # anchor_seed follows seed
    assert FLSettings(method="fedavg").to_spec().ratio == 0.0


def test_run_arguments_check_choices_and_fedavg_has_no_anchors():
    from hf_tna.federated import FederatedRunArguments
    from hf_tna.federated.image_task import ImageTaskArguments

    with pytest.raises(ValueError, match=r"FederatedRunArguments.server must be one of .*got 'fedsgd'"):
        FederatedRunArguments(server="fedsgd")
    with pytest.raises(ValueError, match=r"ImageTaskArguments.model must be one of \('cnn', 'mlp'\)"):
        ImageTaskArguments.from_run_config({"model": "resnet"})
    with pytest.raises(ValueError, match="rounds"):
        FederatedRunArguments(rounds=0)
    assert FederatedRunArguments(seed=5).to_spec() == AnchorSpec(0.4, seed=5)  # anchor_seed follows seed
    assert FederatedRunArguments(method="fedavg").to_spec().ratio == 0.0
    assert [FederatedRunArguments(method=m).mode for m in ("fedavg", "fedpfn", "fedpnu")] == ["fedpfn"] * 2 + ["fedpnu"]


class ClientAppGrid(FakeGrid):
    """A grid whose nodes answer with a ClientApp, in process: node i is partition i of len(nodes)."""

    def __init__(self, client_app, n=2):
        super().__init__(n)
        self.client_app = client_app

    def send_and_receive(self, messages, timeout=None):
        from flwr.app import Context

        replies = []
        for msg in messages:
            node_config = {"partition-id": self.nodes.index(msg.metadata.dst_node_id), "num-partitions": len(self.nodes)}
            replies.append(self.client_app(msg, Context(1, msg.metadata.dst_node_id, node_config, RecordDict(), {})))
        return replies


@pytest.mark.parametrize("method", ["fedpfn", "fedavg"])
def test_app_glue_runs_the_image_task_in_process(method):
    """`run_experiment` with `build_client_app`'s ClientApp answering: accuracy per round, compact uploads, and
    FedPFN's global anchors bitwise at their initial values (read back through the evaluation)."""
    import dataclasses

    from hf_tna.federated.app import build_client_app, run_experiment
    from hf_tna.federated.image_task import IMAGE_TASK, ImageTaskArguments

    settings = ImageTaskArguments(method=method, server="fedavgm", rounds=2, model="mlp", data="synthetic",
                                  train_size=200, test_size=100, seed=1)  # fmt: skip
    seen = []

    def build_evaluator(s):
        evaluate = IMAGE_TASK.build_evaluator(s)
        return lambda model: seen.append({k: v.clone() for k, v in model.state_dict().items()}) or evaluate(model)

    task = dataclasses.replace(IMAGE_TASK, build_evaluator=build_evaluator)
    out = run_experiment(ClientAppGrid(build_client_app(task)), task, settings)
    assert len(out["accuracy"]) == 3 and out["num_nodes"] == 2
    assert out["settings"] == settings.to_run_config()
    assert [h["replies"] for h in out["bytes"]] == [2, 2]
    masks = anchor_masks(anchor_layouts(IMAGE_TASK.build_model(settings), settings.to_spec()), settings.to_spec())
    first, last = seen[0], seen[-1]
    if method == "fedpfn":
        assert all(h["upload_bytes"] < 0.7 * h["upload_bytes_full"] for h in out["bytes"])
        for key, mask in masks.items():
            assert torch.equal(last[key][torch.from_numpy(mask)], first[key][torch.from_numpy(mask)])
    else:
        assert not any(m.any() for m in masks.values())  # ratio 0: plain FedAvgM, full uploads
        assert all(h["upload_bytes"] == h["upload_bytes_full"] for h in out["bytes"])
    assert any(not torch.equal(first[k], last[k]) for k in first)


# --------------------------------------------------------------------------------------------------
# The one simulation through Flower's simulation engine (Ray)
# --------------------------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_example_runs_on_flowers_simulation_engine(tmp_path):
    out = tmp_path / "result.json"
    cmd = [
        sys.executable,
        str(ROOT / "examples/federated/run_simulation.py"),
        "--quick",
        "--method",
        "fedpfn",
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["accuracy"]) == 3 and result["num_nodes"] == 2
    assert result["accuracy"][-1] > result["accuracy"][0]
    for h in result["bytes"]:
        assert h["replies"] == 2 and h["upload_bytes"] < 0.7 * h["upload_bytes_full"]


@pytest.mark.parametrize("ratio", [0.4, 0.0])
def test_a_poisoned_client_update_is_not_aggregated_into_the_global_model(ratio):
    """Adversarial suite (issue 13, item 6): a non-finite aggregate never becomes the next global model."""
    strategy, arrays = wrapped(FedAvg(), mode="fedpfn", spec=AnchorSpec(ratio=ratio, seed=3))
    msgs = sorted(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(len(SIZES))),
                  key=lambda m: m.metadata.dst_node_id)
    replies = [client_reply(m, seed=i, n=SIZES[i]) for i, m in enumerate(msgs)]
    record = replies[0].content["arrays"]
    key = next(iter(record))
    poisoned = record[key].numpy().copy()
    poisoned.flat[0] = np.inf
    record[key] = Array(poisoned)
    new_arrays, _ = strategy.aggregate_train(1, replies)
    assert new_arrays is None  # Flower keeps the previous global model
    healthy = [client_reply(m, seed=i, n=SIZES[i]) for i, m in enumerate(msgs)]
    assert strategy.aggregate_train(1, healthy)[0] is not None

"""Step time and memory of `Trainer` vs `TNATrainer` (ratio 0.4, element and neuron; restore path and zero
copy), side by side.

    python benchmarks/overhead.py                      # CPU: ViT (hidden 192, 12 layers) and GPT-2-shaped LM
    python benchmarks/overhead.py --device cuda --large --dtype bf16   # adds ViT-B/16 and GPT-2 small

Prints JSON. Each round trains every variant for `--steps` steps in rotating order (after `--warmup`
steps each), so drifts of a noisy machine hit all variants alike; the figure is the median step time and
its ratio to `Trainer`, and the median optimizer-step time alone (from `on_pre_optimizer_step` to
`on_optimizer_step`). Memory: the bytes the anchors hold between steps (masks + anchor values on the restore
path, none with zero copy), peak GPU memory on CUDA, and on CPU the peak RSS of one child process per variant
(`--rss`). `memory_7b` turns the measured bytes per parameter into the whole training state of a 7B model
(computed, not measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_tna import AnchorSpec, TNAConfig, TNATrainer

VARIANTS = {  # name -> (spec, zero copy)
    "trainer": (None, None),
    "tna_element": (AnchorSpec(ratio=0.4, granularity="element"), False),
    "tna_neuron": (AnchorSpec(ratio=0.4, granularity="neuron"), False),
    "tna_element_zero_copy": (AnchorSpec(ratio=0.4, granularity="element"), True),
    "tna_neuron_zero_copy": (AnchorSpec(ratio=0.4, granularity="neuron"), True),
}


def build_model(name: str):
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    if name == "vit":
        config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                           image_size=64, patch_size=8, num_channels=3, num_labels=10)
        return ViTForImageClassification(config), 32
    if name == "gpt2":
        config = GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=8192, n_positions=128)
        return GPT2LMHeadModel(config), 8
    if name == "vit-b16":
        return ViTForImageClassification(ViTConfig(image_size=224, patch_size=16, num_labels=1000)), 32
    if name == "gpt2-small":
        return GPT2LMHeadModel(GPT2Config(n_positions=1024)), 8
    raise ValueError(f"unknown model {name!r}")


class FixedBatches(torch.utils.data.Dataset):
    """The same synthetic batch content every step: fixed shapes, no data loading cost."""

    def __init__(self, name: str, size: int):
        g = torch.Generator().manual_seed(0)
        self.size = size
        if name.startswith("vit"):
            image = 224 if name == "vit-b16" else 64
            self.item = {"pixel_values": torch.randn(3, image, image, generator=g), "labels": torch.tensor(1)}
        else:
            seq = 1024 if name == "gpt2-small" else 128
            ids = torch.randint(0, 8192, (seq,), generator=g)
            self.item = {"input_ids": ids, "labels": ids}

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return self.item


class StepTimer(TrainerCallback):
    """Wall time and process CPU time of every optimizer step, and the optimizer step alone. On a shared CPU the
    CPU time is the steadier figure: time spent waiting for a core another job holds does not count."""

    def __init__(self, device):
        self.device, self.times, self.cpu_times, self.opt_times, self._start = device, [], [], [], None
        self._opt_start = None

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = (time.perf_counter(), time.process_time())

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._sync()
        self._opt_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._sync()
        self.opt_times.append(time.perf_counter() - self._opt_start)

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start[0])
        self.cpu_times.append(time.process_time() - self._start[1])


def run_variant(model_name: str, variant: str, steps: int, warmup: int, device: str, dtype: str, out_dir: str):
    model, batch = build_model(model_name)
    spec, zero_copy = VARIANTS[variant]
    common = dict(
        output_dir=out_dir, per_device_train_batch_size=batch, max_steps=warmup + steps, learning_rate=1e-4,
        weight_decay=0.01, max_grad_norm=1.0, report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, use_cpu=device == "cpu", bf16=dtype == "bf16", dataloader_num_workers=0, seed=0,
    )
    timer = StepTimer(device)
    data = FixedBatches(model_name, batch * (warmup + steps))
    if spec is None:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=data, callbacks=[timer])
    else:
        args = TNAConfig(**common, anchor_zero_copy=zero_copy)
        trainer = TNATrainer(model=model, args=args, train_dataset=data, callbacks=[timer], anchor_spec=spec)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its metrics; stdout is for the JSON
        trainer.train()
    result = {"times": timer.times[warmup:], "cpu_times": timer.cpu_times[warmup:], "opt_times": timer.opt_times[warmup:]}
    if spec is not None:
        optimizer = trainer.anchored_optimizer
        result["path"] = "zero_copy" if getattr(optimizer, "zero_copy", False) else "restore"
        result["anchor_drift_after_training"] = optimizer.anchor_drift()
        result["restore_in_cuda_graph"] = getattr(optimizer, "_restore_graph", None) is not None
        result["anchor_ops_s"] = time_anchor_ops(optimizer, model, device)
        result["anchor_bytes"] = optimizer.anchor_nbytes()
        result["anchored_entries"] = sum(entry["num_anchored"] for entry in optimizer.manifest().values())
    result["num_params"] = sum(p.numel() for p in model.parameters())
    if device == "cuda":
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    del trainer, model
    return result


def time_anchor_ops(optimizer, model, device: str, repeats: int = 10) -> float:
    """Median seconds of the anchor work of one step outside the optimizer's own update (restore path: mask fresh
    gradients and restore the anchors; zero copy: draw the masks and zero the anchored gradients, which its step
    repeats for the decay): a noise-robust estimate of the overhead, next to the end-to-end ratio."""
    times = []
    for _ in range(repeats):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.mask_gradients()
        if hasattr(optimizer, "restore_anchors"):
            optimizer.restore_anchors()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 6)


def memory_7b(bytes_per_param: dict[str, float], dtype: str) -> dict:
    """Training state of a 7B-parameter model per variant, from the measured anchor bytes per parameter (computed):
    weights + gradients + AdamW's two moments, in fp32 (4 + 4 + 8 bytes) or bf16 mixed precision (bf16 weights and
    gradients, fp32 master weights and moments: 2 + 2 + 4 + 8)."""
    base = 16.0 if dtype == "fp32" else 16.0
    params = 7e9
    out = {"parameters": params, "adamw_state_bytes_per_param": base, "computed_not_measured": True}
    for variant, extra in bytes_per_param.items():
        out[variant] = {"anchor_bytes_per_param": extra, "total_gb": round(params * (base + extra) / 1e9, 1),
                        "anchor_gb": round(params * extra / 1e9, 1)}
    return out


def child_rss(model_name: str, variant: str, args) -> int:
    """Peak RSS (bytes) of one child process that trains one variant."""
    command = [sys.executable, __file__, "--child", model_name, variant, "--steps", "2", "--warmup", "1",
               "--device", args.device, "--dtype", args.dtype]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_bytes"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit", "gpt2"])
    parser.add_argument("--large", action="store_true", help="also ViT-B/16 and GPT-2 small (for a GPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss", action="store_true", help="CPU: peak RSS of a child process per variant")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tempfile

    out_dir = tempfile.mkdtemp(prefix="hf_tna_overhead_")
    if args.child:
        run_variant(*args.child, args.steps, args.warmup, args.device, args.dtype, out_dir)
        print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
        return
    models = (["vit-b16", "gpt2-small"] if args.large else []) + args.models  # the GPU targets first
    report = {"device": args.device, "dtype": args.dtype, "torch": torch.__version__, "threads": args.threads,
              "steps_per_round": args.steps, "rounds": args.rounds, "models": {}}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    names = list(VARIANTS)
    for model_name in models:
        times = {v: [] for v in names}
        cpu_times = {v: [] for v in names}
        opt_times = {v: [] for v in names}
        extra = {}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for variant in order:
                result = run_variant(model_name, variant, args.steps, args.warmup, args.device, args.dtype, out_dir)
                times[variant] += result.pop("times")
                cpu_times[variant] += result.pop("cpu_times")
                opt_times[variant] += result.pop("opt_times")
                extra[variant] = result
        base = statistics.median(times["trainer"])
        cpu_base = statistics.median(cpu_times["trainer"])
        entry = {}
        for variant in names:
            median = statistics.median(times[variant])
            cpu_median = statistics.median(cpu_times[variant])
            entry[variant] = {"median_step_s": round(median, 5), "ratio_to_trainer": round(median / base, 4),
                              "median_step_cpu_s": round(cpu_median, 5),
                              "cpu_ratio_to_trainer": round(cpu_median / cpu_base, 4),
                              "median_optimizer_step_s": round(statistics.median(opt_times[variant]), 5),
                              "steps_timed": len(times[variant]), **extra[variant]}
            if args.device == "cpu" and args.rss:
                entry[variant]["peak_rss_bytes"] = child_rss(model_name, variant, args)
            if "anchor_ops_s" in extra[variant]:
                entry[variant]["anchor_ops_fraction_of_step"] = round(extra[variant]["anchor_ops_s"] / base, 4)
            if "anchor_bytes" in extra[variant]:
                n = extra[variant]["num_params"]
                entry[variant]["anchor_bytes_per_param"] = round(extra[variant]["anchor_bytes"] / n, 3)
        report["models"][model_name] = entry
        per_param = {v: entry[v].get("anchor_bytes_per_param", 0.0) for v in names}
        report.setdefault("memory_7b", {})[model_name] = memory_7b(per_param, args.dtype)
        print(json.dumps({model_name: entry}), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

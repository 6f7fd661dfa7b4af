"""Uniform soup of 4 Llama-shaped checkpoints (~170M params, float32, 4 shards each): hf_tna vs mergekit.

    python benchmarks/soup_speed.py [--mergekit-python .bench-venv/bin/python] [--repeats 2]

The four checkpoints are random inits of one `LlamaConfig` (seeds 0..3), written once to `--cache-dir`.
Each merge runs in its own child process (`python -m hf_tna.cli soup ...` and `mergekit-yaml` with a
`linear` recipe over the same inputs), on a warm page cache, alternating which tool goes first. Reported
per tool: wall time (process start to exit, imports included), peak RSS of the child
(`getrusage(RUSAGE_CHILDREN)` in a wrapper process per run); then speed-up, RSS ratio and the max abs
difference between the two outputs. Prints JSON. mergekit lives in its own venv (`make bench-soup`
creates `.bench-venv`); without it, only our numbers are reported, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUM_MODELS = 4
# hidden 768, 17 layers, MLP 2048, vocab 32000, untied head: 169.6M parameters
LLAMA = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=17,
             num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
             tie_word_embeddings=False)
SHARD_SIZE = "180MB"  # 678 MB of float32 weights -> 4 shards
THREAD_ENV: dict[str, str] = {}
# run a command, print its wall time and peak RSS as JSON on the last line of stderr
_WRAPPER = (
    "import json,resource,subprocess,sys,time\n"
    "t=time.perf_counter();p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE)\n"
    "w=time.perf_counter()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "sys.stderr.write(p.stderr.decode(errors='replace')[-3000:])\n"
    "sys.stderr.write('\\n'+json.dumps({'rc':p.returncode,'wall_s':w,'cpu_s':u.ru_utime+u.ru_stime,"
    "'peak_rss_mb':u.ru_maxrss/1024})+'\\n')\n"
)


def build_checkpoints(cache: Path) -> list[Path]:
    """Write the 4 random Llama checkpoints once (reused while the config and shard size are unchanged)."""
    stamp = json.dumps({"llama": LLAMA, "shard": SHARD_SIZE, "n": NUM_MODELS}, sort_keys=True)
    folders = [cache / f"llama{i}" for i in range(NUM_MODELS)]
    if (cache / "stamp.json").exists() and (cache / "stamp.json").read_text() == stamp:
        return folders
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    for i, folder in enumerate(folders):
        torch.manual_seed(i)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA))
        model.save_pretrained(folder, max_shard_size=SHARD_SIZE)
        del model
    (cache / "stamp.json").write_text(stamp)
    return folders


def warm(folders) -> None:
    for folder in folders:
        for f in Path(folder).glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def run_measured(cmd: list[str], env=None) -> dict:
    env = {**os.environ, **(env or {}), **THREAD_ENV}
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env)
    lines = proc.stderr.strip().splitlines()
    result = json.loads(lines[-1])
    if result["rc"] != 0:
        result["error"] = "\n".join(lines[-15:-1])
    return result


def ours(folders, out: Path, python: str) -> dict:
    cmd = [python, "-m", "hf_tna.cli", "soup", *map(str, folders), "--output", str(out), "--no-progress"]
    return run_measured(cmd, {"PYTHONPATH": str(ROOT)})


def mergekit(folders, out: Path, mk_python: str, tmp: Path) -> dict:
    import yaml

    recipe = {"merge_method": "linear", "dtype": "float32",
              "models": [{"model": str(f), "parameters": {"weight": 1.0}} for f in folders]}
    config = tmp / "mergekit.yaml"
    config.write_text(yaml.safe_dump(recipe))
    exe = Path(mk_python).parent / "mergekit-yaml"
    return run_measured([str(exe), str(config), str(out)])


def max_abs_diff(a: Path, b: Path) -> dict:

    sys.path.insert(0, str(ROOT))
    from hf_tna.io import StreamingCheckpointReader

    with StreamingCheckpointReader(a) as ra, StreamingCheckpointReader(b) as rb:
        ka, kb = set(ra.keys()), set(rb.keys())
        diff = 0.0
        for key in sorted(ka & kb):
            x, y = ra.get(key), rb.get(key)
            if x.dtype != y.dtype or x.shape != y.shape:
                return {"error": f"{key}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"}
            diff = max(diff, float((x.double() - y.double()).abs().max()))
    return {"max_abs_diff": diff, "same_keys": ka == kb, "only_ours": sorted(ka - kb)[:5],
            "only_mergekit": sorted(kb - ka)[:5]}


def mergekit_problem(mk_python: str | None) -> str | None:
    if mk_python is None:
        return "no --mergekit-python given and no .bench-venv (run `make bench-soup`)"
    exe = Path(mk_python).parent / "mergekit-yaml"
    if not Path(mk_python).exists() or not exe.exists():
        return f"mergekit-yaml not found beside {mk_python}: install mergekit in that venv (`make bench-soup`)"
    return None


def main(argv=None) -> dict:
    default_mk = ROOT / ".bench-venv" / "bin" / "python"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mergekit-python", default=str(default_mk) if default_mk.exists() else None,
                        help="python of a venv with mergekit installed (default: .bench-venv)")
    parser.add_argument("--python", default=sys.executable, help="python that runs hf_tna")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "hf_tna_soup_bench"))
    parser.add_argument("--repeats", type=int, default=2, help="runs per tool (alternating order)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both tools (default: unset)")
    args = parser.parse_args(argv)
    if args.threads:
        THREAD_ENV["OMP_NUM_THREADS"] = str(args.threads)

    folders = build_checkpoints(Path(args.cache_dir))
    load = round(os.getloadavg()[0], 2)
    problem = mergekit_problem(args.mergekit_python)
    warm(folders)
    runs = {"hf_tna": [], "mergekit": []}
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            order = ["hf_tna", "mergekit"] if r % 2 == 0 else ["mergekit", "hf_tna"]
            for tool in order:
                out = tmp / f"{tool}_{r}"
                shutil.rmtree(out, ignore_errors=True)
                if tool == "hf_tna":
                    runs[tool].append(ours(folders, out, args.python))
                elif problem is None:
                    res = mergekit(folders, out, args.mergekit_python, tmp)
                    runs[tool].append(res)
                    if res["rc"] != 0:
                        problem = f"mergekit-yaml failed: {res.get('error', '')[-800:]}"
        report = {"model": "LlamaForCausalLM", "params": param_count(folders[0]), "dtype": "float32",
                  "num_models": NUM_MODELS, "shards_per_model": len(list(folders[0].glob("*.safetensors"))),
                  "cpu_count": os.cpu_count(), "omp_num_threads": args.threads, "repeats": args.repeats,
                  "load_avg_1m_at_start": load}
        for tool, rs in runs.items():
            ok = [x for x in rs if x["rc"] == 0]
            if ok:
                report[tool] = {"wall_s": min(x["wall_s"] for x in ok), "cpu_s": min(x["cpu_s"] for x in ok),
                                "peak_rss_mb": max(x["peak_rss_mb"] for x in ok),
                                "runs": [{k: round(v, 3) for k, v in x.items() if k != "error"} for x in rs]}
            elif rs:
                report[tool] = {"error": rs[-1].get("error")}
        startup = [run_measured([args.python, "-c", "import torch"]) for _ in range(args.repeats)]
        report["python_torch_import_baseline"] = {"wall_s": min(x["wall_s"] for x in startup),
                                                  "peak_rss_mb": max(x["peak_rss_mb"] for x in startup)}
        if problem:
            report["mergekit_missing"] = problem
        elif "wall_s" in report.get("hf_tna", {}) and "wall_s" in report.get("mergekit", {}):
            report["speedup"] = report["mergekit"]["wall_s"] / report["hf_tna"]["wall_s"]
            report["cpu_time_ratio"] = report["mergekit"]["cpu_s"] / report["hf_tna"]["cpu_s"]
            report["rss_ratio"] = report["hf_tna"]["peak_rss_mb"] / report["mergekit"]["peak_rss_mb"]
            report["outputs"] = max_abs_diff(tmp / "hf_tna_0", tmp / "mergekit_0")
            report["targets_met"] = {"speedup>=5": report["speedup"] >= 5, "rss<=half": report["rss_ratio"] <= 0.5,
                                     "diff<=1e-6": report["outputs"].get("max_abs_diff", 1) <= 1e-6}
    print(json.dumps(report, indent=2))
    return report


def param_count(folder: Path) -> int:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return int(index["metadata"]["total_size"]) // 4


if __name__ == "__main__":
    main()

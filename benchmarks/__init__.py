"""Benchmarks of hf_tna, run from the repository root; they write their tables into docs/results/.

    python -m benchmarks.lmc --help            # linear mode connectivity (a package: benchmarks/lmc/)
    python benchmarks/overhead.py --help       # step time and memory of TNATrainer vs Trainer
    python benchmarks/soup_speed.py --help     # streaming soup vs mergekit
    python benchmarks/fl.py --help             # FedAvg vs FedPFN vs FedPNU (Flower simulation)

Benchmarks import hf_tna (and `hf_tna.example_data` for the offline datasets), never `examples/`.
"""

"""Federated TNA-PFN on Flower (FedPFN, FedPNU).

- `config`: `FederatedArguments`, the anchor settings in Flower's run-config form, and `FederatedRunArguments`,
  a whole run's (method, server strategy, rounds, seed, local SGD) (imports no Flower);
- `server`: `AnchoredStrategy`, a wrapper around any Flower server strategy, and the pure helpers it shares
  with the clients;
- `client`: local training with `AnchoredOptimizer` and compact uploads for a `ClientApp`;
- `app`: the Flower app glue around a `FederatedTask` (an app's settings, model, data, evaluation): the
  ClientApp, one run on a ServerApp's grid, the simulation engine;
- `image_task`: the task of examples/federated and benchmarks/fl.py (Fashion-MNIST, Dirichlet label skew, the
  TNA-PFN authors' FL CNN, from `hf_tna.example_data`).

`server`, `client`, `app` and `image_task` need Flower (`pip install "hf_tna[fl]"`); import them by their module
path.
"""

from .config import FederatedArguments, FederatedRunArguments

__all__ = ["FederatedArguments", "FederatedRunArguments"]

"""Federated TNA-PFN on Flower (FedPFN, FedPNU).

- `config`: `FederatedArguments`, the anchor settings in Flower's run-config form (imports no Flower);
- `server`: `AnchoredStrategy`, a wrapper around any Flower server strategy, and the pure helpers it shares
  with the clients;
- `client`: local training with `AnchoredOptimizer` and compact uploads for a `ClientApp`.

`server` and `client` need Flower (`pip install "hf_tna[fl]"`); import them by their module path.
"""

from .config import FederatedArguments

__all__ = ["FederatedArguments"]

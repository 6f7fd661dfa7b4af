"""ClientApp: local SGD with hf_tna's AnchoredOptimizer on this node's Dirichlet share of the data."""

from __future__ import annotations

from hf_tna.federated.app import build_client_app
from tna_fl_app.task import TASK

app = build_client_app(TASK)

"""FedPFN / FedPNU (hf_tna) Flower app: Fashion-MNIST, Dirichlet label skew, the authors' FL CNN."""

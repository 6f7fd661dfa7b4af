"""hf_tna: training-time neuron alignment with fixed neuron anchors (TNA-PFN) for Hugging Face."""

__version__ = "0.1.0"

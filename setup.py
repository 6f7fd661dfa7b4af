import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("hf_tna/_version.py").read_text()).group(1)

EXTRAS = {
    "fl": ["flwr[simulation]>=1.20"],
    "examples": ["scikit-learn", "matplotlib", "pandas"],
    "test": [
        "pytest>=8",
        "pytest-xdist",
        "pytest-timeout",
        "scikit-learn",
        "matplotlib",
        "pandas",
        "peft>=0.15",
        "trl>=1.16",
    ],
    "dev": ["ruff"],
    # trl pulls torch: install it with your torch pinned (`pip install -c constraints.txt hf_tna[trl]`)
    "trl": ["trl>=1.16"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="hf_tna",
    version=VERSION,
    description="Training-time neuron alignment (TNA-PFN) for Hugging Face: fixed neuron anchors, "
    "model soups, ColD fusion and federated fine-tuning",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["hf_tna", "hf_tna.*"]),
    package_data={"hf_tna": ["merge/metrics/*/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "accelerate>=1.0",
        "peft>=0.15",
        "datasets>=3.0",
        "evaluate>=0.4",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "pyyaml",
        "tqdm",
        "numpy",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hf-tna=hf_tna.cli:main"]},
)

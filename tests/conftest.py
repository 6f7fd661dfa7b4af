"""Shared test set-up. The environment below is set at import time, before any Hugging Face library is imported.

- `HF_ENDPOINT` points at this process's loopback Hub test server (tests/fixtures/hub_server.py). Its port is reserved now
  and it serves once a test asks for the `hub_server` fixture (before that, Hub calls are refused at once). Each
  pytest-xdist worker imports this file and gets its own server. Nothing reaches the public Hub.
- `HF_HOME` is a fresh temporary folder (no real cache or token is touched); `HF_TOKEN` is a fake token, sent by
  the client and accepted by the server. Xet (unsupported by the server), telemetry and progress bars are off;
  `HF_HUB_OFFLINE` is unset because it would block the test server too.
- torch runs one thread per process.
"""

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from tests.fixtures.hub_server import HubServer

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point HF_ENDPOINT at the test server; "
        "do not import Hugging Face libraries from pytest plugins or before pytest starts"
    )

_HUB = HubServer(port=0)
_HF_HOME = tempfile.mkdtemp(prefix="hf_tna_tests_hf_home_")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(
    HF_ENDPOINT=_HUB.base_url,
    HF_HOME=_HF_HOME,
    HF_TOKEN="hf_tna_fake_test_token",
    HF_HUB_DISABLE_XET="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    TOKENIZERS_PARALLELISM="false",
)
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402  (after the environment above)
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hub_server() -> Iterator[str]:
    """Base URL of this worker's Hub test server (the value of HF_ENDPOINT), started on first use."""
    _HUB.start()
    yield _HUB.base_url
    _HUB.stop()


@pytest.fixture
def hub_store(hub_server):
    """A `HubStore` talking to the Hub test server."""
    from hf_tna.hub import HubStore

    return HubStore(endpoint=hub_server, token=os.environ["HF_TOKEN"])


@pytest.fixture
def hub_user(hub_server):
    """`hub_user("alice")`: a `HubStore` whose token is Alice's own on the Hub test server (one user per token)."""
    from hf_tna.hub import HubStore

    return lambda name: HubStore(endpoint=hub_server, token=_HUB.add_user(name))


@pytest.fixture
def local_store(tmp_path):
    """A `LocalStore` in a fresh temporary folder."""
    from hf_tna.hub import LocalStore

    return LocalStore(tmp_path / "store")

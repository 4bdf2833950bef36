"""Test-session set-up: a known environment, a private HF cache, the local Hub plugin and the `gpu` and
`space_build` markers.

The suite must pass whatever the caller's environment says, and huggingface_hub reads HF_ENDPOINT, HF_HOME,
HF_TOKEN, HF_HUB_OFFLINE (and more) once, when it is imported; transformers caches its HfApi client at first
use. So this module fixes the environment at import time, before any test module imports them. Tests that
need something else (a token in the environment, offline mode) set it themselves with ``monkeypatch``.

The local Hub (tests/hub_server.py) is loaded from its file path and registered as a plugin: its port is
reserved here, so that HF_ENDPOINT is final, but the server only starts for the first test that uses the
``local_hub`` fixture.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# --------------------------------------------------------------------------------------------- environment
# Variables a user may have exported that would change what the tests see: offline switches, tokens, other
# endpoints or caches, download accelerators and timeouts, a launcher's distributed set-up, Accelerate's
# settings. CUDA_VISIBLE_DEVICES is left alone: it only chooses GPUs, and tests marked `gpu` need it.
_DROPPED_PREFIXES = ("ACCELERATE_", "TORCHELASTIC_")
_DROPPED = (
    # Hub client
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
    "HUGGINGFACE_CO_STAGING", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER", "HF_XET_HIGH_PERFORMANCE",
    "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_DEBUG", "HF_HUB_DISABLE_SYMLINKS",
    # caches (all follow HF_HOME below)
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE",
    "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE",
    # a distributed launcher's set-up (the Trainer and Accelerate would try to join its process group)
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT",
)
for _name in list(os.environ):
    if _name in _DROPPED or _name.startswith(_DROPPED_PREFIXES):
        del os.environ[_name]

_HF_HOME = tempfile.mkdtemp(prefix="hubtune-test-hf-")
os.environ.update(
    HF_HOME=_HF_HOME,
    HF_DATASETS_OFFLINE="1",  # datasets never goes online in tests (the local Hub hosts models only)
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    TOKENIZERS_PARALLELISM="false",
    WANDB_MODE="disabled",
)
# The local Hub must be reached directly even when the caller uses an HTTP proxy.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(h for h in (os.environ.get(_name), "127.0.0.1", "localhost") if h)

if "huggingface_hub" in sys.modules:
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set its environment")

# --------------------------------------------------------------------------------------------- local Hub


def _load_local_hub_plugin():
    """tests/hub_server.py as the module ``hub_server`` (the name its own tests import it by)."""
    module = sys.modules.get("hub_server")
    path = Path(__file__).with_name("hub_server.py")
    if module is not None and Path(module.__file__).resolve() == path.resolve():
        return module
    spec = importlib.util.spec_from_file_location("hub_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hub_server"] = module
    spec.loader.exec_module(module)
    return module


hub_server = _load_local_hub_plugin()
os.environ["HF_ENDPOINT"] = hub_server.reserve_endpoint()


def pytest_configure(config):
    if not config.pluginmanager.is_registered(hub_server):
        config.pluginmanager.register(hub_server, "hubtune-local-hub")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "space_build: installs a published Space into a new virtual environment "
                            "(minutes, about 6 GB); left out of `pytest -q` by setup.cfg, run by `.ci/run` as its "
                            "own step: `pytest -q -m space_build`")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only here, so that collecting a suite without gpu tests stays fast

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_unconfigure(config):
    shutil.rmtree(_HF_HOME, ignore_errors=True)


# --------------------------------------------------------------------------------------------- shared fixtures
@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's process-wide state reset before and after the test (each GAN run builds its own Accelerator).

    Modules that train GANs use it for every test: ``pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")``.
    """
    from accelerate.state import AcceleratorState  # imported at use: the environment above must be final first

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(scope="session")
def timm_weights_with_head(tmp_path_factory):
    """``local-dir:`` weights of timm's test_resnet WITH its own 7-class head (a stand-in for an ImageNet
    checkpoint: Co-Tuning needs the source classifier)."""
    import timm
    import torch

    folder = tmp_path_factory.mktemp("timm-with-head")
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=7), str(folder), safe_serialization=True)
    return f"local-dir:{folder}"

"""Test-session set-up: everything offline, a private HF cache, and (see hub_server.py) a local Hub.

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_TOKEN when it is imported, so this module sets them
before any test module imports it.
"""

import os
import sys
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="hubtune-test-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("HF_TOKEN", None)

sys.path.insert(0, str(Path(__file__).parent))

# --------------------------------------------------------------------------------------------- local Hub
# One in-memory Hub (tests/hub_server.py) for the whole session, started here because huggingface_hub
# reads HF_ENDPOINT when it is imported and transformers caches its HfApi client at first use: the
# endpoint must be known before any test module imports them.
import uuid  # noqa: E402

import pytest  # noqa: E402

from hub_server import DEFAULT_TOKEN, start_local_hub  # noqa: E402

if "huggingface_hub" in sys.modules:
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")
LOCAL_HUB = start_local_hub()
os.environ["HF_ENDPOINT"] = LOCAL_HUB.endpoint


@pytest.fixture
def local_hub():
    """The session's local Hub, with no injected faults before or after the test."""
    LOCAL_HUB.clear_faults()
    yield LOCAL_HUB
    LOCAL_HUB.clear_faults()


@pytest.fixture
def hub_token():
    """A token the local Hub accepts (never set in the environment unless a test does it)."""
    return DEFAULT_TOKEN


@pytest.fixture
def hub_repo_id():
    """A fresh "org/name" repo id, so tests sharing the session's Hub never collide."""
    return f"hubtune-tests/model-{uuid.uuid4().hex[:10]}"

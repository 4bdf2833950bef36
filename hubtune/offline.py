"""Offline mode (``HF_HUB_OFFLINE=1``): whether it is on, and the words for a Hub file it keeps from us.

With offline mode on, huggingface_hub reads only its local cache, and a file that is not there fails as if the
repository lacked it ("has no config.json"). Every place that fetches from the Hub says instead that offline
mode is on and what to do. Nothing in this module imports anything of hubtune's.
"""

from __future__ import annotations

import os

__all__ = ["hub_offline", "not_in_cache"]


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE set now, or when it was imported)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE") or bool(
        constants.HF_HUB_OFFLINE)


def not_in_cache(what: str) -> str:
    """The sentence for a Hub file that could not be fetched and is not in the local cache."""
    if hub_offline():
        return (f"HF_HUB_OFFLINE=1 is set and {what} is not in the local Hugging Face cache; unset HF_HUB_OFFLINE "
                "(or set it to 0) to download it, or give a local folder instead")
    return (f"the Hub could not be reached for {what} and it is not in the local Hugging Face cache; check your "
            "connection (HF_ENDPOINT, proxies), or give a local folder instead")

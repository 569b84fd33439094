"""The zoo's exceptions: precise messages that say what to do next."""
from __future__ import annotations


class UnknownModelError(ValueError):
    """A name that is neither a shipped model, a configured hub id, a local folder nor a hub repo id."""


class WeightsError(ValueError):
    """A weight file that cannot be read or does not match the architecture its config names."""


class HubUnavailableError(OSError):
    """A hub repo that cannot be fetched now (offline and not cached, endpoint unreachable)."""

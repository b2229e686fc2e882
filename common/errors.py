"""One error family for the whole project.

Inner code raises these with the bad value and the fix in the message; the CLI
(and later the Flower boundary) turns them into a clean message and exit code.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "FedUnlearnError",
    "ModelError",
    "NonFiniteError",
    "RequestError",
    "UnknownNameError",
]


class FedUnlearnError(Exception):
    """Base class: anything a user can fix by changing input or environment."""


class ConfigError(FedUnlearnError):
    """A setting or hyper-parameter is out of range or malformed."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the valid names."""


class DataError(FedUnlearnError):
    """A dataset is missing, malformed, or a selection of it makes no sense."""


class ModelError(FedUnlearnError):
    """A model file or architecture cannot be used."""


class NonFiniteError(FedUnlearnError):
    """A loss or weight became NaN/Inf; the computation stops before writing anything."""


class RequestError(FedUnlearnError):
    """A forget request cannot be accepted or acted on (unknown ids, duplicate, wrong state)."""

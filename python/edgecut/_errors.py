"""The exceptions edgecut raises, one per kind of failure, all under :class:`EdgecutError`."""

from __future__ import annotations


class EdgecutError(Exception):
    """Base of every error edgecut raises."""


class ModelFileError(EdgecutError):
    """The model file is unreadable or malformed (not GGUF, truncated, corrupt)."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """No model file at the path (also a :class:`FileNotFoundError`)."""


class TokenizerError(EdgecutError):
    """The tokenizer in the file cannot be built, or fails on the input."""


class ModelError(EdgecutError):
    """The model cannot be built or run (a missing or misshapen tensor, an unsupported feature)."""


class UnsupportedArchitectureError(ModelError):
    """The file's architecture is not one edgecut runs (or not the kind asked for)."""


class ContextFullError(EdgecutError):
    """The prompt does not fit the KV cache; ``tokens``, ``used`` and ``capacity`` say by how much."""

    def __init__(self, message: str, tokens: int = 0, used: int = 0, capacity: int = 0) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.used = used
        self.capacity = capacity


class DeviceError(EdgecutError):
    """The device asked for cannot be opened (or is not in this build)."""


class InvalidInputError(EdgecutError, ValueError):
    """An argument is invalid (also a :class:`ValueError`); the message names it."""


class FallbackWarning(UserWarning):
    """A split call ran on the device alone: the server was unreachable, refused or failed.

    The result is the one a local run gives; the message says why.
    """

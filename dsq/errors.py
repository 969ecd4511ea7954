"""Errors dsq raises. Every message names the tensor, module, file or option and says what is expected."""

from __future__ import annotations


class DsqError(Exception):
    """Base class for every error dsq raises on purpose."""


class SchemeError(DsqError, ValueError):
    """A scheme definition or override is inconsistent."""


class UnknownNameError(DsqError, KeyError):
    """An unknown scheme, backend, recipe or preset name. The message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str], extra: str = ""):
        self.kind, self.name, self.known = kind, name, list(known)
        msg = f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known) or '(none)'}"
        super().__init__(msg + (f". {extra}" if extra else ""))

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.args[0]


class QuantInputError(DsqError, ValueError):
    """A tensor given to a kernel is unusable: NaN/Inf, wrong dtype, or a shape that does not fit."""


class BackendUnavailableError(DsqError, RuntimeError):
    """The backend is installed but cannot run here (no device, missing driver); the message says why."""


class UnsupportedError(DsqError, NotImplementedError):
    """The backend does not implement this scheme x op; the message gives the backend's reason."""


class CheckpointError(DsqError, ValueError):
    """A checkpoint on disk is missing, corrupt, truncated or inconsistent; the message names the file."""

"""Looking backends up by name: ``get_backend("npu")``, ``list_backends()``."""

from __future__ import annotations

from dsq.backend import Backend
from dsq.errors import BackendUnavailableError, DsqError, UnknownNameError
from dsq.plugins import load_errors, load_plugins, pm

_backends: dict[str, Backend] | None = None


def _collect() -> dict[str, Backend]:
    global _backends
    if _backends is None:
        load_plugins()
        found: dict[str, Backend] = {}

        def register(backend: Backend) -> None:
            if not isinstance(backend, Backend):
                raise DsqError(f"register() expects a dsq.Backend instance, got {type(backend).__name__}")
            if not backend.name:
                raise DsqError(f"{type(backend).__name__} has no name")
            found.setdefault(backend.name, backend)

        for impl in pm.hook.dsq_register_backends.get_hookimpls():
            try:
                impl.function(register=register)
            except Exception as exc:  # a plugin whose hook fails is reported, not fatal
                load_errors[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
        _backends = found
    return _backends


def refresh() -> None:
    """Forget the collected backends (after registering or unregistering a plugin in-process)."""
    global _backends
    _backends = None


def list_backends() -> list[Backend]:
    """Every registered backend, available or not, in registration order."""
    return list(_collect().values())


def plugin_errors() -> dict[str, str]:
    """Plugins that failed to load: entry-point name -> error (tracebacks under 'name.traceback')."""
    _collect()
    return {k: v for k, v in load_errors.items() if not k.endswith(".traceback")}


def get_backend(name: str | Backend, require_available: bool = True) -> Backend:
    """The backend called ``name`` or one of its aliases (case-insensitive).

    Raises UnknownNameError listing the known names (and plugins that failed to load), or
    BackendUnavailableError with the backend's reason when ``require_available`` and it cannot run here.
    """
    if isinstance(name, Backend):
        backend = name
    else:
        key = str(name).strip().lower()
        backend = None
        for b in _collect().values():
            if key == b.name.lower() or key in (a.lower() for a in b.aliases):
                backend = b
                break
        if backend is None:
            known = [b.name + (f" ({', '.join(b.aliases)})" if b.aliases else "") for b in _collect().values()]
            errors = plugin_errors()
            extra = ("plugins that failed to load: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
                     if errors else "")
            raise UnknownNameError("backend", str(name), known, extra)
    if require_available:
        ok, why = backend.is_available()
        if not ok:
            raise BackendUnavailableError(f"backend {backend.name!r} is not available here: {why}")
    return backend

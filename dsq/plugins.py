"""Plugin loading: every backend, built-in or a vendor's, comes in through entry-point group ``dsq.backends``.

Policy for failures: a plugin whose module fails to import, or whose hook raises, is recorded in
:data:`load_errors` (name -> error text) and skipped; ``import dsq`` never breaks because of a plugin.
``DSQ_BACKENDS=name1,name2`` restricts loading to the named entry points (an allowlist, for debugging).
"""

from __future__ import annotations

import importlib.metadata
import os
import traceback

import pluggy

from dsq import hookspecs

ENTRY_POINT_GROUP = "dsq.backends"

pm = pluggy.PluginManager("dsq")
pm.add_hookspecs(hookspecs)

#: entry-point name -> one-line error for plugins that could not be loaded
load_errors: dict[str, str] = {}
_loaded = False


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    seen, unique = set(), []
    for ep in eps:  # the same distribution can show up twice (editable + site), keep the first
        if ep.name not in seen:
            seen.add(ep.name)
            unique.append(ep)
    return unique


def load_plugins(force: bool = False) -> None:
    """Import every ``dsq.backends`` entry point once and register it with the plugin manager."""
    global _loaded
    if _loaded and not force:
        return
    _loaded = True
    allow = os.environ.get("DSQ_BACKENDS")
    allowed = {a.strip() for a in allow.split(",")} if allow else None
    for ep in _entry_points():
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken vendor package must not break dsq
            load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            load_errors[ep.name + ".traceback"] = traceback.format_exc()


def register_plugin(obj, name: str | None = None) -> None:
    """Register a plugin object in-process (tests, notebooks); same hook as an entry point."""
    pm.register(obj, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin`."""
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)

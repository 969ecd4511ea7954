"""The plugin contract: the one hook a backend package implements.

A backend package exposes a module with::

    import dsq

    @dsq.hookimpl
    def dsq_register_backends(register):
        register(MyBackend())

and names that module in its ``pyproject.toml``::

    [project.entry-points."dsq.backends"]
    mybackend = "my_package.plugin"
"""

import pluggy

hookspec = pluggy.HookspecMarker("dsq")
hookimpl = pluggy.HookimplMarker("dsq")


@hookspec
def dsq_register_backends(register):
    """Call ``register(backend)`` once for each :class:`dsq.Backend` instance this plugin provides."""

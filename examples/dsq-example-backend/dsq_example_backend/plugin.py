"""The module named by this package's ``dsq.backends`` entry point: it registers one backend instance."""

import dsq

from .backend import ExampleTorchBackend


@dsq.hookimpl
def dsq_register_backends(register):
    register(ExampleTorchBackend())

"""cpu-reference: dsq's numpy oracle, registered through the ``dsq.backends`` entry point like any vendor plugin."""

from dsq.hookspecs import hookimpl

from .backend import CpuReferenceBackend

__all__ = ["CpuReferenceBackend"]


@hookimpl
def dsq_register_backends(register):
    register(CpuReferenceBackend())

"""dsq-example-backend: a pure-PyTorch dsq backend for the int8 per-channel schemes (W8A16, W8A8_DYNAMIC).

Modules: ``int8`` (the numerics: scales, codes, packing), ``backend`` (the Backend subclass),
``plugin`` (the entry point dsq loads). See docs/adding-a-backend.md in the dsq repository.
"""

from .backend import ExampleTorchBackend

__all__ = ["ExampleTorchBackend"]
__version__ = "0.1.0"

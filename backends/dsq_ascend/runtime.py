"""Which ops the ascend backend calls: the real torch_npu (hardware mode) or the CPU emulation.

``DSQ_EMULATE=1`` (set by ``dsq conformance --emulate``) selects :mod:`dsq_ascend.emulated_ops` on CPU;
otherwise torch_npu is imported lazily, on first use, never at plugin load. torch_npu needs Huawei's CANN
toolkit: with torch_npu installed but CANN missing, even ``import torch`` fails, because torch autoloads
device backends (``TORCH_DEVICE_BACKEND_AUTOLOAD``; the root error is ``libhccl.so: cannot open shared
object file``). dsq therefore never installs torch_npu for you.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

EMULATE_ENV = "DSQ_EMULATE"
INSTALL_HINT = (
    "install Huawei CANN (toolkit + kernels for your Ascend 910B/910C) and the torch_npu wheel matching your "
    "torch version (pip install torch_npu==<torch version>), then `source <CANN>/set_env.sh`; do not install "
    "torch_npu without CANN: torch's device-backend autoload then breaks `import torch` itself. To run the "
    f"backend's code on CPU against the emulated ops instead, set {EMULATE_ENV}=1 "
    "(`dsq conformance --backend ascend --emulate`)")

_torch_npu: ModuleType | None = None
_import_error: str | None = None


def emulation_requested() -> bool:
    """True when DSQ_EMULATE is set to 1/true/yes (read on every call: the CLI may set it late)."""
    return os.environ.get(EMULATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mode() -> str:
    """"emulated" or "hardware"."""
    return "emulated" if emulation_requested() else "hardware"


def load_torch_npu() -> tuple[ModuleType | None, str]:
    """Import torch_npu once; (module, "") or (None, reason). Never raises."""
    global _torch_npu, _import_error
    if _torch_npu is not None:
        return _torch_npu, ""
    if _import_error is not None:
        return None, _import_error
    if importlib.util.find_spec("torch_npu") is None:
        _import_error = "torch_npu is not installed"
        return None, _import_error
    try:
        module = importlib.import_module("torch_npu")
    except Exception as exc:  # a broken CANN install shows up here (missing libascendcl.so, libhccl.so, ...)
        _import_error = f"import torch_npu failed ({type(exc).__name__}: {exc}); is CANN installed and set_env.sh sourced?"
        return None, _import_error
    _torch_npu = module
    return module, ""


def hardware_status() -> tuple[bool, str]:
    """(True, "") when torch_npu imports and an NPU is visible, else (False, reason + install hint)."""
    module, why = load_torch_npu()
    if module is None:
        return False, f"{why}; {INSTALL_HINT}"
    import torch

    npu = getattr(torch, "npu", None)
    try:
        ok = bool(npu is not None and npu.is_available() and npu.device_count() > 0)
    except Exception as exc:  # driver problems surface as exceptions from the runtime
        return False, f"torch_npu imported but the NPU runtime failed: {type(exc).__name__}: {exc}"
    if not ok:
        return False, ("torch_npu imported but no NPU device is visible (check the Ascend driver, npu-smi info, "
                       f"ASCEND_RT_VISIBLE_DEVICES); or set {EMULATE_ENV}=1 to emulate on CPU")
    return True, ""


def get_ops() -> ModuleType:
    """The op namespace for the current mode: :mod:`dsq_ascend.emulated_ops` or the torch_npu module."""
    if emulation_requested():
        from dsq_ascend import emulated_ops

        return emulated_ops
    module, why = load_torch_npu()
    if module is None:
        from dsq.errors import BackendUnavailableError

        raise BackendUnavailableError(f"backend 'ascend' is not available here: {why}; {INSTALL_HINT}")
    return module


def device() -> str:
    return "cpu" if emulation_requested() else "npu"

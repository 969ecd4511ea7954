"""Turning one source weight into its canonical PackedWeight, in row chunks of bounded size.

Source weights are bf16/fp16/fp32, or DeepSeek float8 e4m3 with a float32 ``weight_scale_inv`` per
``bn x bk`` block (128 x 128), which despite its name is multiplied in:

    w[n, k] = float32(q[n, k]) * s[n // bn, k // bk]        (one float32 rounding; exact products)

Every scheme handled here is row-separable (channel, group and two-level scales are per row; FP8 block
scales per ``bn`` rows; packed zero points per 8 rows), so quantizing rows ``r0 .. r1`` on their own and
concatenating gives the same bits as quantizing the whole weight, as long as chunks start at multiples of
``ROW_UNIT`` (128, a multiple of every unit). Chunks bound the float32 working set to ``chunk_elems``.

Engines:

* :class:`TorchCpuEngine` ("cpu", the default): :mod:`dsq.streaming.fastquant`, proven bit-identical to the
  numpy reference by tests; schemes it does not cover fall back to the reference backend.
* :class:`BackendEngine`: any dsq backend's ``calibrate`` + ``pack`` on its device (``cuda``: the whole
  float8 weight goes to the GPU, is dequantized there and quantized by the Triton kernels), or the numpy
  reference itself (``cpu-reference``), the slow oracle.
"""

from __future__ import annotations

import torch

from dsq.errors import CheckpointError
from dsq.qtypes import PackedWeight
from dsq.schemes import QuantScheme

from .fastformat import TwoLevelCodes, codes_of
from .fastquant import FastQuantizer, concat_rows, fast_supported

__all__ = ["dequant_fp8", "Engine", "TorchCpuEngine", "BackendEngine", "make_engine", "ROW_UNIT"]

ROW_UNIT = 128
DEFAULT_CHUNK_ELEMS = 1024 * 1024  # 4 MiB of float32 per chunk: the work buffers stay cache-sized


def check_fp8_scale(name: str, w_shape: tuple[int, ...], s: torch.Tensor, block: tuple[int, int]) -> None:
    """The block-scale partner of a float8 weight must be float32 [ceil(N/bn), ceil(K/bk)]."""
    n, k = w_shape
    want = (-(-n // block[0]), -(-k // block[1]))
    if tuple(s.shape) != want or s.dtype != torch.float32:
        raise CheckpointError(f"tensor {name}_scale_inv is {s.dtype}{list(s.shape)}; the float8 weight {name} "
                              f"[{n}, {k}] needs float32 {list(want)} (one scale per {block[0]}x{block[1]} block)")


def dequant_fp8(w8: torch.Tensor, s: torch.Tensor, block: tuple[int, int] = (128, 128)) -> torch.Tensor:
    """float32 ``q * s`` of a float8 [R, K] chunk and its block scales [ceil(R/bn), ceil(K/bk)]."""
    r, k = w8.shape
    bn, bk = block
    w = w8.to(torch.float32)
    if r % bn == 0 and k % bk == 0:
        w.view(r // bn, bn, k // bk, bk).mul_(s[:, None, :, None])
        return w
    full = s.repeat_interleave(bn, dim=0)[:r].repeat_interleave(bk, dim=1)[:, :k]
    return w.mul_(full)


class Engine:
    """Quantize and dequantize source weights. ``name`` is what the summary reports."""

    name = "engine"
    device = "cpu"

    def __init__(self, chunk_elems: int = DEFAULT_CHUNK_ELEMS, fp8_block: tuple[int, int] = (128, 128)):
        self.chunk_elems = chunk_elems
        self.fp8_block = fp8_block

    def _rows_per_chunk(self, k: int) -> int:
        return max(ROW_UNIT, (self.chunk_elems // max(k, 1)) // ROW_UNIT * ROW_UNIT)

    def _chunks(self, w: torch.Tensor, s: torch.Tensor | None):
        """float32 row chunks of a source weight (dequantized when float8)."""
        n, k = w.shape
        step = self._rows_per_chunk(k)
        bn = self.fp8_block[0]
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            if s is not None:
                yield dequant_fp8(w[r0:r1], s[r0 // bn: -(-r1 // bn)], self.fp8_block)
            else:
                yield w[r0:r1].to(torch.float32)

    def quantize(self, w: torch.Tensor, s: torch.Tensor | None, scheme: QuantScheme, name: str) -> PackedWeight:
        """Canonical PackedWeight of weight ``w`` ([N, K]; float8 with block scales ``s``, else float), with its
        tensors on the engine's device."""
        if s is not None:
            check_fp8_scale(name, tuple(w.shape), s, self.fp8_block)
        w = w.to(self.device)
        s = None if s is None else s.to(self.device)
        parts = [self._quantize_chunk(c, scheme, name) for c in self._chunks(w, s)]
        return concat_rows(parts)  # on the engine's device: format builders may run there too

    def _quantize_chunk(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> PackedWeight:
        raise NotImplementedError

    def two_level_codes(self, w: torch.Tensor, s: torch.Tensor | None, scheme: QuantScheme,
                        name: str) -> TwoLevelCodes:
        """The unpacked codes of a two-level (W4A8_DYNAMIC) weight, on the engine's device: what
        :meth:`quantize` packs (here: quantized, then unpacked by :func:`codes_of`)."""
        return codes_of(self.quantize(w, s, scheme, name), scheme.group_size)

    def dequant(self, w: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
        """A float8 weight that stays float, in the model dtype (float32 product rounded once), written chunk
        by chunk into the output (no concatenation copy)."""
        check_fp8_scale(name, tuple(w.shape), s, self.fp8_block)
        out = torch.empty(tuple(w.shape), dtype=dtype, device=w.device)
        r0 = 0
        for c in self._chunks(w, s):
            out[r0: r0 + c.shape[0]].copy_(c)
            r0 += c.shape[0]
        return out


class TorchCpuEngine(Engine):
    """Vectorised torch on the CPU (bit-identical to the reference; reference fallback otherwise)."""

    name = "cpu (torch, bit-identical to cpu-reference)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reference = None
        self.fq = FastQuantizer()

    def _chunks(self, w: torch.Tensor, s: torch.Tensor | None):
        """Like Engine._chunks, into the FastQuantizer's reused buffer (each chunk is consumed before the next)."""
        n, k = w.shape
        step = self._rows_per_chunk(k)
        bn = self.fp8_block[0]
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            if s is not None:
                yield self.fq.dequant_fp8(w[r0:r1], s[r0 // bn: -(-r1 // bn)], self.fp8_block)
            else:
                buf = self.fq.buf("w", (r1 - r0, k))
                buf.copy_(w[r0:r1])
                yield buf

    def two_level_codes(self, w: torch.Tensor, s: torch.Tensor | None, scheme: QuantScheme,
                        name: str) -> TwoLevelCodes:
        """Two-level codes written chunk by chunk straight into one int8 [N, K] tensor: no int4 packing, no
        unpacking, no concatenation (the same codes and scales as :meth:`quantize`, by test)."""
        if not fast_supported(scheme):
            return super().two_level_codes(w, s, scheme, name)
        if s is not None:
            check_fp8_scale(name, tuple(w.shape), s, self.fp8_block)
        n, k = w.shape
        q4 = torch.empty(n, k, dtype=torch.int8)
        s1, s2 = [], []
        r0 = 0
        for c in self._chunks(w, s):
            a, b = self.fq.two_level_codes(c, scheme, name, q4[r0: r0 + c.shape[0]])
            s1.append(a)
            s2.append(b)
            r0 += c.shape[0]
        return TwoLevelCodes(q4, torch.cat(s1), torch.cat(s2), scheme.group_size)

    def _quantize_chunk(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> PackedWeight:
        if fast_supported(scheme):
            return self.fq.quantize(w, scheme, name)
        if self._reference is None:
            self._reference = _backend("cpu-reference")
        return self._reference.quantize_weight(w, scheme)


class BackendEngine(Engine):
    """A dsq backend's calibrate + pack on its own device."""

    def __init__(self, backend, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend
        self.name = backend.name
        self.device = backend.device
        if self.device != "cpu":
            self.chunk_elems = max(self.chunk_elems, 1 << 30)  # GPU memory is not the bound: whole weights

    def _quantize_chunk(self, w: torch.Tensor, scheme: QuantScheme, name: str) -> PackedWeight:
        from dsq.validate import check_weight

        check_weight(w, scheme, f"{name}.weight")
        return self.backend.quantize_weight(w, scheme)

    def dequant(self, w: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
        return super().dequant(w.to(self.device), s.to(self.device), dtype, name).cpu()


def _backend(name: str):
    """A registered backend; the built-in ones also when dsq runs from a source tree without its entry
    points installed (``PYTHONPATH=backends:.``, as on a bare GPU machine)."""
    from dsq.errors import UnknownNameError
    from dsq.registry import get_backend

    try:
        return get_backend(name)
    except UnknownNameError:
        if name.lower() in ("cuda", "gpu"):
            from dsq_cuda import CudaBackend

            return get_backend(CudaBackend())
        if name.lower() in ("cpu-reference", "numpy", "reference"):
            from dsq_cpu_reference.backend import CpuReferenceBackend

            return CpuReferenceBackend()
        raise


def make_engine(backend: str = "cpu", chunk_elems: int = DEFAULT_CHUNK_ELEMS,
                fp8_block: tuple[int, int] = (128, 128)) -> Engine:
    """``"cpu"`` (torch fast path), ``"cpu-reference"``/``"numpy"`` (the oracle), or any backend name."""
    if backend in ("cpu", "torch"):
        return TorchCpuEngine(chunk_elems, fp8_block)
    return BackendEngine(_backend(backend), chunk_elems, fp8_block)

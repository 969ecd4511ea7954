"""Quantization schemes: exactly what the stored numbers mean.

A :class:`QuantScheme` is an immutable description of how one linear layer's weight (shape ``[N, K]``:
N output features, K input features) and its input activation (shape ``[M, K]``) are quantized. The
numpy reference backend (``dsq_cpu_reference``) is the executable form of these rules; ``docs/schemes.md``
walks through every formula with examples. In short, all arithmetic is IEEE float32 unless stated:

Weights (``weight_dtype`` x ``weight_granularity``)
    * ``amax`` of a channel (row n), group (row n, columns ``g*G .. g*G+G-1``, last group may be short) or
      block (128x128 tile, edge tiles short) is ``max |w|`` in float32.
    * symmetric int: ``scale = max(amax / D, tiny)`` where ``D`` is ``qmax + 0.5`` (7.5 / 127.5,
      ``ScaleRule.HALF_RANGE``, what compressed-tensors writes) or ``qmax`` (7 / 127, ``ScaleRule.QMAX``,
      what msModelSlim writes); ``tiny`` is the smallest normal number of ``scale_dtype``. The scale is then
      rounded to ``scale_dtype`` (round half to even) and ``q = clip(rint(w / scale), qmin, qmax)``, with
      ``rint`` rounding half to even and ``w / scale`` a correctly rounded float32 division.
    * asymmetric int: ``lo = min(min w, 0)``, ``hi = max(max w, 0)``, ``scale = max((hi - lo) / (qmax - qmin),
      tiny)``, ``zp = clip(rint(qmin - lo / scale), qmin, qmax)`` (int8), ``q = clip(rint(w / scale + zp))``.
    * fp8 e4m3 (``FP8_BLOCK``): ``scale = max(amax / 448, tiny)``, ``q = e4m3(clip(w / scale, -448, 448))``
      where ``e4m3`` rounds to the nearest e4m3fn value, ties to even.
    * Dequantized weight: ``(q - zp) * scale`` (zp = 0 when symmetric).
    * An all-zero channel/group/block gets ``scale = tiny`` and ``q = 0``: never a zero or NaN scale.

Two-level weights (``W4A8_DYNAMIC``, QServe's progressive scheme)
    Level 1: ``s1 = max(amax_row / 119, tiny)``, ``q8 = clip(rint(w / s1), -119, 119)``.
    Level 2, per group of G along K: ``s2 = max(1, ceil(max |q8| / 7))`` (an integer in 1..17),
    ``q4 = rint(q8 / s2)`` which lies in [-7, 7] by construction. ``q4 * s2`` is then an int8 in
    [-119, 119] (119 = 7 * 17 is the largest range whose level-2 products cannot overflow), so kernels
    rebuild int8 weights in integer registers and run int8 x int8 MMAs. Dequantized: ``q4 * s2 * s1``.

Activations (``act_dtype`` x ``act_granularity``)
    * ``None``: activations stay in the model's float dtype (weight-only schemes).
    * int8 per token (dynamic): ``s = max(amax_row / 127, tiny_f32)``, ``q = clip(rint(x / s), -128, 127)``;
      127 is what every runtime kernel uses (vLLM ``scaled_int8_quant``, ``torch_npu.npu_dynamic_quant``).
    * int8 per tensor, asymmetric, static: ``scale`` and ``zp`` come from calibration statistics (asymmetric
      rule above over the observed min/max), ``q = clip(round(x / scale + zp), -128, 127)`` where the sum is
      float32 and ``round`` follows ``act_rounding``.
    * fp8 per token / per token-group of 128 (dynamic): ``s = max(amax / 448, tiny_f32)``,
      ``q = e4m3(clip(x / s, -448, 448))``.

The matmul result is ``y = dequant(x_q) @ dequant(W)^T + bias`` computed exactly (float64 in the reference),
rounded to float32 and then to the activation's dtype (a double rounding that can differ from a single one by
one ulp at rare ties, well inside the tolerances); backends may differ only by accumulation order and the
intermediate roundings the conformance tolerances allow (docs/conformance.md).
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from enum import Enum

from dsq.errors import SchemeError, UnknownNameError

__all__ = [
    "QType",
    "Granularity",
    "ActGranularity",
    "ScaleRule",
    "RoundMode",
    "QuantScheme",
    "get_scheme",
    "list_schemes",
    "register_scheme",
]


class QType(str, Enum):
    """Storage number formats."""

    INT8 = "int8"  #: signed 8-bit integer, q in [-128, 127]
    INT4 = "int4"  #: signed 4-bit integer, q in [-8, 7]; stored packed eight per int32
    FP8_E4M3 = "fp8_e4m3"  #: OCP float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits, max 448, no inf

    @property
    def qmin(self) -> float:
        return {"int8": -128, "int4": -8, "fp8_e4m3": -448.0}[self.value]

    @property
    def qmax(self) -> float:
        return {"int8": 127, "int4": 7, "fp8_e4m3": 448.0}[self.value]

    @property
    def bits(self) -> int:
        return 4 if self is QType.INT4 else 8


class Granularity(str, Enum):
    """How weight scales are shared."""

    CHANNEL = "channel"  #: one scale per output channel (row); scale shape [N, 1]
    GROUP = "group"  #: one scale per row and group of ``group_size`` inputs; scale shape [N, ceil(K/G)]
    BLOCK = "block"  #: one scale per ``block_size`` tile; scale shape [ceil(N/bn), ceil(K/bk)]


class ActGranularity(str, Enum):
    """How activation scales are shared."""

    TENSOR = "tensor"  #: one static scale (and zero point) for the whole tensor, from calibration
    TOKEN = "token"  #: one dynamic scale per row (token), computed at run time; scale shape [M, 1]
    TOKEN_GROUP = "token_group"  #: one dynamic scale per row and group of 128 inputs; shape [M, ceil(K/128)]


class ScaleRule(str, Enum):
    """Divisor used for symmetric integer weight scales (``scale = amax / divisor``)."""

    HALF_RANGE = "half_range"  #: divisor (qmax - qmin) / 2: int8 127.5, int4 7.5 (compressed-tensors)
    QMAX = "qmax"  #: divisor qmax: int8 127, int4 7 (msModelSlim)

    def divisor(self, qtype: QType) -> float:
        if qtype is QType.FP8_E4M3:
            return 448.0
        if self is ScaleRule.HALF_RANGE:
            return (qtype.qmax - qtype.qmin) / 2.0
        return float(qtype.qmax)


class RoundMode(str, Enum):
    """Rounding of a float to an integer code."""

    HALF_EVEN = "half_even"  #: ties to the even integer (numpy rint, torch.round); the default everywhere
    HALF_AWAY = "half_away"  #: ties away from zero (Ascend npu_quantize's CAST_ROUND), for static activations only


_SCALE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class QuantScheme:
    """An exact, immutable quantization scheme for one linear layer. See the module docstring for the math.

    Fields:
        name: preset name (upper case), e.g. ``"W4A16"``; variants made with :meth:`replace` keep it.
        weight_dtype: storage format of weight codes.
        weight_granularity: how weight scales are shared.
        group_size: inputs per group for ``GROUP`` granularity and for the level-2 groups of two-level
            schemes (0 otherwise).
        block_size: (rows, cols) of a weight scale block for ``BLOCK`` granularity.
        weight_symmetric: False adds an int8 zero point per scale (asymmetric weights).
        two_level: int8 per-channel first, then int4 per-group with integer group scales (W4A8_DYNAMIC).
        scale_rule: divisor for symmetric integer weight scales (compressed-tensors or msModelSlim).
        scale_dtype: dtype weight scales are rounded to and stored in: float32, bfloat16 or float16.
        act_dtype: activation code format, or None when activations stay in float.
        act_granularity: how activation scales are shared (None for weight-only schemes).
        act_symmetric: False for asymmetric (zero point) activations; only with TENSOR granularity.
        act_group_size: inputs per activation scale for TOKEN_GROUP (128).
        act_rounding: rounding of static activation codes (HALF_EVEN, or HALF_AWAY as Ascend does).
    """

    name: str
    weight_dtype: QType
    weight_granularity: Granularity
    group_size: int = 0
    block_size: tuple[int, int] = (128, 128)
    weight_symmetric: bool = True
    two_level: bool = False
    scale_rule: ScaleRule = ScaleRule.HALF_RANGE
    scale_dtype: str = "float32"
    act_dtype: QType | None = None
    act_granularity: ActGranularity | None = None
    act_symmetric: bool = True
    act_group_size: int = 128
    act_rounding: RoundMode = RoundMode.HALF_EVEN

    def __post_init__(self) -> None:
        def bad(msg: str) -> SchemeError:
            return SchemeError(f"scheme {self.name}: {msg}")

        self._coerce_fields(bad)
        if self.scale_dtype not in _SCALE_DTYPES:
            raise bad(f"scale_dtype must be one of {_SCALE_DTYPES}, got {self.scale_dtype!r}")
        if self.weight_granularity is Granularity.GROUP or self.two_level:
            if self.group_size <= 0:
                raise bad(f"group_size must be a positive integer, got {self.group_size}")
        if self.weight_granularity is Granularity.BLOCK:
            if len(self.block_size) != 2 or min(self.block_size) <= 0:
                raise bad(f"block_size must be two positive integers, got {self.block_size}")
        if self.weight_dtype is QType.FP8_E4M3 and not self.weight_symmetric:
            raise bad("fp8 weights are symmetric only")
        if self.two_level and (self.weight_dtype is not QType.INT4 or not self.weight_symmetric):
            raise bad("two_level needs symmetric int4 weights")
        if (self.act_dtype is None) != (self.act_granularity is None):
            raise bad("act_dtype and act_granularity are set together (both None for weight-only)")
        if not self.act_symmetric and self.act_granularity is not ActGranularity.TENSOR:
            raise bad("asymmetric activations are supported per tensor (static) only")
        if self.act_granularity is ActGranularity.TOKEN_GROUP and self.act_group_size <= 0:
            raise bad(f"act_group_size must be positive, got {self.act_group_size}")

    def _coerce_fields(self, bad) -> None:
        """Enum fields given as their string values (from JSON, YAML, keyword overrides) become enums;
        any other wrong type raises SchemeError naming the field and the accepted values."""
        for key, enum in _ENUM_FIELDS.items():
            v = getattr(self, key)
            if v is None and key in ("act_dtype", "act_granularity"):
                continue
            if not isinstance(v, enum):
                try:
                    v = enum(str(v).strip().lower())
                except ValueError:
                    raise bad(f"{key}={v!r} is not one of {', '.join(e.value for e in enum)}") from None
                object.__setattr__(self, key, v)

        def as_int(v):  # int, numpy or torch integer scalars; not bool, float or str
            if isinstance(v, bool):
                raise TypeError(v)
            return int(operator.index(v))

        try:
            for key in ("group_size", "act_group_size"):
                object.__setattr__(self, key, as_int(getattr(self, key)))
        except TypeError:
            raise bad(f"{key} must be an integer, got {getattr(self, key)!r}") from None
        try:
            block = tuple(as_int(b) for b in self.block_size)
        except TypeError:
            block = None
        if block is None or len(block) != 2:
            raise bad(f"block_size must be a pair of integers (rows, cols), got {self.block_size!r}")
        object.__setattr__(self, "block_size", block)

    # -- derived facts -------------------------------------------------------------------------------
    @property
    def weight_only(self) -> bool:
        """True when activations stay in float (W8A16, W4A16)."""
        return self.act_dtype is None

    @property
    def static_activations(self) -> bool:
        """True when activation scales come from calibration (needs ``act_stats`` in calibrate)."""
        return self.act_granularity is ActGranularity.TENSOR

    @property
    def weight_bits(self) -> int:
        return self.weight_dtype.bits

    def weight_divisor(self) -> float:
        """``D`` in ``scale = amax / D`` for symmetric weights (level 1 of two-level schemes uses 119)."""
        if self.two_level:
            return 119.0
        return self.scale_rule.divisor(self.weight_dtype)

    def scale_shape(self, n: int, k: int) -> tuple[int, int]:
        """Shape of ``weight_scale`` for a [n, k] weight."""
        if self.weight_granularity is Granularity.CHANNEL or self.two_level:
            return (n, 1)
        if self.weight_granularity is Granularity.GROUP:
            return (n, -(-k // self.group_size))
        bn, bk = self.block_size
        return (-(-n // bn), -(-k // bk))

    def replace(self, **changes) -> QuantScheme:
        """A copy with some fields changed (validated), e.g. ``get_scheme("w4a16").replace(group_size=64)``.

        Enum fields accept their string values (``scale_rule="qmax"``). An unknown field or value raises
        SchemeError listing the valid ones.
        """
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise SchemeError(f"scheme {self.name}: unknown field(s) {', '.join(unknown)}; "
                              f"valid fields: {', '.join(fields)}")
        return dataclasses.replace(self, **changes)  # __post_init__ converts and validates

    def to_dict(self) -> dict:
        """JSON-friendly form (enums as their string values)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, Enum) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> QuantScheme:
        """Inverse of :meth:`to_dict`. A preset's name starts from the preset; another name needs at least
        ``weight_dtype`` and ``weight_granularity``."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise SchemeError(f"a scheme dict needs a string 'name' and the QuantScheme fields, got {data!r}")
        fields = {k: v for k, v in data.items() if k != "name"}
        if data["name"].lower() in _PRESETS:
            return get_scheme(data["name"]).replace(**fields)
        known = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in ("weight_dtype", "weight_granularity") if k not in fields]
        unknown = sorted(set(fields) - set(known))
        if missing or unknown:
            raise SchemeError(f"scheme dict {data['name']!r}: missing field(s) {missing}, unknown field(s) "
                              f"{unknown}; valid fields: {', '.join(known)}")
        return cls(name=data["name"], **fields)

    def describe(self) -> str:
        """One line a person reads in tables: weights / activations."""
        w = f"{self.weight_dtype.value} {self.weight_granularity.value}"
        if self.weight_granularity is Granularity.GROUP or self.two_level:
            w += f"{self.group_size}"
        if self.two_level:
            w = f"int8 channel -> int4 group{self.group_size} (integer group scales)"
        if not self.weight_symmetric:
            w += " asym"
        if self.act_dtype is None:
            return f"W: {w}; A: float"
        a = f"{self.act_dtype.value} {self.act_granularity.value}"
        a += " static asym" if self.static_activations else " dynamic"
        return f"W: {w}; A: {a}"


_ENUM_FIELDS = {"weight_dtype": QType, "weight_granularity": Granularity, "scale_rule": ScaleRule,
                "act_rounding": RoundMode, "act_dtype": QType, "act_granularity": ActGranularity}

_I8, _I4, _F8 = QType.INT8, QType.INT4, QType.FP8_E4M3
_CH, _GR, _BL = Granularity.CHANNEL, Granularity.GROUP, Granularity.BLOCK

_PRESETS: dict[str, QuantScheme] = {}


def register_scheme(scheme: QuantScheme) -> QuantScheme:
    """Add a scheme to the preset table (names are case-insensitive)."""
    _PRESETS[scheme.name.lower()] = scheme
    return scheme


for _s in (
    QuantScheme("W8A16", _I8, _CH),
    QuantScheme("W4A16", _I4, _GR, group_size=128),
    QuantScheme("W4A16_ASYM", _I4, _GR, group_size=128, weight_symmetric=False),
    QuantScheme("W8A8", _I8, _CH, act_dtype=_I8, act_granularity=ActGranularity.TENSOR, act_symmetric=False),
    QuantScheme("W8A8_DYNAMIC", _I8, _CH, act_dtype=_I8, act_granularity=ActGranularity.TOKEN),
    QuantScheme("W4A8_DYNAMIC", _I4, _GR, group_size=128, two_level=True,
                act_dtype=_I8, act_granularity=ActGranularity.TOKEN),
    QuantScheme("W4AFP8", _I4, _GR, group_size=128, act_dtype=_F8, act_granularity=ActGranularity.TOKEN),
    QuantScheme("FP8_BLOCK", _F8, _BL, block_size=(128, 128), act_dtype=_F8,
                act_granularity=ActGranularity.TOKEN_GROUP, act_group_size=128),
):
    register_scheme(_s)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_scheme(name: str | QuantScheme, **overrides) -> QuantScheme:
    """Look up a preset by name (case-insensitive; ``-`` and ``_`` are the same) and apply overrides.

    >>> get_scheme("w4a16", group_size=64).group_size
    64
    """
    if isinstance(name, QuantScheme):
        return name.replace(**overrides) if overrides else name
    key = _normalise(str(name))
    if key not in _PRESETS:
        raise UnknownNameError("scheme", str(name), list_schemes())
    scheme = _PRESETS[key]
    return scheme.replace(**overrides) if overrides else scheme


def list_schemes() -> list[str]:
    """Names of every preset scheme."""
    return [s.name for s in _PRESETS.values()]

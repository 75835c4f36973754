"""Fused multiply-add and square root as LLVM intrinsics, callable from numba code on any target.

``sqrt`` exists because numba lowers ``math.sqrt`` to a libm call, which LLVM cannot vectorise; the
``llvm.sqrt`` intrinsic is the same correctly rounded IEEE operation (NaN for negative input) and
becomes one SIMD instruction.

TA-Lib's EMA step is ``fma(x - ema, k, ema)``; rounding once instead of twice is what makes our EMA
and MACD agree with it bit for bit. Numba has no ``math.fma`` before Python 3.13, so compiled code
gets the LLVM intrinsic (one instruction on FMA3 / CUDA hardware, a correctly rounded libm call
elsewhere) and plain Python (the CUDA simulator) gets an exact rational evaluation.
"""

from __future__ import annotations

import math
from fractions import Fraction

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload


def fma(a: float, b: float, c: float) -> float:
    """``a*b + c`` with a single rounding (exact in Python; slow, used only by the CUDA simulator)."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c  # NaN / inf propagate exactly as the fused instruction does
    return float(Fraction(a) * Fraction(b) + Fraction(c))


@intrinsic
def _llvm_fma(typingctx, a, b, c):  # noqa: ARG001 - numba's intrinsic signature
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        f64 = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f64], ir.FunctionType(f64, [f64, f64, f64]))
        return builder.call(fn, args)

    return sig, codegen


@overload(fma)
def _fma_compiled(a, b, c):
    def impl(a, b, c):
        return _llvm_fma(float(a), float(b), float(c))

    return impl


def sqrt(x: float) -> float:
    """IEEE square root; NaN (not an exception) for negative input, as in compiled code."""
    return math.sqrt(x) if x >= 0.0 else (x if x != x else math.nan)


@intrinsic
def _llvm_sqrt(typingctx, x):  # noqa: ARG001 - numba's intrinsic signature
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        f64 = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.sqrt", [f64], ir.FunctionType(f64, [f64]))
        return builder.call(fn, args)

    return sig, codegen


@overload(sqrt)
def _sqrt_compiled(x):
    def impl(x):
        return _llvm_sqrt(float(x))

    return impl

"""Fused multiply-add, square root and streaming stores as LLVM intrinsics, callable from numba code.

``sqrt`` exists because numba lowers ``math.sqrt`` to a libm call, which LLVM cannot vectorise; the
``llvm.sqrt`` intrinsic is the same correctly rounded IEEE operation (NaN for negative input) and
becomes one SIMD instruction.

TA-Lib's EMA step is ``fma(x - ema, k, ema)``; rounding once instead of twice is what makes our EMA
and MACD agree with it bit for bit. Numba has no ``math.fma`` before Python 3.13, so compiled code
gets the LLVM intrinsic (one instruction on FMA3 / CUDA hardware, a correctly rounded libm call
elsewhere) and plain Python (the CUDA simulator) gets an exact rational evaluation.

``stream_store`` writes an array element with a non-temporal hint: a batch panel of features is
gigabytes written once and not read back by the kernel, and an ordinary store first reads every
cache line it fills (write-allocate), doubling the memory traffic that bounds the batch CPU path.
Streaming stores are weakly ordered on x86, so a task that used them ends with ``store_fence``.
"""

from __future__ import annotations

import math
import platform
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


def stream_store(array, index, value) -> None:
    """``array[index] = value`` (1-D) without pulling the line into the cache where it is contiguous."""
    array[index] = value


@intrinsic
def _nontemporal_store(typingctx, array, index, value):  # noqa: ARG001 - numba's intrinsic signature
    sig = types.void(array, index, value)

    def codegen(context, builder, signature, args):
        array_type, index_type, value_type = signature.args
        data = context.make_array(array_type)(context, builder, args[0]).data
        index_value = context.cast(builder, args[1], index_type, types.intp)
        element = context.cast(builder, args[2], value_type, array_type.dtype)
        ptr = builder.gep(data, [index_value], inbounds=True)
        store = builder.store(element, ptr)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@overload(stream_store)
def _stream_store_compiled(array, index, value):
    if not (isinstance(array, types.Array) and array.ndim == 1):
        return None
    if array.layout != "C":  # a strided view: a plain store (the hint needs consecutive elements)

        def plain(array, index, value):
            array[index] = value

        return plain

    def impl(array, index, value):
        _nontemporal_store(array, index, value)

    return impl


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def store_fence() -> None:
    """Order earlier streaming stores before anything that follows (a no-op in plain Python)."""


@intrinsic
def _store_fence(typingctx):  # noqa: ARG001 - numba's intrinsic signature
    def codegen(context, builder, signature, args):  # noqa: ARG001
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse.sfence", [], ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@overload(store_fence)
def _store_fence_compiled():
    def impl():
        _store_fence()

    return impl

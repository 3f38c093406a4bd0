"""GPT-2's tanh GELU, 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))), fast on a CPU: the blocks' activation of the GPT
task's model and the distillation student (sfbench/tasks/gpt2_fast.py).

transformers computes it as `gelu_new` (eight tensor operations) or `gelu_pytorch_tanh` (PyTorch's one kernel). On a
CPU that kernel is slow, its vectorised tanh costing more than all the rest (docs/benchmarks.md). Here, in order of
preference, for float32/64 tensors on a CPU:

1. the C kernel `gelu_tanh.c` (float32; built at run time by `sfbench.tasks.native`, cached): x / (1 + exp(−2u)),
   one pass forward, one pass backward, through PyTorch's own OpenMP threads; saves only x for the backward;
2. PyTorch's operations through the identity 0.5 (1 + tanh(u)) = sigmoid(2u): four in-place passes forward and
   the derivative sigmoid(2u) (1 + x (1 − sigmoid(2u)) · 2u′) from the saved sigmoid (float64; float32 where the
   kernel can't be built: no C compiler, `SFBENCH_NATIVE=0`).

Both agree with the float64 function to within 2× the error of PyTorch's own float32 kernel (tests/test_native.py,
tests/test_gpt_model.py). Elsewhere — CUDA, where PyTorch's fused kernel is memory-bound and fast; half precision;
inside torch.compile, which fuses the activation itself — it is PyTorch's `gelu(approximate="tanh")`. Second
derivatives (create_graph=True) go through a differentiable form of the same derivative.
"""

from __future__ import annotations

import ctypes
import math

import torch
import torch.nn.functional as F
from torch import nn

_K = math.sqrt(2.0 / math.pi)
_A = 0.044715


def _sigmoid_2u(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(2u), u = √(2/π)(x + 0.044715 x³), in a new tensor: x·(2√(2/π) + 2√(2/π)·0.044715·x²), then sigmoid."""
    t = torch.addcmul(torch.tensor(2 * _K, dtype=x.dtype), x, x, value=2 * _K * _A)
    return t.mul_(x).sigmoid_()


def _check_kernel(lib) -> None:
    """Declares `sfbench_gelu_tanh`'s signature and compares it with PyTorch's kernel on values from −12 to 12, the
    extremes and NaN (native.load's self-check: a library that disagrees is not used)."""
    fn = lib.sfbench_gelu_tanh
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    fn.restype = ctypes.c_int
    x = torch.cat([torch.linspace(-12, 12, 481), torch.tensor([30.0, -30.0, float("inf"), float("nan")])])
    g = torch.linspace(-2, 2, x.numel())
    y, dx = torch.empty_like(x), torch.empty_like(x)
    fn(0, x.data_ptr(), None, y.data_ptr(), x.numel(), 1)
    fn(1, g.data_ptr(), x.data_ptr(), dx.data_ptr(), x.numel(), 1)
    torch.testing.assert_close(y, F.gelu(x, approximate="tanh"), rtol=1e-5, atol=1e-6, equal_nan=True)
    finite = x.isfinite()
    torch.testing.assert_close(dx[finite], torch.ops.aten.gelu_backward(g, x, approximate="tanh")[finite],
                               rtol=1e-5, atol=1e-5)
    if not dx[x.isnan()].isnan().all():
        raise AssertionError("NaN input did not give a NaN gradient")


_kernel = None


def native_kernel():
    """The C kernel `sfbench_gelu_tanh` (sfbench/tasks/gelu_tanh.c) or None; built and checked once per process."""
    global _kernel
    if _kernel is None:
        from sfbench.tasks import native

        lib = native.load("gelu_tanh", _check_kernel)
        _kernel = lib.sfbench_gelu_tanh if lib is not None else False
    return _kernel or None


class _GELUTanhCPU(torch.autograd.Function):
    """x·sigmoid(2u) and its derivative sigmoid(2u)(1 + x(1 − sigmoid(2u))·2u′), 2u′ = 2√(2/π)(1 + 3·0.044715·x²),
    through PyTorch's operations (float64, or float32 where the C kernel isn't available)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        s = _sigmoid_2u(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        if torch.is_grad_enabled():     # create_graph=True (second derivatives): the same formula, differentiable in x
            return _gelu_tanh_grad(grad, x)
        d = torch.addcmul(torch.tensor(2 * _K, dtype=x.dtype), x, x, value=6 * _K * _A).mul_(x)    # x·2u′
        d.addcmul_(d, s, value=-1)                                                                 # x·2u′(1 − s)
        return d.add_(1).mul_(s).mul_(grad)


def _gelu_tanh_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad · gelu′(x) as differentiable tensor operations (double backward)."""
    s = torch.sigmoid(2 * _K * (x + _A * x * x * x))
    return grad * s * (1 + x * (1 - s) * (2 * _K * (1 + 3 * _A * x * x)))


def _native(kernel, kind: int, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty_like(a, memory_format=torch.contiguous_format)
    kernel(kind, a.data_ptr(), None if b is None else b.data_ptr(), out.data_ptr(), a.numel(), torch.get_num_threads())
    return out


class _GELUTanhNative(torch.autograd.Function):
    """The same function and derivative in one pass each (the C kernel, float32); saves only x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.kernel = kernel
        return _native(kernel, 0, x, None)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _gelu_tanh_grad(grad, x), None
        return _native(ctx.kernel, 1, grad.contiguous(), x), None


class GELUTanh(nn.Module):
    """GPT-2's tanh GELU (`gelu_new` / `gelu_pytorch_tanh`), faster on a CPU (module docstring). `native=False`: never
    the C kernel (PyTorch's operations only; e.g. to measure what the kernel brings)."""

    def __init__(self, native: bool = True):
        super().__init__()
        self.native = native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or torch.compiler.is_compiling():
            return F.gelu(x, approximate="tanh")
        # the kernel reads raw memory: plain dense float32 tensors only (not a tensor subclass or a sparse one)
        plain = type(x) is torch.Tensor and x.layout == torch.strided and x.dtype == torch.float32
        kernel = native_kernel() if self.native and plain else None
        if kernel is not None:
            if torch.is_grad_enabled() and x.requires_grad:
                return _GELUTanhNative.apply(x, kernel)
            return _native(kernel, 0, x.contiguous(), None)
        if torch.is_grad_enabled() and x.requires_grad:
            return _GELUTanhCPU.apply(x)
        return _sigmoid_2u(x).mul_(x)

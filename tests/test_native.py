"""The C kernel of GPT-2's tanh GELU (sfbench/tasks/gelu_tanh.c) and its loader (sfbench/tasks/native.py).

Oracles: the function and its derivative written out in float64 (autograd of the formula; conftest.gelu_tanh_f64)
and PyTorch's own float32 kernel. The accuracy of both paths over 224k values is tests/test_gpt_model.py's
`test_cpu_gelu_is_gpt2s_tanh_gelu_to_float_rounding`; logits and gradients of the whole model against transformers'
`gelu_new` model are that file's too. The loader is tested on what goes wrong in
practice: no compiler, a failing compiler, a damaged cached library, several processes building at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import gelu_tanh_f64

from sfbench.tasks import gelu, native
from sfbench.tasks.gelu import GELUTanh

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process state where the kernel hasn't been loaded yet, with its own cache directory."""
    monkeypatch.setenv("SFBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SFBENCH_NATIVE", raising=False)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_why", {})
    monkeypatch.setattr(gelu, "_kernel", None)
    return tmp_path / "cache" / "native"


def _needs_kernel():
    """The kernel is built wherever a C compiler is found; on a machine without one the test says so (and fails in
    CI, which must exercise the kernel)."""
    kernel = gelu.native_kernel()
    if kernel is None:
        assert native.compiler() is None and not os.environ.get("CI"), native.status("gelu_tanh")
        pytest.skip(f"no C kernel here: {native.status('gelu_tanh')}")
    return kernel


def test_kernel_is_built_where_a_compiler_is():
    kernel = gelu.native_kernel()
    if native.compiler() is not None and os.environ.get("SFBENCH_NATIVE", "1") != "0":
        assert kernel is not None, native.status("gelu_tanh")
        assert native.status("gelu_tanh").startswith("native (")
    else:
        assert kernel is None and native.status("gelu_tanh").startswith("not used: ")


def test_special_values_follow_pytorchs_kernel():
    _needs_kernel()
    x = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 1e-40, -1e-40, 88.0, -88.0])
    torch.testing.assert_close(GELUTanh()(x), F.gelu(x, approximate="tanh"), equal_nan=True, atol=1e-37, rtol=0)
    xg = x.clone().requires_grad_()
    GELUTanh()(xg).backward(torch.ones_like(x))
    assert xg.grad[2].isnan()                                                   # NaN in, NaN out
    finite = x.isfinite()
    torch.testing.assert_close(xg.grad[finite], torch.ops.aten.gelu_backward(torch.ones_like(x), x,
                                                                             approximate="tanh")[finite])


@pytest.mark.parametrize("n", [0, 1, 7, 16383, 16384, 16385, 3 * 16384 + 5, 786_432])
def test_threads_and_lengths_give_the_same_bits(n):
    """Element-wise: one thread and PyTorch's threads agree bit for bit, for any length around the work blocks."""
    kernel = _needs_kernel()
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 4
    g = torch.randn(n, generator=torch.Generator().manual_seed(n + 1))
    outs = []
    for threads in (1, 2, 3):
        y, dx = torch.empty_like(x), torch.empty_like(x)
        kernel(0, x.data_ptr(), None, y.data_ptr(), n, threads)
        kernel(1, g.data_ptr(), x.data_ptr(), dx.data_ptr(), n, threads)
        outs.append((y, dx))
    for y, dx in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(dx, outs[0][1])
    if n:
        torch.testing.assert_close(outs[0][0], F.gelu(x, approximate="tanh"), rtol=2e-6, atol=1e-6)


def test_strided_inputs_and_the_forward_only_path():
    """Non-contiguous activations and views at an offset give the values of their contiguous copies; the no-grad
    forward equals the training forward."""
    _needs_kernel()
    base = torch.randn(64, 96, generator=torch.Generator().manual_seed(3)) * 3
    for x in (base.t(), base[5:40, 7:90], base[::2]):
        xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = GELUTanh()(xg)
        assert torch.equal(y, GELUTanh()(x.contiguous()))
        torch.testing.assert_close(y.double(), gelu_tanh_f64(x), rtol=2e-6, atol=1e-6)
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(4)).t().contiguous().t()   # strided grad
        y.backward(grad)
        xc = x.contiguous().requires_grad_()
        GELUTanh()(xc).backward(grad.contiguous())
        assert torch.equal(xg.grad, xc.grad)
        with torch.no_grad():
            assert torch.equal(GELUTanh()(x), y.detach())


def test_second_derivatives_through_the_kernels_backward():
    """create_graph=True through the kernel's backward (Hessian-vector products): the second derivative of
    Σ w·gelu(x) against the float64 formula's."""
    _needs_kernel()
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(5000, generator=g) * 3).requires_grad_()
    w = torch.randn(5000, generator=g)
    (grad,) = torch.autograd.grad((w * GELUTanh()(x)).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    x64 = x.detach().double().requires_grad_()
    (grad64,) = torch.autograd.grad((w.double() * gelu_tanh_f64(x64)).sum(), x64, create_graph=True)
    (second64,) = torch.autograd.grad(grad64.sum(), x64)
    xo = x.detach().requires_grad_()
    (grad_ops,) = torch.autograd.grad((w * GELUTanh(native=False)(xo)).sum(), xo, create_graph=True)
    (second_ops,) = torch.autograd.grad(grad_ops.sum(), xo)

    def err(a, b):
        return ((a.double() - b).abs() / b.abs().clamp_min(1.0)).max().item()

    assert err(grad, grad64) < 1e-5 and err(second, second64) < 1e-4 * w.abs().max().item()
    assert err(second, second64) <= 2 * err(second_ops, second64) + 1e-7, (err(second, second64),
                                                                            err(second_ops, second64))


def test_one_openmp_runtime_in_the_process():
    """The kernel's parallel loops go to the OpenMP runtime PyTorch loaded, never a second one."""
    _needs_kernel()
    runtimes = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                if len(line.split()) >= 6 and os.path.basename(line.split()[-1]).startswith(("libgomp", "libomp",
                                                                                            "libiomp5"))}
    assert len(runtimes) <= 1, runtimes
    if runtimes:
        assert native.status("gelu_tanh").endswith(f"OpenMP through {os.path.basename(runtimes.pop())})")
    else:
        assert "one thread" in native.status("gelu_tanh")


def test_switched_off_and_without_a_compiler(fresh, monkeypatch):
    monkeypatch.setenv("SFBENCH_NATIVE", "0")
    assert gelu.native_kernel() is None
    assert native.status("gelu_tanh") == "not used: SFBENCH_NATIVE=0"
    x = torch.randn(100, requires_grad=True)
    assert type(GELUTanh()(x).grad_fn).__name__ == "_GELUTanhCPUBackward"     # PyTorch's operations instead
    assert not fresh.exists()

    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(gelu, "_kernel", None)
    monkeypatch.delenv("SFBENCH_NATIVE")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(fresh.parent / "empty-path"))
    assert native.compiler() is None and gelu.native_kernel() is None
    assert "no C compiler" in native.status("gelu_tanh")


def test_a_failing_compiler_is_reported_and_the_model_still_trains(fresh, monkeypatch, caplog):
    script = fresh.parent / "broken-cc"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    with caplog.at_level(logging.WARNING, logger="sfbench.tasks.native"):
        assert gelu.native_kernel() is None
    assert "broken-cc: internal error" in native.status("gelu_tanh")
    assert any("gelu_tanh kernel not used" in r.getMessage() for r in caplog.records)
    x = torch.randn(10, 20, requires_grad=True)
    GELUTanh()(x).sum().backward()
    torch.testing.assert_close(x.grad.double(), torch.autograd.functional.jacobian(
        lambda t: gelu_tanh_f64(t).sum(), x.detach().double()), rtol=1e-5, atol=1e-6)
    assert not list(fresh.glob("*.tmp*")), "a failed build left files behind"


def test_a_damaged_cached_library_is_rebuilt(fresh):
    """A cached library cut short (e.g. a full disk mid-copy) is rebuilt, not handed to the dynamic loader.

    Everything that loads the library runs in subprocesses: this process must never map a file that is then cut
    short under it (a mapped page past the new end is a SIGBUS, here at interpreter exit, when the loader runs the
    library's finalisers; that is how a first version of this test crashed the whole test run after it passed)."""
    if native.compiler() is None:
        assert not os.environ.get("CI")
        pytest.skip("no C compiler here")
    code = ("import torch, logging; logging.basicConfig(level=logging.WARNING)\n"
            "from sfbench.tasks import gelu, native\n"
            "assert gelu.native_kernel() is not None, native.status('gelu_tanh')\n"
            "x = torch.linspace(-5, 5, 101); from sfbench.tasks.gelu import GELUTanh\n"
            "torch.testing.assert_close(GELUTanh()(x), torch.nn.functional.gelu(x, approximate='tanh'))\n")
    env = {**os.environ, "SFBENCH_CACHE": str(fresh.parent)}

    def run():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=300)

    first = run()
    assert first.returncode == 0, first.stderr
    (built,) = fresh.glob("gelu_tanh-*.so")
    whole = built.stat().st_size
    with open(built, "r+b") as f:                                    # cut short in place, as a full disk leaves it
        f.truncate(1000)
    out = run()
    assert out.returncode == 0, out.stderr
    assert "rebuilding" in out.stderr and "damaged" in out.stderr
    assert built.stat().st_size == whole


def test_processes_building_at_once_all_get_a_whole_library(fresh):
    """Four processes with a cold cache (e.g. DDP ranks): each loads a complete library, none a half-written one."""
    if native.compiler() is None:
        assert not os.environ.get("CI")
        pytest.skip("no C compiler here")
    code = ("from sfbench.tasks import gelu, native\n"
            "assert gelu.native_kernel() is not None, native.status('gelu_tanh')\n")
    env = {**os.environ, "SFBENCH_CACHE": str(fresh.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert len(list(fresh.glob("gelu_tanh-*.so"))) == 1 and not list(fresh.glob("*.tmp*"))


def test_a_library_that_fails_its_check_is_rebuilt_once_then_not_used(fresh, caplog):
    """A library that loads but disagrees with PyTorch (here: a check that always fails, with an unexpected error
    type) is rebuilt once, then left for PyTorch's path, with the reason in `status` and the log."""
    if native.compiler() is None:
        assert not os.environ.get("CI")
        pytest.skip("no C compiler here")
    calls = []

    def check(lib):
        calls.append(lib)
        raise TypeError("disagrees with PyTorch")

    with caplog.at_level(logging.WARNING, logger="sfbench.tasks.native"):
        assert native.load("gelu_tanh", check) is None
    assert len(calls) == 2 and calls[0]._handle != calls[1]._handle     # the rebuilt library, not the loader's old one
    assert "TypeError: disagrees with PyTorch" in native.status("gelu_tanh")
    messages = [r.getMessage() for r in caplog.records]
    assert any("rebuilding" in m for m in messages) and any("kernel not used" in m for m in messages)
    assert native.load("gelu_tanh", check) is None and len(calls) == 2        # decided once per process


def test_a_whole_library_in_place_is_kept_and_a_damaged_one_replaced(tmp_path):
    """`_put_in_place` (independent of any compiler): a sealed library another process put there first stays the
    same file (processes may have it mapped); a damaged one is replaced; a missing one is put there."""
    def sealed_bytes(body: bytes) -> bytes:
        return body + native._SEAL + hashlib.sha256(body).hexdigest().encode()

    target = tmp_path / "k.so"
    target.write_bytes(sealed_bytes(b"first"))
    inode = target.stat().st_ino
    tmp = tmp_path / "k.1.tmp.so"
    tmp.write_bytes(sealed_bytes(b"second"))
    native._put_in_place(str(tmp), target)
    assert target.stat().st_ino == inode and native._sealed(target) and target.read_bytes().startswith(b"first")

    target.write_bytes(target.read_bytes()[:7])                         # damaged
    assert not native._sealed(target)
    native._put_in_place(str(tmp), target)
    assert native._sealed(target) and target.read_bytes().startswith(b"second")

    (tmp_path / "new.so").unlink(missing_ok=True)
    tmp.write_bytes(sealed_bytes(b"third"))
    native._put_in_place(str(tmp), tmp_path / "new.so")
    assert (tmp_path / "new.so").read_bytes().startswith(b"third")

"""Small C kernels built at run time with the machine's C compiler, cached on disk, loaded through ctypes.

Why: a few element-wise functions that PyTorch computes slowly on a CPU and that no single PyTorch operation gives
(GPT-2's tanh GELU, `gelu_tanh.c`) are one pass over memory in C against four or more as separate tensor operations.
torch.compile would fuse them too, but it costs seconds of start-up in every process (and torch._dynamo's import);
a C file of a few dozen lines without any header of PyTorch's compiles in a fraction of a second, once per machine.

How:
- The source sits beside this module. It is compiled with `$CC` (else the first of `cc`, `gcc`, `clang` on PATH) at
  `-O3 -march=native` into `${SFBENCH_CACHE:-~/.cache/sfbench}/native/NAME-HASH.so`, the hash covering the source, the
  compiler and its version, the flags, the OpenMP runtime and the CPU's flags (a cache directory shared by cluster
  nodes with different CPUs keeps one library per kind of CPU). It is written under a temporary name and renamed
  into place (a whole library already there, built by another process first, is kept, never replaced under processes
  that have it mapped), so processes compiling at once (DDP ranks, array jobs) never load a half-written file; and it
  ends with a SHA-256 of its own bytes, checked before every load (a damaged file is rebuilt, never handed to the dynamic
  loader, which crashes on a truncated one).
- OpenMP: when PyTorch runs its own threads through an OpenMP runtime (the Linux wheels: libgomp), the kernel is
  linked against that same loaded library, so its parallel loops use PyTorch's thread pool. A second pool would
  compete for the cores with PyTorch's workers, which spin after every operation (measured: slower than one
  thread). Without such a runtime the kernel runs on one thread.
- Trust: after loading, each library runs a self-check against PyTorch on a few hundred values (`check` below); a
  library that can't be built, loaded or checked is not used, and the caller keeps its PyTorch path, with one log
  line saying why (a warning, unless it was switched off or there is no compiler).
- `SFBENCH_NATIVE=0` turns all of it off (PyTorch paths only). `native.status(NAME)` says what was decided and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from sfbench import cache_root

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-std=c99")
_HERE = Path(__file__).resolve().parent
_SEAL = b"\nsfbench-sha256:"       # appended to each built library, then the hex digest of the bytes before it
_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_why: dict[str, str] = {}


def cache_dir() -> Path:
    """`${SFBENCH_CACHE:-~/.cache/sfbench}/native` (read from the environment at each call)."""
    return cache_root() / "native"


def compiler() -> str | None:
    """The C compiler: `$CC` if set (it may carry arguments, e.g. `ccache gcc`), else `cc`, `gcc` or `clang`."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def openmp_runtime() -> str | None:
    """The path of the OpenMP runtime this process has loaded for PyTorch (libgomp, libiomp5, libomp), if any."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text().splitlines():
        fields = line.split()
        name = os.path.basename(path := fields[-1] if len(fields) >= 6 else "")
        if name.startswith(("libgomp", "libiomp5", "libomp")) and ".so" in name:
            return path
    return None


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(source: Path, target: Path, cc: str, omp: str | None) -> None:
    """Compile `source` into the shared library `target` (through a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    obj = tmp[:-3] + ".o"
    try:
        # OpenMP: code generated with -fopenmp, linked against the runtime PyTorch loaded (not the compiler's own,
        # which -fopenmp at link time would add), so that the loaded library is the one the kernel's calls reach.
        steps = ([[*cc.split(), *FLAGS, "-fopenmp", "-c", str(source), "-o", obj],
                  [*cc.split(), "-shared", obj, omp, "-o", tmp]] if omp else
                 [[*cc.split(), *FLAGS, "-shared", str(source), "-o", tmp]])
        for cmd in steps:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {(out.stderr or out.stdout).strip()[-500:]}")
        body = Path(tmp).read_bytes()
        Path(tmp).write_bytes(body + _SEAL + hashlib.sha256(body).hexdigest().encode())
        _put_in_place(tmp, target)
    finally:
        for leftover in (tmp, obj):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _put_in_place(tmp: str, target: Path) -> None:
    """Move the built file `tmp` to `target` without ever replacing a whole library another process may have mapped.

    A hard link fails if `target` exists: then a whole (sealed) library there, built by a process that got there
    first, is kept; only a damaged one is replaced. Replacing a mapped library is harmless on a local file system,
    but on a network one (a cache shared by nodes) the other clients' mappings of it can go stale, and a page read
    from a stale or cut-short mapping kills the process with SIGBUS. Where hard links aren't supported, a rename."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        if not _sealed(target):
            os.replace(tmp, target)
    except OSError:
        os.replace(tmp, target)


def _sealed(path: Path) -> bool:
    """Whether `path` is a whole library as `_build` wrote it: its bytes end with the SHA-256 of what precedes the
    seal. The dynamic loader ignores bytes after an ELF file's segments; it does not survive a damaged file (a
    truncated one is a SIGBUS inside dlopen), so nothing unsealed is ever handed to it."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    body, seal, digest = data.rpartition(_SEAL)
    return bool(seal) and hashlib.sha256(body).hexdigest().encode() == digest


def load(name: str, check: Callable[[ctypes.CDLL], None] | None = None) -> ctypes.CDLL | None:
    """The library built from `NAME.c` beside this module, or None (reason in `status(NAME)`); once per process.

    `check(lib)` declares the functions' argument types and compares their results with PyTorch's (raising on a
    mismatch); a library that fails it is rebuilt once, then given up on."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib, why = _load(name, check)
        _loaded[name], _why[name] = lib, why
        if lib is None:
            (log.info if why.startswith(("SFBENCH_NATIVE", "no C compiler")) else log.warning)(
                "sfbench: %s kernel not used (%s); PyTorch's operations compute it instead", name, why)
        return lib


def status(name: str) -> str:
    """What `load(name)` decided: 'native (...)' or 'not used: <why>'; 'not loaded yet' before the first call."""
    if name not in _loaded:
        return "not loaded yet"
    return _why[name] if _loaded[name] is not None else f"not used: {_why[name]}"


def _load(name: str, check) -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("SFBENCH_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "SFBENCH_NATIVE=0"
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc, gcc or clang) on PATH and CC unset"
    source = _HERE / f"{name}.c"
    omp = openmp_runtime()
    key = "\n".join([source.read_text(), cc, _compiler_version(cc), " ".join(FLAGS), omp or "no OpenMP",
                     _cpu_signature(), sys.platform])
    target = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    error = ""
    for attempt in range(2):
        try:
            if attempt or not _sealed(target):
                if attempt == 0 and target.exists():
                    log.warning("sfbench: rebuilding %s (damaged: its checksum doesn't match)", target)
                _build(source, target, cc, omp)
            # After a rebuild, a different spelling of the path: the dynamic loader hands back a library it already
            # has under the same name (one that loaded but failed its check), whatever the file is now.
            lib = ctypes.CDLL(str(target) if attempt == 0 else f"{target.parent}{os.sep}.{os.sep}{target.name}")
            if check is not None:
                check(lib)
            threads = f"OpenMP through {os.path.basename(omp)}" if omp else "one thread (no OpenMP runtime loaded)"
            return lib, f"native ({target}, {threads})"
        except Exception as exc:    # noqa: BLE001 - whatever fails here, the caller's PyTorch path is the answer
            error = f"{type(exc).__name__}: {exc}".strip()
            if attempt == 0 and target.exists():
                log.warning("sfbench: rebuilding %s (the cached library failed: %s)", target, error)
                try:
                    target.unlink()
                except OSError:
                    pass
    return None, f"{target}: {error}"

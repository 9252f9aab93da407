"""Cold start of the fused CPU path: a cheap ``import padam_core``, and a fresh process that loads
the cached kernel without numba's full registry refresh (padam_core._numba_cache), with correct
results, a refresh where the narrow load cannot be trusted, and numba still whole afterwards."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from padam_core import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Fused steps of small float32 arrays (serial and parallel kernel), compared with the pure kernel;
# prints what numba loaded and which of its heavy modules the process imported.
_STEP = """
import json, sys
import numpy as np
{prelude}
import padam_core
from padam_core import fused_cpu
imported_at_start = "numba" in sys.modules
rng = np.random.default_rng(0)
params = [rng.standard_normal(n).astype(np.float32) for n in (10, 1, 33, 7, 100)]
grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
hyper = dict(lr=0.1, b1=0.9, b2=0.999, eps=1e-8, partial=0.125, variant="reference")
expected = [padam_core.padam_step(p, g, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p),
                                  1, **hyper).param for p, g in zip(params, grads)]
# One array, one chunk: the serial kernel, which needs no threads.
state = [[np.zeros_like(params[4])] for _ in range(3)]
fused_cpu.multi_tensor_step(params[4:], grads[4:], *state, 1, **hyper)
threads_started = sys.modules["numba.np.ufunc.parallel"]._is_initialized
# Five chunks for two threads: the parallel kernel (its cached code starts the threads).
state = [[np.zeros_like(p) for p in params[:4]] for _ in range(3)]
fused_cpu.multi_tensor_step(params[:4], grads[:4], *state, 1, **hyper)
loop = fused_cpu._loop
kernels = (loop.multi_tensor_kernel, loop.multi_tensor_kernel_serial, loop.addresses)
record = dict(
    numba_at_import=imported_at_start,
    hits=sum(sum(k.stats.cache_hits.values()) for k in kernels),
    misses=sum(sum(k.stats.cache_misses.values()) for k in kernels),
    equal=all(np.array_equal(p, e) for p, e in zip(params, expected)),
    modules=[m for m in ("scipy.linalg", "numba.np.arraymath") if m in sys.modules],
    threads_started=threads_started,
)
{epilogue}
print(json.dumps(record))
"""


def _fresh(cache_dir: pathlib.Path, prelude: str = "", epilogue: str = "") -> dict:
    # Two threads: four chunks take the parallel kernel on any machine.
    env = dict(
        os.environ, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_NUM_THREADS="2", PYTHONPATH=str(ROOT)
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         _STEP.format(prelude=prelude, epilogue=epilogue)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A numba cache directory that one process has filled (it compiled, so it refreshed)."""
    cache = tmp_path_factory.mktemp("numba_cache")
    first = _fresh(cache)
    assert first["misses"] == 3 and first["hits"] == 0 and first["equal"]
    assert "numba.np.arraymath" in first["modules"]  # compiling needs every registry
    return cache


def test_import_padam_core_does_not_import_numba():
    code = (
        "import sys, padam_core, padam_core.fused_cpu, padam_core.optimizer\n"
        "print('numba' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "False"


def test_a_cached_load_skips_the_registries_and_gives_the_same_bits(filled_cache):
    record = _fresh(filled_cache)
    assert record["hits"] == 3 and record["misses"] == 0  # loaded from disk
    assert record["equal"]  # the narrow-loaded code computes what the pure kernel computes
    assert record["modules"] == []  # no scipy.linalg, no numba.np.arraymath
    assert not record["numba_at_import"]
    assert not record["threads_started"]  # one chunk: numba's threading layer never started


def test_numba_still_compiles_everything_after_a_narrow_load(filled_cache):
    # A new function in the same process needs the registries the narrow load skipped
    # (np.median lives in numba.np.arraymath): numba's compile path refreshes them.
    epilogue = (
        "import numba\n"
        "median = numba.njit(lambda a: np.median(a) + np.sum(a))\n"
        "record['median'] = float(median(np.arange(5.0)))\n"
    )
    record = _fresh(filled_cache, epilogue=epilogue)
    assert record["hits"] == 3 and record["modules"] == []
    assert record["median"] == 12.0


def test_an_unresolved_symbol_makes_the_load_refresh_first(filled_cache):
    # Where the cached code references a symbol LLVM does not know yet (one that a registry
    # module would register), the cache refreshes as numba does, then loads.
    prelude = (
        "from padam_core import _numba_cache\n"
        "_numba_cache.missing_symbols = lambda libdata: ['some_registry_symbol']\n"
    )
    record = _fresh(filled_cache, prelude=prelude)
    assert record["hits"] == 3 and record["misses"] == 0 and record["equal"]
    assert "numba.np.arraymath" in record["modules"]


def test_missing_symbols_reads_the_declarations_of_the_cached_module():
    import llvmlite.binding as ll

    from padam_core import _numba_cache

    module = ll.parse_assembly(
        "declare double @padam_no_such_symbol(double)\n"
        "declare double @llvm.sqrt.f64(double)\n"
        "declare i8* @NRT_MemInfo_data_fast(i8*)\n"
        "define double @f(double %x) {\n"
        "  %a = call double @padam_no_such_symbol(double %x)\n"
        "  %b = call double @llvm.sqrt.f64(double %a)\n"
        "  ret double %b\n"
        "}\n"
    )
    libdata = ("f", "object", (b"", module.as_bitcode()))
    # LLVM intrinsics are never looked up; NRT's own are, and are unknown until NRT starts.
    missing = _numba_cache.missing_symbols(libdata)
    assert "padam_no_such_symbol" in missing and "llvm.sqrt.f64" not in missing
    assert _numba_cache.missing_symbols(("f", "bitcode", b"")) is None
    assert _numba_cache.missing_symbols(None) is None


def test_install_replaces_only_numbas_own_function_cache():
    import numba
    from numba.core.caching import FunctionCache

    from padam_core import _numba_cache

    uncached = numba.njit(lambda x: x)
    before = uncached._cache
    assert _numba_cache.install(uncached) is uncached and uncached._cache is before
    cached = numba.njit(cache=True)(_identity)
    assert type(cached._cache) is FunctionCache
    _numba_cache.install(cached)
    assert isinstance(cached._cache, _numba_cache.NarrowLoadCache)
    assert cached._cache.cache_path == FunctionCache(_identity).cache_path


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def test_the_fused_step_defaults_to_the_kernels_variant():
    # multi_tensor_step without variant= computes what padam_step computes without it.
    import padam_core

    param = np.array([0.5, -1.0], np.float32)
    grad = np.array([0.3, 0.2], np.float32)
    expected = padam_core.padam_step(param, grad, *(np.zeros_like(param),) * 3, 1, lr=0.1)
    state = [[np.zeros_like(param)] for _ in range(3)]
    fused_cpu.multi_tensor_step([param], [grad], *state, 1, lr=0.1, b1=0.9, b2=0.999,
                                eps=1e-8, partial=padam_core.DEFAULT_PARTIAL)  # fmt: skip
    np.testing.assert_array_equal(param, expected.param)

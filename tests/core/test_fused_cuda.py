"""The fused CUDA kernel (padam_core/cuda/padam_multi_tensor.cu) against the pure kernel.

Without a GPU: the same .cu file is compiled for the CPU with the system C++ compiler and
``cuda_host_shim.h`` (blockIdx/threadIdx loops), and driven through ctypes with the tables that
``padam_core.fused_cuda`` builds for the GPU. With a GPU (CuPy sees a device): the CuPy launch
on CuPy arrays and on torch CUDA tensors, zero copy, on torch's current stream.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import padam_core
from padam_core import fused_cuda

try:  # NumPy's bfloat16 (installed with jax; gpu_check.sh installs it)
    import ml_dtypes
except ImportError:  # pragma: no cover - the bfloat16 cases are then skipped
    ml_dtypes = None

HERE = Path(__file__).resolve().parent
SOURCE_DIR = Path(fused_cuda.__file__).resolve().parent / "cuda"
BFLOAT16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None
DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
          "bfloat16": BFLOAT16}  # fmt: skip
needs_bfloat16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")


def _pure_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, **hyperparameters):
    """padam_core.padam_step; bfloat16 through its definition: the float32
    computation from the same values, the parameter rounded once. NumPy's bfloat16 comes from
    ml_dtypes, which not every version of the kernel's dtype checks accepts."""
    if BFLOAT16 is None or np.asarray(param).dtype != BFLOAT16:
        return padam_core.padam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step,
                                     **hyperparameters)  # fmt: skip
    result = padam_core.padam_step(np.asarray(param).astype(np.float32), grad.astype(np.float32),
                                   exp_avg, exp_avg_sq, max_exp_avg_sq, step,
                                   **hyperparameters)  # fmt: skip
    return result._replace(param=np.asarray(result.param).astype(BFLOAT16))


def _dtype(name: str) -> Any:
    """The NumPy dtype called ``name``; skips the test for bfloat16 without ml_dtypes."""
    if DTYPES[name] is None:
        pytest.skip("ml_dtypes is not installed")
    return DTYPES[name]

COMBINATIONS = list(
    itertools.product(
        padam_core.VARIANTS,
        (True, False),  # amsgrad
        ((0.0, False), (0.01, False), (0.01, True)),  # weight decay, decoupled
        (False, True),  # maximize
    )
)
# 0-d, empty, several chunks of CHUNK (with a short last one), one element, a few small ones.
SHAPES = [(), (0,), (3, 50), (1,), (7,), (2, 0, 3), (64,), (5, 13)]
CHUNK = 64


def _hyperparameters(variant, amsgrad, weight_decay, decoupled, maximize, partial=0.125):
    return dict(
        lr=0.1, b1=0.9, b2=0.999, eps=1e-8, partial=partial, weight_decay=weight_decay,
        decoupled_weight_decay=decoupled, amsgrad=amsgrad, maximize=maximize, variant=variant,
    )  # fmt: skip


# ---- the CPU build of the kernel source --------------------------------------------------------


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the CUDA source for the CPU")
    library = tmp_path_factory.mktemp("padam_cuda_host") / "padam_host.so"
    command = [
        compiler, "-O1", "-std=c++14", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math",
        "-I", str(SOURCE_DIR), "-I", str(HERE), str(HERE / "cuda_host_launch.cpp"),
        "-o", str(library),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(library))
    for kind in DTYPES:
        scalar = ctypes.c_double if kind == "float64" else ctypes.c_float
        function = getattr(lib, f"host_padam_multi_tensor_{kind}")
        function.restype = None
        function.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int] + [scalar] * 14
    for name in ("half_to_float", "float_to_half", "bfloat16_to_float", "float_to_bfloat16"):
        function = getattr(lib, f"host_{name}")
        function.restype = None
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong]
    return lib


def _host_buffer(array: np.ndarray) -> Any:
    return fused_cuda._Buffer(
        ptr=array.ctypes.data, size=array.size, shape=array.shape, dtype=str(array.dtype),
        device=0, contiguous=array.flags.c_contiguous,
    )  # fmt: skip


def _host_step(lib, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step, grid=3,
               block=4, **hyperparameters) -> None:  # fmt: skip
    """multi_tensor_step, with the kernel run on the CPU (grid x block emulated threads)."""
    amsgrad = hyperparameters["amsgrad"]
    arrays = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []]
    buffers = [[_host_buffer(a) for a in arrays_] for arrays_ in arrays]
    launches = fused_cuda._plan(*buffers[:4], buffers[4] if amsgrad else None, step,
                                chunk_size=CHUNK, **hyperparameters)  # fmt: skip
    for launch in launches:
        table = launch.table
        split = table.ctypes.data + 8 * 6 * launch.n_tensors
        getattr(lib, f"host_padam_multi_tensor_{launch.kind}")(
            grid, block, table.ctypes.data, split, launch.n_chunks, launch.chunk_size,
            launch.config, *(float(s) for s in launch.scalars),
        )  # fmt: skip


def _state_dtype(dtype: np.dtype) -> type:
    return np.float64 if dtype == np.float64 else np.float32


def _problem(rng, dtype, shapes, amsgrad):
    params = [np.asarray(rng.normal(size=shape)).astype(dtype) for shape in shapes]
    state = [[np.zeros(shape, _state_dtype(np.dtype(dtype))) for shape in shapes]
             for _ in range(3 if amsgrad else 2)]  # fmt: skip
    return params, state


def _run_both(lib, dtype, shapes, hyperparameters, steps=4, seed=0, grid=3, block=4):
    """(fused, pure) final [params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs] after ``steps``."""
    rng = np.random.default_rng(seed)
    amsgrad = hyperparameters["amsgrad"]
    params, state = _problem(rng, dtype, shapes, amsgrad)
    fused = [[a.copy() for a in params], *[[a.copy() for a in s] for s in state]]
    pure = [[a.copy() for a in params], *[[a.copy() for a in s] for s in state]]
    if not amsgrad:
        fused.append([])
        pure.append([None] * len(shapes))
    for t in range(1, steps + 1):
        # A large first gradient separates the variants' placements of the bias corrections.
        grads = [np.asarray(rng.normal(size=shape) * (10.0 if t == 1 else 1.0)).astype(dtype)
                 for shape in shapes]  # fmt: skip
        _host_step(lib, fused[0], grads, fused[1], fused[2], fused[3], t, grid=grid, block=block,
                   **hyperparameters)  # fmt: skip
        for k in range(len(shapes)):
            result = _pure_step(pure[0][k], grads[k], pure[1][k], pure[2][k],
                                           pure[3][k], t, **hyperparameters)  # fmt: skip
            for which in range(4):
                pure[which][k] = result[which]
    return fused, pure


def _assert_same_bits(fused, pure) -> None:
    for which, (ours, theirs) in enumerate(zip(fused, pure, strict=True)):
        for k, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            if b is None:
                continue
            assert a.dtype == b.dtype and a.shape == b.shape, (which, k)
            np.testing.assert_array_equal(a.reshape(-1).view(np.uint8),
                                          np.asarray(b).reshape(-1).view(np.uint8),
                                          err_msg=f"array {which} of tensor {k}")  # fmt: skip


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_every_variant_and_flag_gives_the_pure_kernels_bits(host_kernel, dtype_name):
    for combination in COMBINATIONS:
        hyperparameters = _hyperparameters(*combination[:2], *combination[2], combination[3])
        fused, pure = _run_both(host_kernel, _dtype(dtype_name), SHAPES, hyperparameters)
        _assert_same_bits(fused, pure)


@pytest.mark.parametrize("partial", [0.0, 0.0625, 0.25, 0.5, 0.3])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_every_power_matches_the_pure_kernel(host_kernel, dtype_name, partial):
    for variant, amsgrad in itertools.product(padam_core.VARIANTS, (True, False)):
        hyperparameters = _hyperparameters(variant, amsgrad, 0.01, False, False, partial)
        fused, pure = _run_both(host_kernel, _dtype(dtype_name), SHAPES, hyperparameters)
        if partial != 0.3:  # square-root chains and exactly 1: the same operations, same bits
            _assert_same_bits(fused, pure)
            continue
        # exp2(2p log2 x) (kernel) against NumPy's pow (pure): a few ulps of the compute dtype.
        tolerance = 1e-14 if dtype_name == "float64" else 1e-6
        for ours, theirs in zip(fused, pure, strict=True):
            for a, b in zip(ours, theirs, strict=False):
                if b is None or a.size == 0:
                    continue
                a, b = a.astype(np.float64), np.asarray(b).astype(np.float64)
                if dtype_name in ("float16", "bfloat16") and a is not None:
                    scale = np.max(np.abs(b)) * (2.0**-8 if dtype_name == "bfloat16" else 2.0**-11)
                    assert np.max(np.abs(a - b)) <= scale  # at most one rounding step apart
                else:
                    assert np.max(np.abs(a - b)) <= tolerance * np.max(np.abs(b))


@needs_bfloat16
def test_many_small_tensors_in_one_launch(host_kernel):
    rng = np.random.default_rng(1)
    shapes = [(int(n),) for n in rng.integers(0, 100, size=300)]
    for dtype_name in ("float32", "bfloat16"):
        hyperparameters = _hyperparameters("torch", True, 0.01, True, False)
        fused, pure = _run_both(host_kernel, _dtype(dtype_name), shapes, hyperparameters,
                                steps=2, grid=7, block=5)  # fmt: skip
        _assert_same_bits(fused, pure)


def test_grid_and_block_sizes_do_not_change_the_result(host_kernel):
    hyperparameters = _hyperparameters("reference", True, 0.0, False, False)
    results = [
        _run_both(host_kernel, np.float32, SHAPES, hyperparameters, grid=grid, block=block)[0]
        for grid, block in [(1, 1), (2, 3), (50, 64)]
    ]
    for other in results[1:]:
        _assert_same_bits(other, results[0])


@needs_bfloat16
def test_bfloat16_carried_as_16_bit_integers_is_bfloat16(host_kernel):
    rng = np.random.default_rng(3)
    hyperparameters = _hyperparameters("optax", True, 0.01, False, True)
    theta = rng.normal(size=50).astype(BFLOAT16)
    grad = rng.normal(size=50).astype(BFLOAT16)
    state = [np.zeros(50, np.float32) for _ in range(3)]
    expected = _pure_step(theta, grad, *state, 1, **hyperparameters)
    for carrier in (np.int16, np.uint16):
        ours = [theta.copy().view(carrier), *[s.copy() for s in state]]
        _host_step(host_kernel, [ours[0]], [grad.view(carrier)], [ours[1]], [ours[2]],
                   [ours[3]], 1, **hyperparameters)  # fmt: skip
        _assert_same_bits([[ours[0].view(BFLOAT16)], *[[a] for a in ours[1:]]],
                          [[expected[0]], *[[a] for a in expected[1:]]])  # fmt: skip


def test_mixed_parameter_dtypes_take_one_launch_each(host_kernel):
    params = [np.ones(3, np.float32), np.ones(2, np.float16), np.ones(4, np.float32)]
    buffers = [_host_buffer(p) for p in params]
    state = [_host_buffer(np.zeros(p.shape, np.float32)) for p in params]
    launches = fused_cuda._plan(buffers, buffers, state, state, state, 1,
                                **_hyperparameters("reference", True, 0.0, False, False))
    assert [(launch.kind, launch.n_tensors) for launch in launches] == [("float32", 2),
                                                                      ("float16", 1)]


# ---- saturation (COMMON decision 3) ------------------------------------------------------------


def _saturating_reference(theta, g, m, v, v_hat, t, *, lr, b1, b2, eps, weight_decay, variant,
                          amsgrad, maximize, decoupled_weight_decay):  # fmt: skip
    """padam_step's operations with decision 3's clips, for p = 1/8 (two more square roots)."""
    big = np.finfo(theta.dtype).max
    bc1 = padam_core.bias_correction(b1, t, xp=np, dtype=None)
    bc2 = padam_core.bias_correction(b2, t, xp=np, dtype=None)
    if maximize:
        g = -g
    if decoupled_weight_decay:
        theta = theta * (1.0 - lr * weight_decay)
    else:
        g = g + weight_decay * theta
    g = np.clip(g, -big, big)
    m = b1 * m + (1.0 - b1) * g
    with np.errstate(over="ignore"):
        v = np.minimum(b2 * v + (1.0 - b2) * (g * g), big)
    second = np.minimum(v / bc2, big) if variant == "optax" else v
    v_hat = np.maximum(v_hat, second) if amsgrad else second

    def power(root):
        return np.sqrt(np.sqrt(root))

    if variant == "reference":
        theta = theta - (lr * math.sqrt(bc2) / bc1) * m / power(np.sqrt(v_hat) + eps)
    elif variant == "torch":
        theta = theta - (lr / bc1) * m / (power(np.sqrt(v_hat) / math.sqrt(bc2)) + eps)
    else:
        theta = theta - lr * (m / bc1) / (power(np.sqrt(v_hat)) + eps)
    return theta, m, v, v_hat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflowing_gradients_saturate_to_finite_state(host_kernel, dtype):
    big = np.finfo(dtype).max
    for variant, amsgrad, (weight_decay, decoupled), maximize in COMBINATIONS:
        hyperparameters = _hyperparameters(variant, amsgrad, weight_decay, decoupled, maximize)
        # g * g overflows (all but the last two); coupled L2 decay overflows g itself ([2], [3]);
        # maximize flips the sign of each.
        theta = np.array([1.0, -2.0, big / 1.2, -big / 1.2, 0.5, 3.0], dtype)
        grads = np.array([big, -big, big, -big, np.sqrt(big) * 4, 0.0], dtype)
        state = [np.zeros_like(theta) for _ in range(3)]
        expected = [theta.copy(), *[s.copy() for s in state]]
        ours = [theta.copy(), *[s.copy() for s in state]]
        for t in (1, 2):
            _host_step(host_kernel, [ours[0]], [grads], [ours[1]], [ours[2]],
                       [ours[3]] if amsgrad else [], t, **hyperparameters)  # fmt: skip
            options = {k: v for k, v in hyperparameters.items() if k != "partial"}
            with np.errstate(over="ignore", invalid="ignore"):
                expected = list(_saturating_reference(expected[0], grads, *expected[1:], t,
                                                      **options))  # fmt: skip
            if not amsgrad:
                expected[3] = np.zeros_like(theta)
        for which in range(4 if amsgrad else 3):
            assert np.all(np.isfinite(ours[which])), (variant, amsgrad, which, ours[which])
            np.testing.assert_array_equal(ours[which], expected[which])
        # Once padam_step saturates too (the validation branch), the kernel gives its bits.
        pure = [theta.copy(), *[s.copy() for s in state]]
        with np.errstate(over="ignore", invalid="ignore"):
            for t in (1, 2):
                pure = list(_pure_step(pure[0], grads, *pure[1:3],
                                                  pure[3] if amsgrad else None, t,
                                                  **hyperparameters))  # fmt: skip
        if all(np.all(np.isfinite(a)) for a in pure if a is not None):
            for which in range(4 if amsgrad else 3):
                np.testing.assert_array_equal(ours[which], pure[which])


# ---- the 16-bit conversions, exhaustively ------------------------------------------------------


def _convert(lib, name, source, result_dtype):
    source = np.ascontiguousarray(source)
    result = np.empty(source.shape, result_dtype)
    getattr(lib, name)(source.ctypes.data, result.ctypes.data, source.size)
    return result


def midpoints(values: np.ndarray) -> np.ndarray:
    wide = values.astype(np.float64)
    return ((wide[1:] + wide[:-1]) / 2).astype(np.float32)


@needs_bfloat16
def test_16_bit_conversions_round_to_nearest_even_like_numpy(host_kernel):
    every_16_bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    for name, dtype in [("half", np.float16), ("bfloat16", BFLOAT16)]:
        widened = _convert(host_kernel, f"host_{name}_to_float", every_16_bits, np.float32)
        expected = every_16_bits.view(dtype).astype(np.float32)
        np.testing.assert_array_equal(widened.view(np.uint32), expected.view(np.uint32))
    rng = np.random.default_rng(2)
    # Random float32 bit patterns, every half/bfloat16 value, and the midpoints between them.
    samples = [rng.integers(0, 2**32, size=400_000, dtype=np.uint64).astype(np.uint32)]
    for dtype in (np.float16, BFLOAT16):
        values = every_16_bits.view(dtype).astype(np.float32)
        finite = np.sort(values[np.isfinite(values)])
        samples += [values.view(np.uint32), midpoints(finite).view(np.uint32)]
    bits = np.concatenate(samples)  # midpoints (ties) are exact in float32
    floats = bits.view(np.float32)
    for name, dtype in [("half", np.float16), ("bfloat16", BFLOAT16)]:
        narrowed = _convert(host_kernel, f"host_float_to_{name}", floats, np.uint16)
        with np.errstate(over="ignore", invalid="ignore"):
            expected = floats.astype(dtype).view(np.uint16)
        nan = np.isnan(floats)
        np.testing.assert_array_equal(narrowed[~nan], expected[~nan])
        assert np.all(np.isnan(narrowed[nan].view(dtype)))


def test_cuda_source_compiles_for_the_gpu(tmp_path):
    """Where nvcc is installed (no GPU needed): the source is valid CUDA, four kernels in PTX."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    ptx = tmp_path / "padam.ptx"
    subprocess.run([nvcc, *fused_cuda.NVRTC_OPTIONS, "-arch=sm_80", "-x", "cu", "-ptx",
                    str(SOURCE_DIR / "padam_multi_tensor.cu"), "-o", str(ptx)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    entries = [line.split()[-1].rstrip("(") for line in ptx.read_text().splitlines()
               if line.startswith(".visible .entry")]  # fmt: skip
    assert sorted(entries) == sorted(f"padam_multi_tensor_{kind}" for kind in DTYPES)


# ---- multi_tensor_step end to end, CuPy replaced by the CPU build -----------------------------


class _HostArray:
    """A NumPy array seen through ``__cuda_array_interface__``, as a device array would be."""

    def __init__(self, array: np.ndarray, typestr: str | None = None) -> None:
        self.array = array
        self.__cuda_array_interface__ = {
            "shape": array.shape, "typestr": typestr or array.dtype.str, "strides": None,
            "data": (array.ctypes.data, False), "version": 3,
        }  # fmt: skip


class _TorchLike:
    """A NumPy array seen as torch's fast path reads a CUDA tensor (data_ptr, get_device...)."""

    def __init__(self, array: np.ndarray, dtype: str) -> None:
        self.array, self.shape, self.dtype = array, array.shape, f"torch.{dtype}"

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    def numel(self) -> int:
        return self.array.size

    def get_device(self) -> int:
        return 0

    def is_contiguous(self) -> bool:
        return self.array.flags.c_contiguous


class _FakeCupy:
    """The few CuPy names multi_tensor_step uses, with kernels run by the CPU build."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        import contextlib
        import types

        self.launches: list[tuple[str, int, int]] = []
        fake = self

        class Stream:
            null: Stream
            ptr = 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class ExternalStream(Stream):
            def __init__(self, ptr):
                self.ptr = ptr

        Stream.null = Stream()

        class RawModule:
            def __init__(self, code, options):
                assert "padam_multi_tensor_float32" in code and "--fmad=false" in options

            def get_function(self, name):
                def launch(grid, block, args):
                    fake.launches.append((name, grid[0], block[0]))
                    values = [a.ctypes.data if isinstance(a, np.ndarray) else a.item()
                              for a in args]  # fmt: skip
                    # A smaller block than the GPU's: every thread is emulated one by one.
                    getattr(lib, f"host_{name}")(grid[0], 8, *values)

                return launch

        self.RawModule = RawModule
        self.asarray = np.array  # a copy, as an upload is
        self.cuda = types.SimpleNamespace(
            Stream=Stream, ExternalStream=ExternalStream,
            Device=lambda device: contextlib.nullcontext(),
            get_current_stream=lambda: Stream.null,
            runtime=types.SimpleNamespace(
                getDeviceCount=lambda: 1,
                pointerGetAttributes=lambda ptr: types.SimpleNamespace(device=0),
            ),
        )  # fmt: skip


@pytest.fixture
def fake_cupy(host_kernel, monkeypatch):
    fake = _FakeCupy(host_kernel)
    monkeypatch.setattr(fused_cuda, "_cupy", lambda: fake)
    for cached in (fused_cuda.available, fused_cuda._module, fused_cuda._kernel):
        cached.cache_clear()
    fused_cuda._TABLES.clear()
    yield fake
    for cached in (fused_cuda.available, fused_cuda._module, fused_cuda._kernel):
        cached.cache_clear()
    fused_cuda._TABLES.clear()


@needs_bfloat16
def test_multi_tensor_step_launches_one_kernel_per_dtype(fake_cupy):
    rng = np.random.default_rng(4)
    shapes = [(3, 7), (), (0,), (70_000,)]  # the last one spans two CHUNK_SIZE chunks
    for variant, amsgrad in itertools.product(padam_core.VARIANTS, (True, False)):
        hyperparameters = _hyperparameters(variant, amsgrad, 0.01, False, True)
        for dtype in (np.float32, BFLOAT16):
            params, state = _problem(rng, dtype, shapes, amsgrad)
            pure = [[a.copy() for a in params], *[[a.copy() for a in s] for s in state]]
            if dtype == BFLOAT16:  # bfloat16 bits as int16, through __cuda_array_interface__

                def wrap(a):
                    return _HostArray(a, "<i2" if a.dtype == BFLOAT16 else None)

            else:  # as torch tensors are read

                def wrap(a):
                    return _TorchLike(a, str(a.dtype))

            device = [[wrap(a) for a in params], *[[wrap(a) for a in s] for s in state]]
            for t in (1, 2):  # the second step reuses the uploaded table
                grads = [np.asarray(rng.normal(size=shape)).astype(dtype) for shape in shapes]
                fused_cuda.multi_tensor_step(
                    device[0], [wrap(g) for g in grads], device[1], device[2],
                    device[3] if amsgrad else None, t, stream=0, **hyperparameters,
                )  # fmt: skip
                for k in range(len(shapes)):
                    result = _pure_step(
                        pure[0][k], grads[k], pure[1][k], pure[2][k],
                        pure[3][k] if amsgrad else None, t, **hyperparameters,
                    )  # fmt: skip
                    for which in range(4 if amsgrad else 3):
                        pure[which][k] = result[which]
            _assert_same_bits([params, *state], pure[: len(state) + 1])
    assert len(fused_cuda._TABLES) > 0
    name, grid, block = fake_cupy.launches[-1]
    assert (name, grid, block) == ("padam_multi_tensor_bfloat16", 4, fused_cuda.BLOCK_SIZE)


def test_multi_tensor_step_takes_streams_and_refuses_other_objects(fake_cupy):
    arrays = [_HostArray(np.ones(3, np.float32)) for _ in range(5)]
    hyperparameters = _hyperparameters("reference", True, 0.0, False, False)
    for stream in (None, 0, 12345, types_namespace(cuda_stream=678)):
        fused_cuda.multi_tensor_step(*[[a] for a in arrays], 1, stream=stream, **hyperparameters)
    for stream in ("default", 1.5):
        with pytest.raises(TypeError, match="stream must be"):
            fused_cuda.multi_tensor_step(*[[a] for a in arrays], 1, stream=stream,
                                         **hyperparameters)  # fmt: skip


def types_namespace(**attributes: Any) -> Any:
    import types

    return types.SimpleNamespace(**attributes)


def _load_nvrtc() -> ctypes.CDLL | None:
    """NVRTC (what CuPy compiles with): $PADAM_NVRTC_LIBRARY, the system's, or a pip wheel's."""
    import glob
    import os
    import site

    candidates = [os.environ.get("PADAM_NVRTC_LIBRARY", "")]
    candidates += ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    for root in [*site.getsitepackages(), site.getusersitepackages()]:
        candidates += sorted(glob.glob(f"{root}/nvidia/cu*/lib/libnvrtc.so*"))
        candidates += sorted(glob.glob(f"{root}/nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
    for candidate in candidates:
        if candidate and "builtins" not in candidate:
            try:
                return ctypes.CDLL(candidate)
            except OSError:
                continue
    return None


def test_cuda_source_compiles_with_nvrtc():
    """Where NVRTC is installed (no GPU needed): it compiles the source with our options."""
    nvrtc = _load_nvrtc()
    if nvrtc is None:
        pytest.skip("NVRTC is not installed (PADAM_NVRTC_LIBRARY names a libnvrtc.so)")
    program = ctypes.c_void_p()
    source = fused_cuda.kernel_source().encode()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"padam_multi_tensor.cu",
                                    0, None, None) == 0  # fmt: skip
    options = [o.encode() for o in (*fused_cuda.NVRTC_OPTIONS, "-arch=compute_80")]
    result = nvrtc.nvrtcCompileProgram(program, len(options),
                                       (ctypes.c_char_p * len(options))(*options))  # fmt: skip
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    assert result == 0, log.value.decode()
    nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(program, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    for kind in DTYPES:
        assert f".entry padam_multi_tensor_{kind}(" in ptx.value.decode()
    assert "warning" not in log.value.decode().lower(), log.value.decode()


# ---- checks before launching (no GPU needed) -------------------------------------------------


def _buffers(dtype=np.float32, state_dtype=np.float32, shape=(4,), n=2):
    params = [_host_buffer(np.ones(shape, dtype)) for _ in range(n)]
    state = [_host_buffer(np.zeros(shape, state_dtype)) for _ in range(n)]
    return params, state


def test_plan_rejects_bad_arrays_before_launching():
    hyperparameters = _hyperparameters("reference", True, 0.0, False, False)
    params, state = _buffers()
    with pytest.raises(TypeError, match=r"exp_avgs\[0\] has dtype float16"):
        fused_cuda._plan(params, params, _buffers(np.float16)[0], state, state, 1,
                         **hyperparameters)  # fmt: skip
    with pytest.raises(TypeError, match=r"exp_avgs\[0\] has dtype float16, expected float32"):
        half, _ = _buffers(np.float16)
        fused_cuda._plan(half, half, half, state, state, 1, **hyperparameters)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(5,\)"):
        fused_cuda._plan(params, _buffers(shape=(5,))[0], state, state, state, 1,
                         **hyperparameters)  # fmt: skip
    with pytest.raises(ValueError, match="grads has 1 arrays for 2 params"):
        fused_cuda._plan(params, params[:1], state, state, state, 1, **hyperparameters)
    with pytest.raises(TypeError, match=r"params\[0\] has dtype int32"):
        ints = _buffers(np.int32)[0]
        fused_cuda._plan(ints, ints, state, state, state, 1, **hyperparameters)
    strided = _host_buffer(np.ones((4, 2), np.float32)[:, 0])
    with pytest.raises(ValueError, match=r"params\[0\] is not contiguous"):
        fused_cuda._plan([strided], [strided], [strided], [strided], [strided], 1,
                         **hyperparameters)  # fmt: skip
    on_cpu = fused_cuda._Buffer(1, 4, (4,), "float32", None, True)
    with pytest.raises(TypeError, match="not on a CUDA device"):
        fused_cuda._plan([on_cpu], [on_cpu], [on_cpu], [on_cpu], [on_cpu], 1, **hyperparameters)
    other = fused_cuda._Buffer(1, 4, (4,), "float32", 1, True)
    with pytest.raises(ValueError, match="one CUDA device"):
        fused_cuda._plan(params[:1], [other], state[:1], state[:1], state[:1], 1,
                         **hyperparameters)  # fmt: skip
    with pytest.raises(ValueError, match="max_exp_avg_sqs"):
        fused_cuda._plan(params, params, state, state, None, 1, **hyperparameters)
    with pytest.raises(ValueError, match="Invalid variant"):
        fused_cuda._plan(params, params, state, state, state, 1,
                         **{**hyperparameters, "variant": "adam"})  # fmt: skip
    for step in (0, 1.0, True):
        with pytest.raises(ValueError, match="Invalid step"):
            fused_cuda._plan(params, params, state, state, state, step, **hyperparameters)


def test_rejects_host_arrays_and_imports_without_cupy():
    array = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="CuPy arrays, torch CUDA tensors"):
        fused_cuda.multi_tensor_step([array], [array], [array], [array], [array], 1,
                                     **_hyperparameters("reference", True, 0.0, False, False))
    assert isinstance(fused_cuda.available(), bool)
    assert "padam_multi_tensor_bfloat16" in fused_cuda.kernel_source()


class _TorchLikeCpuTensor:
    """What _buffer reads of a torch tensor (importing torch here would cost seconds)."""

    dtype = "torch.float32"
    shape = (3,)
    device: Any = None

    def data_ptr(self) -> int:
        return 1234

    def numel(self) -> int:
        return 3

    def is_contiguous(self) -> bool:
        return True


class _TorchLikeCpuTensorFast(_TorchLikeCpuTensor):
    def get_device(self) -> int:  # torch's answer for a CPU tensor
        return -1


def test_torch_cpu_tensors_are_refused():
    for tensor in (_TorchLikeCpuTensorFast(),):  # the one-comprehension path
        with pytest.raises(TypeError, match="not on a CUDA device"):
            fused_cuda.multi_tensor_step([tensor], [tensor], [tensor], [tensor], [tensor], 1,
                                         **_hyperparameters("reference", True, 0.0, False,
                                                            False))  # fmt: skip
    tensor = _TorchLikeCpuTensor()
    tensor.device = types_namespace(type="cpu", index=None)
    with pytest.raises(TypeError, match="not on a CUDA device"):
        fused_cuda.multi_tensor_step([tensor], [tensor], [tensor], [tensor], [tensor], 1,
                                     **_hyperparameters("reference", True, 0.0, False, False))


# ---- on a GPU ----------------------------------------------------------------------------------

gpu = pytest.mark.skipif(not fused_cuda.available(), reason="CuPy sees no CUDA device")


@gpu
@pytest.mark.parametrize("dtype_name", ["float64", "float32", "float16"])
def test_gpu_kernel_gives_the_pure_kernels_results_on_cupy_arrays(dtype_name):
    import cupy

    dtype = _dtype(dtype_name)
    for partial in (0.125, 0.0, 0.3):
        for variant, amsgrad, (weight_decay, decoupled), maximize in COMBINATIONS:
            hyperparameters = _hyperparameters(variant, amsgrad, weight_decay, decoupled,
                                               maximize, partial)  # fmt: skip
            rng = np.random.default_rng(0)
            params, state = _problem(rng, dtype, SHAPES, amsgrad)
            pure = [[a.copy() for a in params], *[[a.copy() for a in s] for s in state]]
            ours = [[cupy.asarray(a) for a in arrays] for arrays in pure]
            if not amsgrad:
                pure.append([None] * len(SHAPES))
                ours.append(None)
            for t in range(1, 4):
                grads = [np.asarray(rng.normal(size=s) * (10.0 if t == 1 else 1.0)).astype(dtype)
                         for s in SHAPES]  # fmt: skip
                fused_cuda.multi_tensor_step(ours[0], [cupy.asarray(g) for g in grads],
                                             *ours[1:], t, **hyperparameters)  # fmt: skip
                for k in range(len(SHAPES)):
                    result = _pure_step(pure[0][k], grads[k], pure[1][k],
                                                   pure[2][k], pure[3][k], t, **hyperparameters)
                    for which in range(4):
                        pure[which][k] = result[which]
            for which in range(4 if amsgrad else 3):
                for a, b in zip(ours[which], pure[which], strict=True):
                    a = cupy.asnumpy(a).astype(np.float64)
                    b = np.asarray(b).astype(np.float64)
                    if partial != 0.3:
                        np.testing.assert_array_equal(a, b)  # --fmad=false: the same bits
                    elif a.size:
                        tolerance = {"float64": 1e-14, "float32": 1e-6, "float16": 2.0**-10}
                        scale = max(np.max(np.abs(b)), 1e-30)
                        assert np.max(np.abs(a - b)) <= tolerance[dtype_name] * scale


@gpu
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_gpu_kernel_on_torch_tensors_zero_copy_on_torchs_stream(dtype_name):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    dtype = getattr(torch, dtype_name)
    hyperparameters = _hyperparameters("torch", True, 0.01, False, False)
    torch.manual_seed(0)
    shapes = [(1000, 37), (), (0,), (5,)]
    params = [torch.randn(s, device="cuda", dtype=dtype, requires_grad=True) for s in shapes]
    state = [[torch.zeros(s, device="cuda") for s in shapes] for _ in range(3)]
    expected = [[p.detach().cpu().float().numpy() for p in params],
                *[[s.cpu().numpy() for s in states] for states in state]]  # fmt: skip
    addresses = [p.data_ptr() for p in params]
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())  # the inputs were made on the default
    with torch.cuda.stream(side_stream), torch.no_grad():
        for t in (1, 2):
            grads = [torch.randn(s, device="cuda", dtype=dtype) * 3 for s in shapes]
            grads_host = [g.cpu().float().numpy().astype(_dtype(dtype_name)) for g in grads]
            fused_cuda.multi_tensor_step(params, grads, *state, t, **hyperparameters,
                                         stream=torch.cuda.current_stream().cuda_stream)
            for k in range(len(shapes)):
                result = _pure_step(
                    expected[0][k].astype(_dtype(dtype_name)), grads_host[k], expected[1][k],
                    expected[2][k], expected[3][k], t, **hyperparameters,
                )  # fmt: skip
                expected[0][k] = np.asarray(result[0]).astype(np.float32)
                for which in (1, 2, 3):
                    expected[which][k] = result[which]
    side_stream.synchronize()
    assert [p.data_ptr() for p in params] == addresses  # updated where they lie
    for k in range(len(shapes)):
        np.testing.assert_array_equal(params[k].detach().cpu().float().numpy(), expected[0][k])
        for which in (1, 2, 3):
            np.testing.assert_array_equal(state[which - 1][k].cpu().numpy(), expected[which][k])

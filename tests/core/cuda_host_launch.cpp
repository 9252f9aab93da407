// The CPU build of padam_core/cuda/padam_multi_tensor.cu for tests/core/test_fused_cuda.py:
// one C entry point per kernel, taking the grid and block sizes first, then the kernel's own
// arguments. Build: g++ -shared -fPIC -ffp-contract=off -I padam_core/cuda (see the test).
#include "cuda_host_shim.h"
#include "padam_multi_tensor.cu"

#define PADAM_HOST_ENTRY(NAME, C)                                                             \
    extern "C" void host_##NAME(unsigned int grid, unsigned int block,                       \
                                const long long* tensors, const long long* chunks,           \
                                long long n_chunks, long long chunk_size, int config, C b1,  \
                                C one_minus_b1, C b2, C one_minus_b2, C eps, C weight_decay, \
                                C decay_factor, C step_size, C bc1, C bc2, C sqrt_bc2, C lr, \
                                C two_partial, C one_plus_eps) {                             \
        PADAM_HOST_LAUNCH(grid, block,                                                       \
                          NAME(tensors, chunks, n_chunks, chunk_size, config, b1,            \
                               one_minus_b1, b2, one_minus_b2, eps, weight_decay,            \
                               decay_factor, step_size, bc1, bc2, sqrt_bc2, lr, two_partial, \
                               one_plus_eps));                                               \
    }

PADAM_HOST_ENTRY(padam_multi_tensor_float32, float)
PADAM_HOST_ENTRY(padam_multi_tensor_float64, double)
PADAM_HOST_ENTRY(padam_multi_tensor_float16, float)
PADAM_HOST_ENTRY(padam_multi_tensor_bfloat16, float)

// The kernel's own 16-bit conversions, elementwise over arrays (tested exhaustively).
#define PADAM_HOST_CONVERSION(NAME, FROM, TO)                                      \
    extern "C" void host_##NAME(const FROM* source, TO* result, long long n) {    \
        for (long long i = 0; i < n; ++i) result[i] = padam_##NAME(source[i]);    \
    }

PADAM_HOST_CONVERSION(half_to_float, unsigned short, float)
PADAM_HOST_CONVERSION(float_to_half, float, unsigned short)
PADAM_HOST_CONVERSION(bfloat16_to_float, unsigned short, float)
PADAM_HOST_CONVERSION(float_to_bfloat16, float, unsigned short)

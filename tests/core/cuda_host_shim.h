// Runs padam_core/cuda/padam_multi_tensor.cu on the CPU: the CUDA built-ins it uses, emulated.
// A "launch" (PADAM_HOST_LAUNCH) calls the kernel once per (block, thread), one after the other;
// the kernel has no shared memory or barriers, so this order gives the same result as a GPU.
#ifndef PADAM_CUDA_HOST_SHIM_H
#define PADAM_CUDA_HOST_SHIM_H

#include <math.h>
#include <string.h>

#define PADAM_HOST_EMULATION 1
#define PADAM_DEVICE inline
#define PADAM_KERNEL static

static inline unsigned int padam_host_float_as_uint(float x) {
    unsigned int u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float padam_host_uint_as_float(unsigned int u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
#define PADAM_FLOAT_AS_UINT(x) padam_host_float_as_uint(x)
#define PADAM_UINT_AS_FLOAT(x) padam_host_uint_as_float(x)
#define PADAM_SQRTF(x) sqrtf(x)
#define PADAM_SQRT(x) sqrt(x)
#define PADAM_EXP2F(x) exp2f(x)
#define PADAM_EXP2(x) exp2(x)
#define PADAM_LOG2F(x) log2f(x)
#define PADAM_LOG2(x) log2(x)
#define PADAM_UNROLL

struct padam_host_dim3 {
    unsigned int x, y, z;
};
static padam_host_dim3 blockIdx, threadIdx, blockDim, gridDim;

// Every (block, thread) of a one-dimensional grid, in turn.
#define PADAM_HOST_LAUNCH(grid, block, call)                                \
    do {                                                                    \
        gridDim.x = (grid); gridDim.y = gridDim.z = 1;                      \
        blockDim.x = (block); blockDim.y = blockDim.z = 1;                  \
        for (unsigned int b_ = 0; b_ < gridDim.x; ++b_) {                   \
            for (unsigned int t_ = 0; t_ < blockDim.x; ++t_) {              \
                blockIdx.x = b_; threadIdx.x = t_;                          \
                call;                                                       \
            }                                                               \
        }                                                                   \
    } while (0)

#endif

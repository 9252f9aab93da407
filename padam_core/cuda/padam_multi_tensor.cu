// Fused multi-tensor Padam step (apex multi_tensor_apply style), compiled at run time by CuPy
// (NVRTC) and, in the tests, by the system C++ compiler for the CPU (tests/core/cuda_host_shim.h).
//
// One launch updates every tensor of one parameter dtype. The host builds one int64 table:
//   tensors[6 * k + 0..5] = param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq pointers, size
//   chunks[2 * c + 0..1]  = tensor index, first element of the chunk
// Each block takes chunks (grid-stride over chunks), its threads stride over the chunk's
// elements. No shared memory, no synchronisation: each element is independent.
//
// Arithmetic: the operations of padam_core.kernel.padam_step, in the same order, in the compute
// dtype C (double for float64 params, float for float32/float16/bfloat16); scalars are computed on
// the host in double and rounded once to C, as NumPy rounds Python floats. Compile with FMA
// contraction off (NVRTC --fmad=false, g++ -ffp-contract=off): a fused a*b+c rounds once where
// NumPy rounds twice. 16-bit parameters are converted with integer code below (round to nearest
// even), the same code on the GPU and in the CPU test.
//
// Portable C++: everything CUDA-specific is behind the PADAM_* macros, which the CPU shim defines
// before including this file.

#ifndef PADAM_HOST_EMULATION
#define PADAM_DEVICE __device__ __forceinline__
#define PADAM_KERNEL extern "C" __global__
#define PADAM_FLOAT_AS_UINT(x) __float_as_uint(x)
#define PADAM_UINT_AS_FLOAT(x) __uint_as_float(x)
#define PADAM_SQRTF(x) sqrtf(x)
#define PADAM_SQRT(x) sqrt(x)
#define PADAM_EXP2F(x) exp2f(x)
#define PADAM_EXP2(x) exp2(x)
#define PADAM_LOG2F(x) log2f(x)
#define PADAM_LOG2(x) log2(x)
#define PADAM_UNROLL _Pragma("unroll")
#endif

#ifndef PADAM_ILP
#define PADAM_ILP 4  // elements per thread and pass
#endif

// config bits (padam_core.fused_cuda builds them)
#define PADAM_VARIANT_MASK 3  // 0 reference, 1 torch, 2 optax
#define PADAM_AMSGRAD 4
#define PADAM_MAXIMIZE 8
#define PADAM_COUPLED_L2 16
#define PADAM_DECOUPLED 32
#define PADAM_POWER_SHIFT 8   // (config >> 8) & 7: 0..3 extra square roots, 4 exactly 1, 5 general

// ---- 16-bit conversions (bit-exact round to nearest even, as NumPy and ml_dtypes) ----------

PADAM_DEVICE float padam_half_to_float(unsigned short h) {
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int exponent = ((unsigned int)h >> 10) & 0x1fu;
    unsigned int mantissa = (unsigned int)h & 0x3ffu;
    if (exponent == 0u) {  // zero or subnormal: mantissa * 2^-24, exact in float
        float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return PADAM_UINT_AS_FLOAT(PADAM_FLOAT_AS_UINT(magnitude) | sign);
    }
    if (exponent == 31u) return PADAM_UINT_AS_FLOAT(sign | 0x7f800000u | (mantissa << 13));
    return PADAM_UINT_AS_FLOAT(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

PADAM_DEVICE unsigned short padam_float_to_half(float f) {
    unsigned int x = PADAM_FLOAT_AS_UINT(f);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)  // NaN: quiet, keep the top payload bits
        return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520: inf
    if (ax < 0x38800000u) {  // below 2^-14: a subnormal half or zero
        if (ax <= 0x33000000u) return (unsigned short)sign;  // <= 2^-25 ties to even zero
        unsigned int exponent = ax >> 23;  // 102..112
        unsigned int mantissa = (ax & 0x7fffffu) | 0x800000u;
        unsigned int shift = 126u - exponent;  // 14..24
        unsigned int count = mantissa >> shift;
        unsigned int rest = mantissa & ((1u << shift) - 1u);
        unsigned int halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (count & 1u))) count += 1u;
        return (unsigned short)(sign | count);
    }
    unsigned int h = (ax - 0x38000000u) >> 13;  // rebias 127 -> 15
    unsigned int rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1u;  // carries into the exponent
    return (unsigned short)(sign | h);
}

PADAM_DEVICE float padam_bfloat16_to_float(unsigned short b) {
    return PADAM_UINT_AS_FLOAT((unsigned int)b << 16);
}

PADAM_DEVICE unsigned short padam_float_to_bfloat16(float f) {
    unsigned int x = PADAM_FLOAT_AS_UINT(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x0040u);  // NaN
    x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even (overflow rounds to inf)
    return (unsigned short)(x >> 16);
}

// ---- the parameter storage kinds -------------------------------------------------------------

struct PadamFloat32 {
    typedef float storage;
    typedef float compute;
    static PADAM_DEVICE float load(float x) { return x; }
    static PADAM_DEVICE float store(float x) { return x; }
};
struct PadamFloat64 {
    typedef double storage;
    typedef double compute;
    static PADAM_DEVICE double load(double x) { return x; }
    static PADAM_DEVICE double store(double x) { return x; }
};
struct PadamFloat16 {
    typedef unsigned short storage;
    typedef float compute;
    static PADAM_DEVICE float load(unsigned short x) { return padam_half_to_float(x); }
    static PADAM_DEVICE unsigned short store(float x) { return padam_float_to_half(x); }
};
struct PadamBFloat16 {
    typedef unsigned short storage;
    typedef float compute;
    static PADAM_DEVICE float load(unsigned short x) { return padam_bfloat16_to_float(x); }
    static PADAM_DEVICE unsigned short store(float x) { return padam_float_to_bfloat16(x); }
};

// ---- per-element maths -----------------------------------------------------------------------

PADAM_DEVICE float padam_sqrt(float x) { return PADAM_SQRTF(x); }
PADAM_DEVICE double padam_sqrt(double x) { return PADAM_SQRT(x); }
PADAM_DEVICE float padam_exp2(float x) { return PADAM_EXP2F(x); }
PADAM_DEVICE double padam_exp2(double x) { return PADAM_EXP2(x); }
PADAM_DEVICE float padam_log2(float x) { return PADAM_LOG2F(x); }
PADAM_DEVICE double padam_log2(double x) { return PADAM_LOG2(x); }
PADAM_DEVICE float padam_finite_max(float) { return 3.40282346638528859812e+38f; }
PADAM_DEVICE double padam_finite_max(double) { return 1.79769313486231570815e+308; }

// root^(2 partial), root already a square root (padam_core.kernel.partial_power). Mode 0..3:
// that many more square roots; 5: exp2(2p log2 root) with 0 and inf exact. Mode 4 (exactly 1)
// is handled by the callers, which then skip the power.
template <typename C>
PADAM_DEVICE C padam_partial_power(C root, int mode, C two_partial) {
    if (mode == 5) {
        if (root == (C)0) return (C)0;
        if (root > padam_finite_max(root)) return root;  // inf
        return padam_exp2(two_partial * padam_log2(root));
    }
    if (mode >= 1) root = padam_sqrt(root);
    if (mode >= 2) root = padam_sqrt(root);
    if (mode >= 3) root = padam_sqrt(root);
    return root;
}

template <typename C>
struct PadamScalars {
    C b1, one_minus_b1, b2, one_minus_b2, eps, weight_decay, decay_factor;
    C step_size, bc1, bc2, sqrt_bc2, lr, two_partial, one_plus_eps;
};

template <typename C>
PADAM_DEVICE void padam_element(C& theta, C g, C& m, C& v, C& v_hat, int config,
                                const PadamScalars<C>& s) {
    const C finite_max = padam_finite_max(theta);
    const int variant = config & PADAM_VARIANT_MASK;
    const int mode = (config >> PADAM_POWER_SHIFT) & 7;
    if (config & PADAM_MAXIMIZE) g = -g;
    if (config & PADAM_COUPLED_L2) g = g + s.weight_decay * theta;
    if (config & PADAM_DECOUPLED) theta = theta * s.decay_factor;
    // Saturation (COMMON decision 3); comparisons let NaN through, as NumPy's clip does.
    g = g > finite_max ? finite_max : (g < -finite_max ? -finite_max : g);
    m = s.b1 * m + s.one_minus_b1 * g;
    v = s.b2 * v + s.one_minus_b2 * (g * g);
    v = v > finite_max ? finite_max : v;
    C second = v;
    if (variant == 2) {
        second = v / s.bc2;
        second = second > finite_max ? finite_max : second;
    }
    if (config & PADAM_AMSGRAD) {
        v_hat = (v_hat > second || v_hat != v_hat) ? v_hat : second;  // NumPy maximum (NaN wins)
    } else {
        v_hat = second;
    }
    if (variant == 0) {
        if (mode == 4) {
            theta = theta - s.step_size * m;  // m / 1.0 is m
        } else {
            C denominator = padam_partial_power(padam_sqrt(v_hat) + s.eps, mode, s.two_partial);
            theta = theta - s.step_size * m / denominator;
        }
    } else if (variant == 1) {
        C denominator = mode == 4 ? s.one_plus_eps
            : padam_partial_power(padam_sqrt(v_hat) / s.sqrt_bc2, mode, s.two_partial) + s.eps;
        theta = theta - s.step_size * m / denominator;
    } else {
        C denominator = mode == 4 ? s.one_plus_eps
            : padam_partial_power(padam_sqrt(v_hat), mode, s.two_partial) + s.eps;
        theta = theta - s.lr * (m / s.bc1) / denominator;
    }
}

// ---- the kernel body ---------------------------------------------------------------------------

template <typename K>
PADAM_DEVICE void padam_multi_tensor(const long long* tensors, const long long* chunks,
                                     long long n_chunks, long long chunk_size, int config,
                                     const PadamScalars<typename K::compute>& s) {
    typedef typename K::storage P;
    typedef typename K::compute C;
    const bool amsgrad = (config & PADAM_AMSGRAD) != 0;
    for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const long long* tensor = tensors + 6 * chunks[2 * c];
        P* param = (P*)tensor[0];
        const P* grad = (const P*)tensor[1];
        C* exp_avg = (C*)tensor[2];
        C* exp_avg_sq = (C*)tensor[3];
        C* max_exp_avg_sq = (C*)tensor[4];
        const long long start = chunks[2 * c + 1];
        const long long stop = start + chunk_size < tensor[5] ? start + chunk_size : tensor[5];
        // PADAM_ILP elements per thread and pass, all loaded before any is computed, so that
        // each thread has 5 * PADAM_ILP loads in flight (apex's ILP); element u of a pass is
        // blockDim.x after element u - 1, so a warp's accesses stay coalesced.
        const long long stride = (long long)blockDim.x;
        for (long long base = start + (long long)threadIdx.x; base < stop;
             base += PADAM_ILP * stride) {
            C theta[PADAM_ILP], g[PADAM_ILP], m[PADAM_ILP], v[PADAM_ILP], v_hat[PADAM_ILP];
            PADAM_UNROLL
            for (int u = 0; u < PADAM_ILP; ++u) {
                const long long i = base + u * stride;
                if (i < stop) {
                    theta[u] = K::load(param[i]);
                    g[u] = K::load(grad[i]);
                    m[u] = exp_avg[i];
                    v[u] = exp_avg_sq[i];
                    v_hat[u] = amsgrad ? max_exp_avg_sq[i] : (C)0;
                }
            }
            PADAM_UNROLL
            for (int u = 0; u < PADAM_ILP; ++u) {
                const long long i = base + u * stride;
                if (i < stop) {
                    padam_element<C>(theta[u], g[u], m[u], v[u], v_hat[u], config, s);
                    param[i] = K::store(theta[u]);
                    exp_avg[i] = m[u];
                    exp_avg_sq[i] = v[u];
                    if (amsgrad) max_exp_avg_sq[i] = v_hat[u];
                }
            }
        }
    }
}

#define PADAM_DEFINE_KERNEL(NAME, KIND)                                                         \
    PADAM_KERNEL void NAME(const long long* tensors, const long long* chunks, long long n_chunks, \
                           long long chunk_size, int config, KIND::compute b1,                    \
                           KIND::compute one_minus_b1, KIND::compute b2,                          \
                           KIND::compute one_minus_b2, KIND::compute eps,                         \
                           KIND::compute weight_decay, KIND::compute decay_factor,                \
                           KIND::compute step_size, KIND::compute bc1, KIND::compute bc2,         \
                           KIND::compute sqrt_bc2, KIND::compute lr, KIND::compute two_partial,   \
                           KIND::compute one_plus_eps) {                                          \
        PadamScalars<KIND::compute> s = {b1, one_minus_b1, b2, one_minus_b2, eps, weight_decay, \
                                         decay_factor, step_size, bc1, bc2, sqrt_bc2, lr,       \
                                         two_partial, one_plus_eps};                            \
        padam_multi_tensor<KIND>(tensors, chunks, n_chunks, chunk_size, config, s);             \
    }

PADAM_DEFINE_KERNEL(padam_multi_tensor_float32, PadamFloat32)
PADAM_DEFINE_KERNEL(padam_multi_tensor_float64, PadamFloat64)
PADAM_DEFINE_KERNEL(padam_multi_tensor_float16, PadamFloat16)
PADAM_DEFINE_KERNEL(padam_multi_tensor_bfloat16, PadamBFloat16)

// GPU kernels of the forward pass, compiled at run time with NVRTC (no CUDA headers needed).
// Activations are f32; weights are read in their stored bytes (ggml block layouts, see
// formats/quant-blocks.md and src/quant/*.rs, which these decoders mirror element for element).
// Every reduction has a fixed order (per-lane sums, then a fixed shuffle or shared-memory tree):
// no atomics, so results are deterministic run to run.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

// IEEE half to float, exact (subnormals included).
__device__ __forceinline__ float h2f(u16 h) {
    u32 s = (u32)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) { float f = (float)m * 5.9604644775390625e-8f; return s ? -f : f; }
    if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
    return __uint_as_float(s | ((e + 112) << 23) | (m << 13));
}
__device__ __forceinline__ float rd_h(const u8* p) { return h2f((u16)(p[0] | (p[1] << 8))); }
__device__ __forceinline__ u32 rd_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}
// Products that the CPU rounds before an add: __fmul_rn keeps NVRTC from fusing them.
#define MUL(a, b) __fmul_rn((a), (b))

// One element `i` of a row (`r` points at the row's first byte), one function per type.
__device__ __forceinline__ float deq_f32(const u8* r, int i) { return ((const float*)r)[i]; }
__device__ __forceinline__ float deq_f16(const u8* r, int i) { return h2f(((const u16*)r)[i]); }
__device__ __forceinline__ float deq_bf16(const u8* r, int i) {
    return __uint_as_float((u32)((const u16*)r)[i] << 16);
}
__device__ __forceinline__ float deq_q8_0(const u8* r, int i) {
    const u8* b = r + (i / 32) * 34;
    return (float)(signed char)b[2 + i % 32] * rd_h(b);
}
__device__ __forceinline__ float deq_q4_0(const u8* r, int i) {
    const u8* b = r + (i / 32) * 18; int j = i % 32;
    int x = j < 16 ? (b[2 + j] & 0xF) - 8 : (b[2 + j - 16] >> 4) - 8;
    return (float)x * rd_h(b);
}
__device__ __forceinline__ float deq_q4_1(const u8* r, int i) {
    const u8* b = r + (i / 32) * 20; int j = i % 32;
    int x = j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4);
    return MUL((float)x, rd_h(b)) + rd_h(b + 2);
}
__device__ __forceinline__ float deq_q5_0(const u8* r, int i) {
    const u8* b = r + (i / 32) * 22; int j = i % 32; u32 qh = rd_u32(b + 2);
    int x = j < 16 ? ((b[6 + j] & 0xF) | (((qh >> j) << 4) & 0x10)) - 16
                   : ((b[6 + j - 16] >> 4) | ((qh >> (j - 16 + 12)) & 0x10)) - 16;
    return (float)x * rd_h(b);
}
__device__ __forceinline__ float deq_q5_1(const u8* r, int i) {
    const u8* b = r + (i / 32) * 24; int j = i % 32; u32 qh = rd_u32(b + 4);
    int x = j < 16 ? ((b[8 + j] & 0xF) | (((qh >> j) << 4) & 0x10))
                   : ((b[8 + j - 16] >> 4) | ((qh >> (j - 16 + 12)) & 0x10));
    return MUL((float)x, rd_h(b)) + rd_h(b + 2);
}
__device__ __forceinline__ float deq_q2_k(const u8* r, int i) {
    const u8* b = r + (i / 256) * 84; int k = i % 256;
    int h = k / 128, s = (k % 128) / 32, r2 = k % 32;
    u8 sc = b[k / 16];
    float dl = MUL(rd_h(b + 80), (float)(sc & 0xF));
    float ml = MUL(rd_h(b + 82), (float)(sc >> 4));
    float v = (float)((b[16 + 32 * h + r2] >> (2 * s)) & 3);
    return MUL(dl, v) - ml;
}
__device__ __forceinline__ int q3_scale(const u8* s, int j) {
    int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}
__device__ __forceinline__ float deq_q3_k(const u8* r, int i) {
    const u8* b = r + (i / 256) * 110; int k = i % 256;
    int h = k / 128, s = (k % 128) / 32, r2 = k % 32;
    float dl = MUL(rd_h(b + 108), (float)q3_scale(b + 96, k / 16));
    int lo = (b[32 + 32 * h + r2] >> (2 * s)) & 3;
    int v = lo - ((b[r2] & (1 << (4 * h + s))) ? 0 : 4);
    return MUL(dl, (float)v);
}
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    if (j < 4) { *sc = q[j] & 63; *m = q[j + 4] & 63; }
    else { *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}
__device__ __forceinline__ float deq_q4_k(const u8* r, int i) {
    const u8* b = r + (i / 256) * 144; int k = i % 256;
    int c = k / 64, up = (k % 64) / 32, l = k % 32, sc, m;
    scale_min_k4(2 * c + up, b + 4, &sc, &m);
    u8 q = b[16 + 32 * c + l];
    int nib = up ? (q >> 4) : (q & 0xF);
    return MUL(MUL(rd_h(b), (float)sc), (float)nib) - MUL(rd_h(b + 2), (float)m);
}
__device__ __forceinline__ float deq_q5_k(const u8* r, int i) {
    const u8* b = r + (i / 256) * 176; int k = i % 256;
    int c = k / 64, up = (k % 64) / 32, l = k % 32, sc, m;
    scale_min_k4(2 * c + up, b + 4, &sc, &m);
    u8 ql = b[48 + 32 * c + l];
    int q = (up ? (ql >> 4) : (ql & 0xF)) + ((b[16 + l] & (1 << (2 * c + up))) ? 16 : 0);
    return MUL(MUL(rd_h(b), (float)sc), (float)q) - MUL(rd_h(b + 2), (float)m);
}
__device__ __forceinline__ float deq_q6_k(const u8* r, int i) {
    const u8* b = r + (i / 256) * 210; int k = i % 256;
    int h = k / 128, quarter = (k % 128) / 32, l = k % 32;
    u8 qlb = b[64 * h + l + 32 * (quarter & 1)];
    int nib = quarter >= 2 ? (qlb >> 4) : (qlb & 0xF);
    int hb = (b[128 + 32 * h + l] >> (2 * quarter)) & 3;
    int q = (nib | (hb << 4)) - 32;
    float sc = (float)(signed char)b[192 + 8 * h + l / 16 + 2 * quarter];
    return MUL(MUL(rd_h(b + 208), sc), (float)q);
}

__device__ __forceinline__ float warp_sum(float a) {
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    return a;
}

// Per type: `dequant_T` decodes `rows` rows (row_bytes apart) to f32 (feeds cuBLAS SGEMM for
// batches); `gemv_T` computes y[t][r] = w[r] . x[t] for n <= 8 positions, one warp per row,
// straight from the stored bytes (single-token steps).
#define TYPE_KERNELS(T)                                                                        \
extern "C" __global__ void dequant_##T(const u8* w, long long row_bytes, int rows, int cols,   \
                                       float* out) {                                           \
    long long total = (long long)rows * cols;                                                  \
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;        \
         idx += (long long)gridDim.x * blockDim.x) {                                           \
        int r = (int)(idx / cols), c = (int)(idx % cols);                                      \
        out[idx] = deq_##T(w + r * row_bytes, c);                                              \
    }                                                                                          \
}                                                                                              \
extern "C" __global__ void gemv_##T(const u8* w, long long row_bytes, int rows, int cols,      \
                                    const float* x, int n, float* y) {                         \
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;        \
    if (r >= rows) return;                                                                     \
    const u8* row = w + r * row_bytes;                                                         \
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                   \
    for (int c = lane; c < cols; c += 32) {                                                    \
        float v = deq_##T(row, c);                                                             \
        for (int t = 0; t < 8; t++)                                                            \
            if (t < n) acc[t] += v * x[(long long)t * cols + c];                               \
    }                                                                                          \
    for (int t = 0; t < 8; t++) {                                                              \
        if (t >= n) break;                                                                     \
        float s = warp_sum(acc[t]);                                                            \
        if (lane == 0) y[(long long)t * rows + r] = s;                                         \
    }                                                                                          \
}

TYPE_KERNELS(f32)
TYPE_KERNELS(f16)
TYPE_KERNELS(bf16)
TYPE_KERNELS(q8_0)
TYPE_KERNELS(q4_0)
TYPE_KERNELS(q4_1)
TYPE_KERNELS(q5_0)
TYPE_KERNELS(q5_1)
TYPE_KERNELS(q2_k)
TYPE_KERNELS(q3_k)
TYPE_KERNELS(q4_k)
TYPE_KERNELS(q5_k)
TYPE_KERNELS(q6_k)

// Block-wide sum of one value per thread, fixed tree; blockDim.x a power of two <= 1024.
__device__ float block_sum(float v, float* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    float s = red[0];
    __syncthreads();
    return s;
}
__device__ float block_max(float v, float* red) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + w]);
        __syncthreads();
    }
    float s = red[0];
    __syncthreads();
    return s;
}

// RMSNorm, one block (256 threads) per row: out = w * (x * rsqrt(mean(x^2) + eps)).
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int cols, float eps) {
    __shared__ float red[256];
    const float* xr = x + (long long)blockIdx.x * cols;
    float* o = out + (long long)blockIdx.x * cols;
    float s = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c] * xr[c];
    s = block_sum(s, red);
    float r = 1.0f / sqrtf(s / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = w[c] * (xr[c] * r);
}

// HF rotary (rotate_half): for each of `heads` heads of `hd` in `n` rows of width heads * hd,
// dimension i rotates with i + hd/2 using the host-computed tables cs/sn ([n][hd/2]).
extern "C" __global__ void rope(float* x, const float* cs, const float* sn, int n, int heads, int hd) {
    int half = hd / 2;
    long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)n * heads * half) return;
    int i = (int)(idx % half), t = (int)(idx / ((long long)heads * half));
    float* a = x + (idx / half) * hd;
    float c = cs[t * half + i], s = sn[t * half + i];
    float x1 = a[i], x2 = a[i + half];
    a[i] = MUL(x1, c) - MUL(x2, s);
    a[i + half] = MUL(x2, c) + MUL(x1, s);
}

// Causal GQA attention, one block (128 threads) per (new position t, query head h). Keys and
// values of positions 0..pos0+t are in the cache ([pos][n_kv * hd]); `scores` is scratch of
// lmax floats per block.
extern "C" __global__ void attention(const float* q, const float* kc, const float* vc, float* out,
                                     float* scores, int nh, int nkv, int hd, int pos0, int lmax,
                                     float scale) {
    __shared__ float red[128];
    int t = blockIdx.x / nh, h = blockIdx.x % nh, g = h / (nh / nkv), kvd = nkv * hd;
    const float* qh = q + (long long)blockIdx.x * hd;
    float* sc = scores + (long long)blockIdx.x * lmax;
    int len = pos0 + t + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    for (int s = warp; s < len; s += nw) {
        const float* k = kc + (long long)s * kvd + g * hd;
        float a = 0;
        for (int d = lane; d < hd; d += 32) a += qh[d] * k[d];
        a = warp_sum(a);
        if (lane == 0) sc[s] = a * scale;
    }
    __syncthreads();
    float m = __int_as_float(0xff800000); // -inf
    for (int s = threadIdx.x; s < len; s += blockDim.x) m = fmaxf(m, sc[s]);
    m = block_max(m, red);
    float sum = 0;
    for (int s = threadIdx.x; s < len; s += blockDim.x) { float e = expf(sc[s] - m); sc[s] = e; sum += e; }
    sum = block_sum(sum, red);
    for (int s = threadIdx.x; s < len; s += blockDim.x) sc[s] = sc[s] / sum;
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0;
        for (int s = 0; s < len; s++) o += sc[s] * vc[(long long)s * kvd + g * hd + d];
        out[(long long)blockIdx.x * hd + d] = o;
    }
}

// g = silu(g) * u, element-wise.
extern "C" __global__ void swiglu(float* g, const float* u, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) { float v = g[i]; g[i] = (v / (1.0f + expf(-v))) * u[i]; }
}

// x += y, element-wise (the residual).
extern "C" __global__ void add(float* x, const float* y, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// out[j] = x[idx[j]] for rows of `cols` (the positions routed to one expert).
extern "C" __global__ void gather_rows(const float* x, const int* idx, float* out, int m, int cols) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)m * cols) return;
    int j = (int)(i / cols), c = (int)(i % cols);
    out[i] = x[(long long)idx[j] * cols + c];
}

// out[idx[j]] += y[j] * wt[j]: one expert's weighted output (each position once per expert).
extern "C" __global__ void scatter_add(float* out, const float* y, const int* idx, const float* wt,
                                       int m, int cols) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)m * cols) return;
    int j = (int)(i / cols), c = (int)(i % cols);
    out[(long long)idx[j] * cols + c] += MUL(y[i], wt[j]);
}

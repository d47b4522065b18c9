// Fused CPU kernel of the blocked Coeff attention (forward and backward); see fused.py for when it is used.
//
// Same algorithm as blocked.py: query rows are cut into blocks holding every head's whole rows over the
// visible keys, so the softmax is exact without a statistics pass. Per block and thread, every step works on
// two buffers of H x rows x keys floats in one C++ loop (blocked.py streams 8 MiB panels through a dozen
// separate torch ops): the products through BLAS, mask + softmax in one row sweep, the head mix and its
// backward register-blocked over L1-sized chunks, dropout from a counter-based hash (the same mask in
// forward and backward, independent of blocking). Blocks run in parallel (at::parallel_for); dK, dV and dC
// accumulate per thread. Where the time goes: bench/coeff_kernel_profile.py.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// The Fortran BLAS entry points of the MKL that x86 torch wheels carry (ATen's own typed cpublas::gemm
// overloads are not exported). A torch without them fails to load this kernel, and fused.py falls back.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*);
}

inline void blas_gemm(char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}
inline void blas_gemm(char ta, char tb, int m, int n, int k, double alpha, const double* a, int lda,
                      const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Row-major C (M x N) = alpha op(A) op(B) + beta C through the column-major BLAS (C^T = op(B)^T op(A)^T).
template <typename T>
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
             const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  blas_gemm(tb ? 'T' : 'N', ta ? 'T' : 'N', static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), alpha,
            b, static_cast<int>(ldb), a, static_cast<int>(lda), beta, c, static_cast<int>(ldc));
}

// exp for float written so that the row loops vectorise (no libm call): Cody-Waite range reduction and the
// Cephes polynomial, relative error ~1e-7; arguments below -87.3 (masked scores) give exactly 0.
inline float exp_approx(float x) {
  const float clamped = std::min(std::max(x, -87.3f), 88.7f);
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = clamped - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

inline uint32_t hash32(uint32_t x) {  // lowbias32 (C. Wellons): a full-avalanche 32-bit mixer
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

template <typename T>
struct Problem {
  const T* q;
  const T* k;
  const T* v;
  const T* c;  // (H, H) or nullptr: no mixing
  std::vector<T> c_t;  // Cᵀ
  int64_t batch, heads, kv_heads, q_len, keys, dim, vdim, prefix;
  T scale;
  // Optional additive bias / mask over the model's keys, (B, H, Lq, Lk) through strides (broadcast = 0).
  const T* bias;
  int64_t bias_stride[3];
  const T* mask_add;
  const bool* mask_bool;
  int64_t mask_stride[3];
  bool causal;
  int64_t offset, window;  // window 0: none
  uint32_t drop_threshold;  // 0: no dropout
  T keep_scale;
  uint64_t seed;

  int64_t model_keys() const { return keys - prefix; }

  // Key columns [lo, hi) (prefix first) outside which rows [r0, r1) see nothing (as KeyLayout.columns,
  // without the mask scan).
  std::pair<int64_t, int64_t> columns(int64_t r0, int64_t r1) const {
    int64_t lo = 0, hi = model_keys();
    if (causal) {
      hi = std::min(hi, r1 + offset);
      if (window > 0) lo = std::max<int64_t>(0, r0 + offset - window + 1);
    }
    if (hi <= lo) {
      lo = 0;
      hi = model_keys();
    }
    return {prefix > 0 ? 0 : lo, prefix + hi};
  }
};


// Optional per-phase timers (bench/coeff_kernel_profile.py builds the kernel with -DDS_PROFILE): CPU seconds
// per phase, summed over threads. Compiled out otherwise.
#ifdef DS_PROFILE
#include <chrono>
constexpr int kPhases = 13;
constexpr int kMaxThreads = 256;
double phase_seconds[kMaxThreads][kPhases];
#define PHASE_START auto phase_t0 = std::chrono::steady_clock::now();
#define PHASE(i)                                                                                     \
  {                                                                                                  \
    const auto phase_t1 = std::chrono::steady_clock::now();                                          \
    phase_seconds[at::get_thread_num() % kMaxThreads][i] +=                                          \
        std::chrono::duration<double>(phase_t1 - phase_t0).count();                                  \
    phase_t0 = phase_t1;                                                                             \
  }
std::vector<double> read_phases() {
  std::vector<double> out(kPhases, 0.0);
  for (auto& row : phase_seconds)
    for (int i = 0; i < kPhases; ++i) {
      out[i] += row[i];
      row[i] = 0.0;
    }
  return out;
}
#else
#define PHASE_START
#define PHASE(i)
#endif

constexpr float kMasked = std::numeric_limits<float>::lowest();

// Row reductions with explicit lanes: the compiler may not reorder a float sum itself (no -ffast-math), and
// GCC 12 does not vectorise `omp simd` reductions here.
constexpr int kLanes = 16;

template <typename T>
T row_max(const T* s, int64_t n) {
  T lanes[kLanes];
  std::fill(lanes, lanes + kLanes, s[0]);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = std::max(lanes[l], s[j + l]);
  T top = *std::max_element(lanes, lanes + kLanes);
  for (; j < n; ++j) top = std::max(top, s[j]);
  return top;
}

// s <- exp(s - top); returns the sum.
template <typename T>
T exp_sum(T* s, int64_t n, T top) {
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const T e = exp_approx(s[j + l] - top);
      s[j + l] = e;
      lanes[l] += e;
    }
  T total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; j < n; ++j) {
    s[j] = exp_approx(s[j] - top);
    total += s[j];
  }
  return total;
}

template <typename T>
T row_dot(const T* a, const T* b, int64_t n) {
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[j + l] * b[j + l];
  T total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

// Scores of row i (head h) over columns [lo, lo + width) -> probabilities, in place.
template <typename T>
void softmax_row(const Problem<T>& p, int64_t b, int64_t h, int64_t i, int64_t lo, int64_t width, T* s,
                 T* stats, bool known) {
  const int64_t skip = std::max<int64_t>(p.prefix - lo, 0);  // leading prefix columns: always visible
  if (skip < width) {
    T* row = s + skip;
    const int64_t n = width - skip, first = lo + skip - p.prefix;  // first model key of the row part
    if (p.bias) {
      const T* bias = p.bias + b * p.bias_stride[0] + h * p.bias_stride[1] + i * p.bias_stride[2] + first;
      for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
    }
    const int64_t mask_at = b * p.mask_stride[0] + h * p.mask_stride[1] + i * p.mask_stride[2] + first;
    if (p.mask_add) {
      const T* mask = p.mask_add + mask_at;
      for (int64_t j = 0; j < n; ++j) row[j] += mask[j];
    }
    if (p.mask_bool) {
      const bool* mask = p.mask_bool + mask_at;
      for (int64_t j = 0; j < n; ++j) row[j] = mask[j] ? row[j] : T(kMasked);
    }
    if (p.causal) {
      const int64_t last = i + p.offset - first;  // visible model keys: (last - window, last]
      const int64_t from = p.window > 0 ? std::max<int64_t>(0, last - p.window + 1) : 0;
      for (int64_t j = 0; j < std::min(from, n); ++j) row[j] = T(kMasked);
      for (int64_t j = std::max<int64_t>(last + 1, 0); j < n; ++j) row[j] = T(kMasked);
    }
  }
  // `stats` holds the row's (max, 1 / sum): written in forward, reused by backward's recomputation (one pass
  // instead of three, and bitwise the same probabilities).
  if (!known) {
    stats[0] = row_max(s, width);
    stats[1] = T(1) / exp_sum(s, width, stats[0]);
  } else {
    for (int64_t j = 0; j < width; ++j) s[j] = exp_approx(s[j] - stats[0]);
  }
  const T inv = stats[1];
  for (int64_t j = 0; j < width; ++j) s[j] *= inv;
}

// Dropout keep mask of row i (head h) over columns [lo, lo + width): 1 = kept. A function of (seed, b, h, i,
// column) only, so forward and backward agree whatever the blocking.
template <typename T>
void keep_row(const Problem<T>& p, int64_t b, int64_t h, int64_t i, int64_t lo, int64_t width, uint8_t* keep) {
  const uint64_t row = (static_cast<uint64_t>(b) * p.heads + h) * p.q_len + i;
  const uint32_t key = hash32(static_cast<uint32_t>(p.seed) ^ hash32(static_cast<uint32_t>(p.seed >> 32) +
                                                                     hash32(static_cast<uint32_t>(row)) +
                                                                     static_cast<uint32_t>(row >> 32)));
  const uint32_t threshold = p.drop_threshold;
  for (int64_t j = 0; j < width; ++j) {
    const uint32_t u = hash32(key ^ (static_cast<uint32_t>(lo + j) * 0x9E3779B1U));
    keep[j] = u >= threshold;
  }
}

template <typename T>
struct Block {
  int64_t b, r0, r1, lo, hi;
  int64_t rows() const { return r1 - r0; }
  int64_t width() const { return hi - lo; }
};

// Head mixing over one block of H planes of `plane` floats: out[a] = Σ_b w[a, b] in[b] at every position
// (w = C forward, Cᵀ backward); `out` may be `in`. Column chunks stay in L1 and each output vector is
// accumulated in a register: an (H, H) x (H, plane) gemm has too small an inner dimension for BLAS speed.
constexpr int64_t kChunk = 256;

// One 64-byte SIMD vector of T (GCC/Clang vector extension; split in halves where the CPU has no AVX-512).
template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(64)));
  static constexpr int64_t kWidth = 64 / sizeof(T);
  static Vec load(const T* at) {
    Vec v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  static void store(T* at, Vec v) { std::memcpy(at, &v, sizeof v); }
  static T sum(Vec v) {
    T total = 0;
    for (int64_t l = 0; l < kWidth; ++l) total += v[l];
    return total;
  }
};

template <typename T>
void mix_planes(const T* w, int64_t heads, const T* in, T* out, int64_t plane, T* tmp) {
  using S = Simd<T>;
  for (int64_t at = 0; at < plane; at += kChunk) {
    const int64_t n = std::min(kChunk, plane - at);
    int64_t j0 = 0;
    for (; j0 + S::kWidth <= n; j0 += S::kWidth) {
      int64_t a = 0;
      for (; a + 4 <= heads; a += 4) {  // four independent accumulators share each loaded input vector
        typename S::Vec c0 = {}, c1 = {}, c2 = {}, c3 = {};
        const T* wa = w + a * heads;
        for (int64_t b = 0; b < heads; ++b) {
          const typename S::Vec x = S::load(in + b * plane + at + j0);
          c0 += wa[b] * x;
          c1 += wa[heads + b] * x;
          c2 += wa[2 * heads + b] * x;
          c3 += wa[3 * heads + b] * x;
        }
        S::store(tmp + a * kChunk + j0, c0);
        S::store(tmp + (a + 1) * kChunk + j0, c1);
        S::store(tmp + (a + 2) * kChunk + j0, c2);
        S::store(tmp + (a + 3) * kChunk + j0, c3);
      }
      for (; a < heads; ++a) {
        typename S::Vec acc = {};
        for (int64_t b = 0; b < heads; ++b) acc += w[a * heads + b] * S::load(in + b * plane + at + j0);
        S::store(tmp + a * kChunk + j0, acc);
      }
    }
    for (; j0 < n; ++j0)
      for (int64_t a = 0; a < heads; ++a) {
        T acc = 0;
        for (int64_t b = 0; b < heads; ++b) acc += w[a * heads + b] * in[b * plane + at + j0];
        tmp[a * kChunk + j0] = acc;
      }
    for (int64_t a = 0; a < heads; ++a) std::copy(tmp + a * kChunk, tmp + a * kChunk + n, out + a * plane + at);
  }
}

// dC[h, k] += <grad[h], probs[k]> over one block. Column chunks outermost, so the 2H chunk rows stay in L1
// while all H² products are taken (h outermost would stream every probs plane H times); four k at a time
// so each loaded grad vector feeds four accumulators; per-lane partial sums in `lanes` (H² vectors).
template <typename T>
void mix_weight_grad(int64_t heads, const T* grad, const T* probs, int64_t plane, T* dc, T* lanes) {
  using S = Simd<T>;
  using V = typename S::Vec;
  const int64_t full = plane / S::kWidth * S::kWidth;
  std::fill(lanes, lanes + heads * heads * S::kWidth, T(0));
  for (int64_t at = 0; at < full; at += kChunk) {
    const int64_t stop = std::min(at + kChunk, full);
    for (int64_t h = 0; h < heads; ++h) {
      const T* g = grad + h * plane;
      T* acc = lanes + h * heads * S::kWidth;
      int64_t k0 = 0;
      for (; k0 + 4 <= heads; k0 += 4) {
        const T* p0 = probs + k0 * plane;
        V a0 = S::load(acc + k0 * S::kWidth), a1 = S::load(acc + (k0 + 1) * S::kWidth);
        V a2 = S::load(acc + (k0 + 2) * S::kWidth), a3 = S::load(acc + (k0 + 3) * S::kWidth);
        for (int64_t j = at; j < stop; j += S::kWidth) {
          const V gv = S::load(g + j);
          a0 += gv * S::load(p0 + j);
          a1 += gv * S::load(p0 + plane + j);
          a2 += gv * S::load(p0 + 2 * plane + j);
          a3 += gv * S::load(p0 + 3 * plane + j);
        }
        S::store(acc + k0 * S::kWidth, a0);
        S::store(acc + (k0 + 1) * S::kWidth, a1);
        S::store(acc + (k0 + 2) * S::kWidth, a2);
        S::store(acc + (k0 + 3) * S::kWidth, a3);
      }
      for (; k0 < heads; ++k0) {
        V a = S::load(acc + k0 * S::kWidth);
        for (int64_t j = at; j < stop; j += S::kWidth) a += S::load(g + j) * S::load(probs + k0 * plane + j);
        S::store(acc + k0 * S::kWidth, a);
      }
    }
  }
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t k = 0; k < heads; ++k) {
      T total = S::sum(S::load(lanes + (h * heads + k) * S::kWidth));
      for (int64_t j = full; j < plane; ++j) total += grad[h * plane + j] * probs[k * plane + j];
      dc[h * heads + k] += total;
    }
}

// Probabilities of every head over a block into `probs` (H x rows x width), mixed (and dropped) maps into
// `mixed`; `keep` receives the dropout mask when dropout is on. Returns the buffer holding the mixed maps
// (`probs` itself when nothing is mixed or dropped).
template <typename T>
T* mixed_maps(const Problem<T>& p, const Block<T>& blk, T* probs, T* mixed, uint8_t* keep, T* tmp, T* stats,
              bool known) {
  const int64_t rows = blk.rows(), width = blk.width(), plane = rows * width;
  for (int64_t h = 0; h < p.heads; ++h) {
    const int64_t g = h / (p.heads / p.kv_heads);
    const T* q = p.q + ((blk.b * p.heads + h) * p.q_len + blk.r0) * p.dim;
    const T* k = p.k + ((blk.b * p.kv_heads + g) * p.keys + blk.lo) * p.dim;
    T* s = probs + h * plane;
    PHASE_START
    gemm_rm<T>(false, true, rows, width, p.dim, p.scale, q, p.dim, k, p.dim, T(0), s, width);
    PHASE(known ? 5 : 0)  // scores
    T* row_stats = stats + ((blk.b * p.heads + h) * p.q_len + blk.r0) * 2;
    for (int64_t r = 0; r < rows; ++r)
      softmax_row(p, blk.b, h, blk.r0 + r, blk.lo, width, s + r * width, row_stats + 2 * r, known);
    PHASE(known ? 6 : 1)  // softmax
  }
  T* out = probs;
  if (p.c) {
    PHASE_START
    mix_planes(p.c, p.heads, probs, mixed, plane, tmp);
    PHASE(known ? 7 : 2)  // mix
    out = mixed;
  }
  if (p.drop_threshold > 0) {
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t at = (h * rows + r) * width;
        keep_row(p, blk.b, h, blk.r0 + r, blk.lo, width, keep + at);
        const T* src = out + at;
        T* dst = mixed + at;
        for (int64_t j = 0; j < width; ++j) dst[j] = keep[at + j] ? src[j] * p.keep_scale : T(0);
      }
    out = mixed;
  }
  return out;
}

// The blocks, ordered first, last, second, second to last, ...: at::parallel_for hands each thread a
// contiguous range, and under a causal mask a block's cost grows with its row index, so this order gives
// every thread about the same work.
template <typename T>
std::vector<Block<T>> blocks(const Problem<T>& p, int64_t block_rows) {
  std::vector<Block<T>> ordered;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t r0 = 0; r0 < p.q_len; r0 += block_rows) {
      const int64_t r1 = std::min(r0 + block_rows, p.q_len);
      const auto cols = p.columns(r0, r1);
      ordered.push_back({b, r0, r1, cols.first, cols.second});
    }
  std::vector<Block<T>> out;
  for (size_t lo = 0, hi = ordered.size(); lo < hi;) {
    out.push_back(ordered[lo++]);
    if (lo < hi) out.push_back(ordered[--hi]);
  }
  return out;
}

struct Options {
  c10::optional<at::Tensor> coefficients, mask, bias;
  double scale;
  int64_t prefix;
  bool causal;
  int64_t offset, window;
  double dropout;
  int64_t seed;
};

template <typename T>
Problem<T> problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Options& o) {
  Problem<T> p{};
  p.q = q.data_ptr<T>();
  p.k = k.data_ptr<T>();
  p.v = v.data_ptr<T>();
  p.c = o.coefficients ? o.coefficients->data_ptr<T>() : nullptr;
  if (p.c) {
    const int64_t heads = q.size(1);
    p.c_t.resize(heads * heads);
    for (int64_t a = 0; a < heads; ++a)
      for (int64_t b = 0; b < heads; ++b) p.c_t[b * heads + a] = p.c[a * heads + b];
  }
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.q_len = q.size(2);
  p.dim = q.size(3);
  p.kv_heads = k.size(1);
  p.keys = k.size(2);
  p.vdim = v.size(3);
  p.prefix = o.prefix;
  p.scale = static_cast<T>(o.scale);
  if (o.bias) {
    p.bias = o.bias->data_ptr<T>();
    for (int d = 0; d < 3; ++d) p.bias_stride[d] = o.bias->stride(d);
  }
  if (o.mask) {
    if (o.mask->scalar_type() == at::kBool)
      p.mask_bool = o.mask->data_ptr<bool>();
    else
      p.mask_add = o.mask->data_ptr<T>();
    for (int d = 0; d < 3; ++d) p.mask_stride[d] = o.mask->stride(d);
  }
  p.causal = o.causal;
  p.offset = o.offset;
  p.window = o.window;
  const double threshold = std::round(o.dropout * 4294967296.0);
  p.drop_threshold = static_cast<uint32_t>(std::min(threshold, 4294967295.0));
  p.keep_scale = static_cast<T>(p.drop_threshold ? 1.0 / (1.0 - p.drop_threshold / 4294967296.0) : 1.0);
  p.seed = static_cast<uint64_t>(o.seed);
  return p;
}

template <typename T>
std::vector<at::Tensor> forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const Options& o, int64_t block_rows) {
  const Problem<T> p = problem<T>(q, k, v, o);
  at::Tensor output = at::empty({p.batch, p.heads, p.q_len, p.vdim}, q.options());
  at::Tensor stats = at::empty({p.batch, p.heads, p.q_len, 2}, q.options());  // per row: max, 1 / sum
  T* out = output.data_ptr<T>();
  T* stats_base = stats.data_ptr<T>();
  const auto work = blocks(p, block_rows);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t begin, int64_t end) {
    const int64_t size = p.heads * block_rows * p.keys;
    std::vector<T> probs(size), mixed(p.c || p.drop_threshold ? size : 0), row(p.heads * kChunk);
    std::vector<uint8_t> keep(p.drop_threshold ? size : 0);
    for (int64_t w = begin; w < end; ++w) {
      const Block<T>& blk = work[w];
      const T* maps = mixed_maps(p, blk, probs.data(), mixed.data(), keep.data(), row.data(), stats_base, false);
      const int64_t rows = blk.rows(), width = blk.width();
      PHASE_START
      for (int64_t h = 0; h < p.heads; ++h) {
        const int64_t g = h / (p.heads / p.kv_heads);
        const T* v_ = p.v + ((blk.b * p.kv_heads + g) * p.keys + blk.lo) * p.vdim;
        T* o_ = out + ((blk.b * p.heads + h) * p.q_len + blk.r0) * p.vdim;
        gemm_rm<T>(false, false, rows, p.vdim, width, T(1), maps + h * rows * width, width, v_, p.vdim, T(0),
                   o_, p.vdim);
      }
      PHASE(3)  // P̂ V
    }
  });
  return {output, stats};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_out, const at::Tensor& stats,
                                      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const Options& o, int64_t block_rows, std::vector<bool> needs) {
  const Problem<T> p = problem<T>(q, k, v, o);
  const bool need_q = needs[0], need_k = needs[1], need_v = needs[2], need_c = needs[3] && p.c;
  const int64_t threads = at::get_num_threads();
  at::Tensor grad_q = need_q ? at::zeros_like(q) : at::Tensor();
  // Per-thread accumulators; dK and dV transposed, (D, keys) per KV head: Qᵀ · panel beats panelᵀ · Q.
  at::Tensor grad_k_t = need_k ? at::zeros({threads, p.batch, p.kv_heads, p.dim, p.keys}, q.options()) : at::Tensor();
  at::Tensor grad_v_t = need_v ? at::zeros({threads, p.batch, p.kv_heads, p.vdim, p.keys}, q.options()) : at::Tensor();
  at::Tensor grad_c = need_c ? at::zeros({threads, p.heads, p.heads}, q.options()) : at::Tensor();
  const T* go = grad_out.data_ptr<T>();
  T* stats_base = const_cast<T*>(stats.data_ptr<T>());  // read only: `known` rows
  T* dq_base = need_q ? grad_q.data_ptr<T>() : nullptr;
  T* dk_base = need_k ? grad_k_t.data_ptr<T>() : nullptr;
  T* dv_base = need_v ? grad_v_t.data_ptr<T>() : nullptr;
  T* dc_base = need_c ? grad_c.data_ptr<T>() : nullptr;
  const int64_t k_acc = p.batch * p.kv_heads * p.dim * p.keys, v_acc = p.batch * p.kv_heads * p.vdim * p.keys;
  const auto work = blocks(p, block_rows);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    const int64_t size = p.heads * block_rows * p.keys;
    std::vector<T> probs(size), mixed(size), row(p.heads * kChunk), lanes(p.heads * p.heads * Simd<T>::kWidth);
    std::vector<uint8_t> keep(p.drop_threshold ? size : 0);
    T* dk = need_k ? dk_base + thread * k_acc : nullptr;
    T* dv = need_v ? dv_base + thread * v_acc : nullptr;
    T* dc = need_c ? dc_base + thread * p.heads * p.heads : nullptr;
    for (int64_t w = begin; w < end; ++w) {
      const Block<T>& blk = work[w];
      const int64_t rows = blk.rows(), width = blk.width(), plane = rows * width;
      const T* maps = mixed_maps(p, blk, probs.data(), mixed.data(), keep.data(), row.data(), stats_base, true);
      PHASE_START
      auto kv_head = [&](int64_t h) { return blk.b * p.kv_heads + h / (p.heads / p.kv_heads); };
      auto head_rows = [&](int64_t h) { return (blk.b * p.heads + h) * p.q_len + blk.r0; };
      if (dv)
        for (int64_t h = 0; h < p.heads; ++h)  // dVᵀ (Dv x width) += dOᵀ (Dv x rows) · maps (rows x width)
          gemm_rm<T>(true, false, p.vdim, width, rows, T(1), go + head_rows(h) * p.vdim, p.vdim,
                     maps + h * plane, width, T(1), dv + kv_head(h) * p.vdim * p.keys + blk.lo, p.keys);
      PHASE(8)  // dV
      if (!(need_q || need_k || dc)) continue;
      T* grad = mixed.data();  // dMixed, then dProbs, then dScores, in place
      for (int64_t h = 0; h < p.heads; ++h)
        gemm_rm<T>(false, true, rows, width, p.vdim, T(1), go + head_rows(h) * p.vdim, p.vdim,
                   p.v + (kv_head(h) * p.keys + blk.lo) * p.vdim, p.vdim, T(0), grad + h * plane, width);
      PHASE(9)  // dP̂ = dO Vᵀ
      if (p.drop_threshold > 0)
        for (int64_t j = 0; j < p.heads * plane; ++j) grad[j] = keep[j] ? grad[j] * p.keep_scale : T(0);
      if (p.c) {
        if (dc) mix_weight_grad(p.heads, grad, probs.data(), plane, dc, lanes.data());
        mix_planes(p.c_t.data(), p.heads, grad, grad, plane, row.data());
        PHASE(10)  // dC and the transposed mix
      }
      if (!(need_q || need_k)) continue;
      for (int64_t h = 0; h < p.heads * rows; ++h) {  // softmax backward: P ⊙ (dP − rowsum(dP ⊙ P))
        T* d = grad + h * width;
        const T* pr = probs.data() + h * width;
        const T dot = row_dot(d, pr, width);
        for (int64_t j = 0; j < width; ++j) d[j] = pr[j] * (d[j] - dot);
      }
      PHASE(11)  // softmax backward
      for (int64_t h = 0; h < p.heads; ++h) {
        if (need_q)  // dQ (rows x D) = scale · dS (rows x width) · K (width x D)
          gemm_rm<T>(false, false, rows, p.dim, width, p.scale, grad + h * plane, width,
                     p.k + (kv_head(h) * p.keys + blk.lo) * p.dim, p.dim, T(0),
                     dq_base + head_rows(h) * p.dim, p.dim);
        if (dk)  // dKᵀ (D x width) += scale · Qᵀ (D x rows) · dS (rows x width)
          gemm_rm<T>(true, false, p.dim, width, rows, p.scale, p.q + head_rows(h) * p.dim, p.dim,
                     grad + h * plane, width, T(1), dk + kv_head(h) * p.dim * p.keys + blk.lo, p.keys);
      }
      PHASE(12)  // dQ, dK
    }
  });
  auto finish = [&](const at::Tensor& acc) {
    return acc.defined() ? acc.sum(0).transpose(-1, -2).contiguous() : at::Tensor();
  };
  return {grad_q, finish(grad_k_t), finish(grad_v_t), need_c ? grad_c.sum(0) : at::Tensor()};
}

Options options(c10::optional<at::Tensor> coefficients, c10::optional<at::Tensor> mask,
                c10::optional<at::Tensor> bias, double scale, int64_t prefix, bool causal, int64_t offset,
                int64_t window, double dropout, int64_t seed) {
  return {coefficients, mask, bias, scale, prefix, causal, offset, window, dropout, seed};
}

void check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->dim() == 4,
                "fused Coeff attention: CPU contiguous 4D tensors expected");
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "fused Coeff attention: one dtype expected");
  }
}

// Returns (output, per-row softmax statistics for backward).
std::vector<at::Tensor> forward(at::Tensor q, at::Tensor k, at::Tensor v, c10::optional<at::Tensor> coefficients,
                   c10::optional<at::Tensor> mask, c10::optional<at::Tensor> bias, double scale, int64_t prefix,
                   bool causal, int64_t offset, int64_t window, double dropout, int64_t seed,
                   int64_t block_rows) {
  check(q, k, v);
  const Options o = options(coefficients, mask, bias, scale, prefix, causal, offset, window, dropout, seed);
  if (q.scalar_type() == at::kDouble) return forward_impl<double>(q, k, v, o, block_rows);
  TORCH_CHECK(q.scalar_type() == at::kFloat, "fused Coeff attention: float32 or float64 expected");
  return forward_impl<float>(q, k, v, o, block_rows);
}

std::vector<at::Tensor> backward(at::Tensor grad_out, at::Tensor stats, at::Tensor q, at::Tensor k, at::Tensor v,
                                 c10::optional<at::Tensor> coefficients, c10::optional<at::Tensor> mask,
                                 c10::optional<at::Tensor> bias, double scale, int64_t prefix, bool causal,
                                 int64_t offset, int64_t window, double dropout, int64_t seed,
                                 int64_t block_rows, std::vector<bool> needs) {
  check(q, k, v);
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.scalar_type() == q.scalar_type() && stats.is_contiguous() &&
                  stats.scalar_type() == q.scalar_type(),
              "fused Coeff attention: contiguous gradient and statistics of the query dtype expected");
  const Options o = options(coefficients, mask, bias, scale, prefix, causal, offset, window, dropout, seed);
  if (q.scalar_type() == at::kDouble) return backward_impl<double>(grad_out, stats, q, k, v, o, block_rows, needs);
  return backward_impl<float>(grad_out, stats, q, k, v, o, block_rows, needs);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused Coeff attention, forward");
  m.def("backward", &backward, "fused Coeff attention, backward");
#ifdef DS_PROFILE
  m.def("read_phases", &read_phases, "CPU seconds per phase since the last call (DS_PROFILE builds only)");
#endif
}

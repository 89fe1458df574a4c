// Shared pieces of the fused CPU batch-norm kernels (cpu_lp_forward.cpp, cpu_lp_backward.cpp).
//
// x is a canonical view: (N, C, L) contiguous ("nchw") or (N·L, C) contiguous ("channels_last").
// A "row" is one sample's part of one channel (L elements). nchw runs each channel from start to
// end in one task, so its data stays in the core's cache between passes. channels_last runs each
// pass over samples; a sample's (L, C) block is read as blocks of P = r·C ≥ 64 elements so that
// the vectorized loop is long even for few channels, and lane j's result belongs to channel j % C.
// Partial results are kept per (sample, channel) and reduced in a fixed order, so results do not
// depend on the thread count.
#pragma once
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace nmlp {

// The code paths' ids are defined once, in normmatters/norms/kinds.py (KERNELS), and passed to the
// compiler as -DNMLP_KERNEL_<NAME>=<id> by kernels/__init__.py.
#if !defined(NMLP_KERNEL_MEAN) || !defined(NMLP_KERNEL_L1) || !defined(NMLP_KERNEL_TOPK)
#error "compile with the -DNMLP_KERNEL_* ids of normmatters/norms/kinds.py (python -m normmatters.norms.kernels)"
#endif
enum Kind : int64_t { kMean = NMLP_KERNEL_MEAN, kL1 = NMLP_KERNEL_L1, kTopk = NMLP_KERNEL_TOPK };  // L∞: top-1
struct Params { int64_t kind, k; double eps, constant; };

struct Geo {
  int64_t N, C, L;
  bool cl;
  int64_t at(int64_t n, int64_t c, int64_t l) const { return cl ? (n * L + l) * C + c : (n * C + c) * L + l; }
  double count() const { return double(N * L); }
  // parallel_for grains: tasks of at least ~32K elements (PyTorch's grain); a small layer runs on
  // one thread, where waking the others would cost more than the work.
  int64_t channel_grain() const { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N * L)); }
  int64_t sample_grain() const { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L * C)); }
};

inline Geo geometry(const at::Tensor& x, int64_t batch) {
  TORCH_CHECK(x.dim() == 2 || x.dim() == 3, "expected a canonical (N, C, L) or (M, C) view");
  TORCH_CHECK(x.is_contiguous(), "expected a contiguous canonical view");
  if (x.dim() == 3) return {x.size(0), x.size(1), x.size(2), false};
  TORCH_CHECK(batch > 0 && x.size(0) % batch == 0, "batch must divide the rows of an (M, C) view");
  return {batch, x.size(1), x.size(0) / batch, true};
}

template <typename T> inline T sign_of(T v) { return T(v > T(0)) - T(v < T(0)); }
template <typename T> inline T abs_of(T v) { return v < T(0) ? -v : v; }

// ------------------------------------------------------------------ nchw: lane accumulators
constexpr int kW = 16;           // lanes of the nchw accumulators
constexpr int64_t kFlush = 4096;  // float lanes take at most this many terms before going to double

template <typename T> struct Lanes {
  alignas(64) T v[kW];
  double total = 0;
  int64_t terms = 0;
  Lanes() { std::fill(v, v + kW, T(0)); }
  void flush() {
    for (int j = 0; j < kW; ++j) total += v[j], v[j] = T(0);
    terms = 0;
  }
  void counted(int64_t n) { if ((terms += n) >= kFlush) flush(); }
  double result() { flush(); return total; }
};

// acc += Σ f(p[i]) over a contiguous row
template <typename T, typename F> inline void lanes_add(Lanes<T>& acc, const T* p, int64_t L, F f) {
  int64_t i = 0;
  for (; i + kW <= L; i += kW) {
#pragma omp simd
    for (int j = 0; j < kW; ++j) acc.v[j] += f(p[i + j]);
  }
  for (; i < L; ++i) acc.v[0] += f(p[i]);
  acc.counted(L);
}

// acc += Σ p[i] over a contiguous row, with the row's extrema in the same pass
template <typename T> inline void lanes_add_extrema(Lanes<T>& acc, const T* p, int64_t L, T& lo, T& hi) {
  alignas(64) T mn[kW], mx[kW];
  std::fill(mn, mn + kW, p[0]), std::fill(mx, mx + kW, p[0]);
  int64_t i = 0;
  for (; i + kW <= L; i += kW) {
#pragma omp simd
    for (int j = 0; j < kW; ++j) {
      const T v = p[i + j];
      acc.v[j] += v;
      mn[j] = v < mn[j] ? v : mn[j];
      mx[j] = v > mx[j] ? v : mx[j];
    }
  }
  for (; i < L; ++i) acc.v[0] += p[i], mn[0] = std::min(mn[0], p[i]), mx[0] = std::max(mx[0], p[i]);
  acc.counted(L);
  lo = *std::min_element(mn, mn + kW), hi = *std::max_element(mx, mx + kW);
}

// ------------------------------------------------------------------ channels_last: periods
struct Period {
  int64_t P, r, blocks, tail;  // block of r rows (P = r·C elements), full blocks, leftover rows
};
inline Period period(const Geo& g) {
  const int64_t r = std::max<int64_t>(1, (64 + g.C - 1) / g.C);
  return {r * g.C, r, g.L / r, g.L % r};
}
// a per-channel array repeated over a period
template <typename T> std::vector<T> periodic(const T* v, const Period& q, int64_t C) {
  std::vector<T> out(q.P);
  for (int64_t j = 0; j < q.P; ++j) out[j] = v[j % C];
  return out;
}
// out[c] = Σ_q acc[q·C + c]
template <typename T> inline void fold_sum(const T* acc, const Period& q, int64_t C, T* out) {
  for (int64_t c = 0; c < C; ++c) {
    T s = 0;
    for (int64_t t = 0; t < q.r; ++t) s += acc[t * C + c];
    out[c] = s;
  }
}

// Per-thread scratch reused across calls (slot = which buffer). Fresh heap blocks for these
// (N, C) partial results, allocated between the full-size tensors of a training step, fragment
// the allocator's heap and made it return and re-fault the big tensors' pages at every step.
template <typename T> T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> pool[4];
  if (int64_t(pool[slot].size()) < n) pool[slot].resize(n);
  return pool[slot].data();
}

// ------------------------------------------------------------------ top-k of |x − μ| in one channel
template <typename T> struct Cand { T v; int64_t idx; T s; };

template <typename T> struct TopK {
  std::vector<Cand<T>> h;  // min-heap on v: h.front() is the smallest value kept
  int64_t k;
  explicit TopK(int64_t k_) : k(k_) { h.reserve(k_); }
  static bool greater(const Cand<T>& a, const Cand<T>& b) { return a.v > b.v; }
  bool full() const { return int64_t(h.size()) == k; }
  T threshold() const { return full() ? h.front().v : -std::numeric_limits<T>::infinity(); }
  void push(T d, int64_t idx) {
    const T v = abs_of(d);
    if (!full()) {
      h.push_back({v, idx, sign_of(d)});
      std::push_heap(h.begin(), h.end(), greater);
    } else if (v > h.front().v) {  // strict: at ties the element seen first stays, like one of topk's
      std::pop_heap(h.begin(), h.end(), greater);
      h.back() = {v, idx, sign_of(d)};
      std::push_heap(h.begin(), h.end(), greater);
    }
  }
};

// Scan one row into the heap; contiguous rows skip blocks whose largest |x − μ| cannot enter.
template <typename T> void scan_row(const T* x, const Geo& g, int64_t n, int64_t c, T mu, TopK<T>& top) {
  const int64_t o = g.at(n, c, 0), step = g.cl ? g.C : 1;
  int64_t l = 0;
  if (!g.cl) {
    for (; l + kW <= g.L; l += kW) {
      const T* p = x + o + l;
      T m = 0;
#pragma omp simd reduction(max : m)
      for (int j = 0; j < kW; ++j) m = std::max(m, abs_of(p[j] - mu));
      if (m <= top.threshold()) continue;
      for (int j = 0; j < kW; ++j) top.push(p[j] - mu, o + l + j);
    }
  }
  for (; l < g.L; ++l) {
    const T d = x[o + l * step] - mu;
    if (abs_of(d) > top.threshold() || !top.full()) top.push(d, o + l * step);
  }
}

// The k largest |x − μ| of channel c, their flat indices and signs; returns their mean. With
// N > k only the k rows with the largest row extrema are searched: every element above the k-th
// largest row maximum lies in one of them.
template <typename T>
double channel_topk(const T* x, const Geo& g, int64_t c, T mu, int64_t k, const T* rlo, const T* rhi,
                    int64_t* idx_out, T* sgn_out) {
  std::vector<std::pair<T, int64_t>> rows(g.N);  // (largest |x − μ| of the row, sample)
  for (int64_t n = 0; n < g.N; ++n) rows[n] = {std::max(rhi[n * g.C + c] - mu, mu - rlo[n * g.C + c]), n};
  auto first = [](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (g.N > k) {
    std::nth_element(rows.begin(), rows.begin() + (k - 1), rows.end(), first);
    rows.resize(k);
  }
  std::sort(rows.begin(), rows.end(), first);  // the largest first: the heap's threshold rises early
  TopK<T> top(k);
  for (const auto& r : rows) scan_row(x, g, r.second, c, mu, top);
  double total = 0;
  for (int64_t j = 0; j < k; ++j) {
    total += top.h[j].v;
    idx_out[j] = top.h[j].idx;
    sgn_out[j] = top.h[j].s;
  }
  return total / k;
}

template <typename T> const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

}  // namespace nmlp

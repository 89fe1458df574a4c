// Fused training-mode batch norm for CPU: L1, top-k (L∞ is top-1) and mean-only.
//
// x is a canonical view: (N, C, L) contiguous ("nchw") or (N·L, C) contiguous ("channels_last").
// A "row" is one sample's part of one channel (L elements). nchw runs each channel from start to
// end in one task, so its data stays in the core's cache between passes; channels_last runs each
// pass over samples, vectorized over channels, keeping per-(sample, channel) partial results that
// are reduced in a fixed order (the result does not depend on the thread count).
// Forward reads x twice for L1 (mean, then Σ|x − μ| and Σsign(x − μ)) and once for top-k (mean
// and row extrema; the top-k search then only visits the k rows with the largest extrema), then
// writes y. Backward reads (x, dy) once for Σdy and Σdy·(x − μ), then writes dx from dy (and x
// for L1's sign term); mean-only backward never reads x.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

enum Kind : int64_t { kMean = 0, kL1 = 1, kTopk = 2 };
constexpr int64_t kChunk = 4096;  // float partial sums over at most this many terms, then double

struct Geo {
  int64_t N, C, L;
  bool cl;
  int64_t at(int64_t n, int64_t c, int64_t l) const { return cl ? (n * L + l) * C + c : (n * C + c) * L + l; }
};

template <typename T> inline T sign_of(T v) { return T((v > T(0)) - (v < T(0))); }

// ---------------------------------------------------------------- contiguous-row helpers (nchw)
template <typename T> double row_sum(const T* p, int64_t L, T& lo, T& hi) {
  double total = 0;
  T mn = p[0], mx = p[0];
  for (int64_t s = 0; s < L; s += kChunk) {
    const int64_t e = std::min(L, s + kChunk);
    T acc = 0;
#pragma omp simd reduction(+ : acc) reduction(min : mn) reduction(max : mx)
    for (int64_t i = s; i < e; ++i) {
      acc += p[i];
      mn = p[i] < mn ? p[i] : mn;
      mx = p[i] > mx ? p[i] : mx;
    }
    total += acc;
  }
  lo = mn, hi = mx;
  return total;
}

template <typename T> void row_abs_sign(const T* p, int64_t L, T mu, double& sa, double& ss) {
  for (int64_t s = 0; s < L; s += kChunk) {
    const int64_t e = std::min(L, s + kChunk);
    T a = 0, g = 0;
#pragma omp simd reduction(+ : a, g)
    for (int64_t i = s; i < e; ++i) {
      const T d = p[i] - mu;
      a += d < T(0) ? -d : d;
      g += sign_of(d);
    }
    sa += a, ss += g;
  }
}

template <typename T> void row_dy_sums(const T* dy, const T* x, int64_t L, T mu, double& sdy, double& sdyd) {
  for (int64_t s = 0; s < L; s += kChunk) {
    const int64_t e = std::min(L, s + kChunk);
    T a = 0, b = 0;
    if (x) {
#pragma omp simd reduction(+ : a, b)
      for (int64_t i = s; i < e; ++i) a += dy[i], b += dy[i] * (x[i] - mu);
    } else {
#pragma omp simd reduction(+ : a)
      for (int64_t i = s; i < e; ++i) a += dy[i];
    }
    sdy += a, sdyd += b;
  }
}

// ---------------------------------------------------------------- top-k of |x − μ| in one channel
template <typename T> struct Cand { T v; int64_t idx; T s; };

template <typename T> struct TopK {
  std::vector<Cand<T>> h;  // min-heap on v: h.front() is the smallest kept value
  int64_t k;
  static bool greater(const Cand<T>& a, const Cand<T>& b) { return a.v > b.v; }
  void push(T d, int64_t idx) {
    const T v = d < T(0) ? -d : d;
    if ((int64_t)h.size() < k) {
      h.push_back({v, idx, sign_of(d)});
      std::push_heap(h.begin(), h.end(), greater);
    } else if (v > h.front().v) {  // strict: at ties the element seen first stays (one of them)
      std::pop_heap(h.begin(), h.end(), greater);
      h.back() = {v, idx, sign_of(d)};
      std::push_heap(h.begin(), h.end(), greater);
    }
  }
};

// The k largest |x − μ| of channel c. With N ≥ k only the k rows with the largest row extrema are
// searched: every element above the k-th largest row maximum sits in one of them.
template <typename T>
double channel_topk(const T* x, const Geo& g, int64_t c, T mu, int64_t k, const T* rlo, const T* rhi,
                    int64_t* idx_out, T* sgn_out) {
  std::vector<int64_t> rows(g.N);
  for (int64_t n = 0; n < g.N; ++n) rows[n] = n;
  if (g.N > k) {
    auto dev = [&](int64_t n) { return std::max(rhi[n * g.C + c] - mu, mu - rlo[n * g.C + c]); };
    std::nth_element(rows.begin(), rows.begin() + (k - 1), rows.end(), [&](int64_t a, int64_t b) {
      const T da = dev(a), db = dev(b);
      return da > db || (da == db && a < b);
    });
    rows.resize(k);
    std::sort(rows.begin(), rows.end());
  }
  TopK<T> top{{}, k};
  top.h.reserve(k);
  for (int64_t n : rows)
    for (int64_t l = 0; l < g.L; ++l) {
      const int64_t i = g.at(n, c, l);
      top.push(x[i] - mu, i);
    }
  double total = 0;
  for (int64_t j = 0; j < k; ++j) {
    total += top.h[j].v;
    idx_out[j] = top.h[j].idx;
    sgn_out[j] = top.h[j].s;
  }
  return total / k;
}

// ---------------------------------------------------------------- forward
struct Params { int64_t kind, k; double eps, constant; };

template <typename T> struct Fwd {
  const T* x; T* y; const T* w; const T* b;
  T *mu, *scale, *aux;  // aux: L1 mean sign (C), top-k signs (C, k)
  int64_t* idx;
  std::vector<T> rlo, rhi;  // row extrema (N, C), top-k only
  Geo g; Params p;

  double n_total() const { return double(g.N * g.L); }

  // From the channel's sums: scale s = C·stat (without ε) and y = x·a + b with a = γ/(s + ε).
  void finish_stats(int64_t c, double stat, T& a, T& sh) {
    const T m = mu[c];
    if (p.kind == kMean) {
      a = T(1), sh = (b ? b[c] : T(0)) - m;
      return;
    }
    const T s = T(p.constant * stat);
    scale[c] = s;
    const T inv = T(1) / (s + T(p.eps));
    a = w ? inv * w[c] : inv;
    sh = b ? b[c] - m * a : -m * a;
  }

  void nchw_channel(int64_t c) {
    double sum = 0;
    for (int64_t n = 0; n < g.N; ++n) {
      T lo, hi;
      sum += row_sum(x + g.at(n, c, 0), g.L, lo, hi);
      if (p.kind == kTopk) rlo[n * g.C + c] = lo, rhi[n * g.C + c] = hi;
    }
    mu[c] = T(sum / n_total());
    double stat = 0;
    if (p.kind == kL1) {
      double sa = 0, ss = 0;
      for (int64_t n = 0; n < g.N; ++n) row_abs_sign(x + g.at(n, c, 0), g.L, mu[c], sa, ss);
      stat = sa / n_total();
      aux[c] = T(ss / n_total());
    } else if (p.kind == kTopk) {
      stat = channel_topk(x, g, c, mu[c], p.k, rlo.data(), rhi.data(), idx + c * p.k, aux + c * p.k);
    }
    T a, sh;
    finish_stats(c, stat, a, sh);
    for (int64_t n = 0; n < g.N; ++n) {
      const T* xp = x + g.at(n, c, 0);
      T* yp = y + g.at(n, c, 0);
#pragma omp simd
      for (int64_t l = 0; l < g.L; ++l) yp[l] = xp[l] * a + sh;
    }
  }

  void run_nchw() {
    at::parallel_for(0, g.C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) nchw_channel(c);
    });
  }

  // channels_last: per-(sample, channel) partial sums, each sample's rows vectorized over C.
  void run_cl() {
    const int64_t C = g.C, L = g.L;
    std::vector<T> part(g.N * C), part2(p.kind == kL1 ? g.N * C : 0);
    at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        T* s = part.data() + n * C;
        T* lo = p.kind == kTopk ? rlo.data() + n * C : nullptr;
        T* hi = p.kind == kTopk ? rhi.data() + n * C : nullptr;
        const T* xr = x + g.at(n, 0, 0);
        std::fill(s, s + C, T(0));
        if (lo) std::copy(xr, xr + C, lo), std::copy(xr, xr + C, hi);
        for (int64_t l = 0; l < L; ++l) {
          const T* xl = xr + l * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) s[c] += xl[c];
          if (lo) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              lo[c] = xl[c] < lo[c] ? xl[c] : lo[c];
              hi[c] = xl[c] > hi[c] ? xl[c] : hi[c];
            }
          }
        }
      }
    });
    std::vector<double> stat(C, 0.0);
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < g.N; ++n) sum += part[n * C + c];
      mu[c] = T(sum / n_total());
    }
    if (p.kind == kL1) {
      at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          T* sa = part.data() + n * C;
          T* ss = part2.data() + n * C;
          std::fill(sa, sa + C, T(0)), std::fill(ss, ss + C, T(0));
          for (int64_t l = 0; l < L; ++l) {
            const T* xl = x + g.at(n, 0, l);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const T d = xl[c] - mu[c];
              sa[c] += d < T(0) ? -d : d;
              ss[c] += sign_of(d);
            }
          }
        }
      });
      for (int64_t c = 0; c < C; ++c) {
        double sa = 0, ss = 0;
        for (int64_t n = 0; n < g.N; ++n) sa += part[n * C + c], ss += part2[n * C + c];
        stat[c] = sa / n_total();
        aux[c] = T(ss / n_total());
      }
    } else if (p.kind == kTopk) {
      at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          stat[c] = channel_topk(x, g, c, mu[c], p.k, rlo.data(), rhi.data(), idx + c * p.k, aux + c * p.k);
      });
    }
    std::vector<T> a(C), sh(C);
    for (int64_t c = 0; c < C; ++c) finish_stats(c, stat[c], a[c], sh[c]);
    at::parallel_for(0, g.N * L, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* xl = x + r * C;
        T* yl = y + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yl[c] = xl[c] * a[c] + sh[c];
      }
    });
  }
};

// ---------------------------------------------------------------- backward
template <typename T> struct Bwd {
  const T *dy, *x, *mu, *scale, *w, *aux;
  const int64_t* idx;
  T *dx, *gw, *gb;
  Geo g; Params p;

  // dx = a·dy + bs·sign(x − μ) + c0 (+ sparse top-k terms); see fused.py for the derivation.
  void coefficients(int64_t c, double sdy, double sdyd, T& a, T& bs, T& c0, T* coef) const {
    const double n = double(g.N * g.L);
    if (gb) gb[c] = T(sdy);
    if (p.kind == kMean) {
      a = T(1), bs = T(0), c0 = T(-sdy / n);
      return;
    }
    const double inv = double(T(1) / (scale[c] + T(p.eps)));
    const double ac = w ? inv * double(w[c]) : inv;
    if (gw) gw[c] = T(sdyd * inv);
    const double t = -ac * sdyd * inv;  // −S/(s + ε), S = Σ γ·dy·x̂
    a = T(ac), bs = T(0);
    double base = -ac * sdy / n;
    if (p.kind == kL1) {
      const double b = t * p.constant / n;
      bs = T(b), base -= b * double(aux[c]);
    } else {
      double total = 0;
      for (int64_t j = 0; j < p.k; ++j) {
        coef[j] = T(t * p.constant / p.k * double(aux[c * p.k + j]));
        total += coef[j];
      }
      base -= total / n;
    }
    c0 = T(base);
  }

  void scatter(int64_t c, const T* coef) {
    if (p.kind == kTopk)
      for (int64_t j = 0; j < p.k; ++j) dx[idx[c * p.k + j]] += coef[j];
  }

  void dense(const T* dyp, const T* xp, T* dxp, int64_t len, const T* a, const T* bs, const T* c0, T mu_s,
             const T* mu_v, bool vec) const {
    // vec: per-element coefficients (channels_last row); otherwise scalars a[0], bs[0], c0[0]
    if (p.kind == kL1) {
      if (vec) {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) dxp[i] = a[i] * dyp[i] + bs[i] * sign_of(xp[i] - mu_v[i]) + c0[i];
      } else {
        const T aa = a[0], bb = bs[0], cc = c0[0];
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) dxp[i] = aa * dyp[i] + bb * sign_of(xp[i] - mu_s) + cc;
      }
    } else if (vec) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) dxp[i] = a[i] * dyp[i] + c0[i];
    } else {
      const T aa = a[0], cc = c0[0];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) dxp[i] = aa * dyp[i] + cc;
    }
  }

  void run_nchw() {
    at::parallel_for(0, g.C, 1, [&](int64_t c0_, int64_t c1_) {
      std::vector<T> coef(p.k);
      for (int64_t c = c0_; c < c1_; ++c) {
        double sdy = 0, sdyd = 0;
        for (int64_t n = 0; n < g.N; ++n)
          row_dy_sums(dy + g.at(n, c, 0), x ? x + g.at(n, c, 0) : nullptr, g.L, mu[c], sdy, sdyd);
        T a, bs, c0;
        coefficients(c, sdy, sdyd, a, bs, c0, coef.data());
        for (int64_t n = 0; n < g.N; ++n) {
          const int64_t o = g.at(n, c, 0);
          dense(dy + o, x ? x + o : nullptr, dx + o, g.L, &a, &bs, &c0, mu[c], nullptr, false);
        }
        scatter(c, coef.data());
      }
    });
  }

  void run_cl() {
    const int64_t C = g.C, L = g.L;
    std::vector<T> p1(g.N * C), p2(x ? g.N * C : 0);
    at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        T* s1 = p1.data() + n * C;
        T* s2 = x ? p2.data() + n * C : nullptr;
        std::fill(s1, s1 + C, T(0));
        if (s2) std::fill(s2, s2 + C, T(0));
        for (int64_t l = 0; l < L; ++l) {
          const int64_t o = g.at(n, 0, l);
          const T* d = dy + o;
          if (s2) {
            const T* xl = x + o;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) s1[c] += d[c], s2[c] += d[c] * (xl[c] - mu[c]);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) s1[c] += d[c];
          }
        }
      }
    });
    std::vector<T> a(C), bs(C), c0(C), coef(C * p.k);
    for (int64_t c = 0; c < C; ++c) {
      double sdy = 0, sdyd = 0;
      for (int64_t n = 0; n < g.N; ++n) sdy += p1[n * C + c], sdyd += x ? double(p2[n * C + c]) : 0.0;
      coefficients(c, sdy, sdyd, a[c], bs[c], c0[c], coef.data() + c * p.k);
    }
    at::parallel_for(0, g.N * L, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        dense(dy + r * C, x ? x + r * C : nullptr, dx + r * C, C, a.data(), bs.data(), c0.data(), T(0), mu, true);
    });
    for (int64_t c = 0; c < C; ++c) scatter(c, coef.data() + c * p.k);
  }
};

Geo geometry(const at::Tensor& x, int64_t batch) {
  TORCH_CHECK(x.dim() == 2 || x.dim() == 3, "expected a canonical (N, C, L) or (M, C) view");
  TORCH_CHECK(x.is_contiguous(), "expected a contiguous canonical view");
  if (x.dim() == 3) return {x.size(0), x.size(1), x.size(2), false};
  TORCH_CHECK(batch > 0 && x.size(0) % batch == 0, "batch must divide the rows of an (M, C) view");
  return {batch, x.size(1), x.size(0) / batch, true};
}

template <typename T> const T* opt(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

}  // namespace

// Returns (y, mean, scale, aux, idx): scale = C·stat without ε (zeros for mean-only); aux = the
// mean sign of x − μ (L1, (C,)) or the signs at the top-k ((C, k)); idx = top-k flat indices.
std::vector<at::Tensor> lp_forward(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                   const c10::optional<at::Tensor>& bias, int64_t kind, double eps,
                                   double constant, int64_t k, int64_t batch) {
  const Geo g = geometry(x, batch);
  TORCH_CHECK(kind != kTopk || (k >= 1 && k <= g.N * g.L), "k out of range");
  auto y = at::empty_like(x);
  auto mu = at::empty({g.C}, x.options());
  auto scale = at::zeros({g.C}, x.options());
  auto aux = at::empty(kind == kTopk ? std::vector<int64_t>{g.C, k} : std::vector<int64_t>{kind == kL1 ? g.C : 0},
                       x.options());
  auto idx = at::empty({kind == kTopk ? g.C : 0, kind == kTopk ? k : 0}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lp_forward", [&] {
    Fwd<scalar_t> f{x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), opt<scalar_t>(weight), opt<scalar_t>(bias),
                    mu.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), aux.data_ptr<scalar_t>(),
                    idx.data_ptr<int64_t>(), {}, {}, g, {kind, k, eps, constant}};
    if (kind == kTopk) f.rlo.resize(g.N * g.C), f.rhi.resize(g.N * g.C);
    g.cl ? f.run_cl() : f.run_nchw();
  });
  return {y, mu, scale, aux, idx};
}

// Returns (dx, dweight, dbias); x may be undefined for mean-only.
std::vector<at::Tensor> lp_backward(const at::Tensor& dy, const c10::optional<at::Tensor>& x, const at::Tensor& mu,
                                    const at::Tensor& scale, const c10::optional<at::Tensor>& weight,
                                    const at::Tensor& aux, const at::Tensor& idx, int64_t kind, double eps,
                                    double constant, int64_t k, int64_t batch) {
  const Geo g = geometry(dy, batch);
  auto dx = at::empty_like(dy);
  auto gb = at::empty({g.C}, dy.options());
  const bool has_w = weight && weight->defined();
  auto gw = has_w ? at::empty({g.C}, dy.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "lp_backward", [&] {
    Bwd<scalar_t> bw{dy.data_ptr<scalar_t>(), kind == kMean ? nullptr : opt<scalar_t>(x), mu.data_ptr<scalar_t>(),
                     scale.data_ptr<scalar_t>(), opt<scalar_t>(weight), aux.data_ptr<scalar_t>(),
                     idx.data_ptr<int64_t>(), dx.data_ptr<scalar_t>(), has_w ? gw.data_ptr<scalar_t>() : nullptr,
                     gb.data_ptr<scalar_t>(), g, {kind, k, eps, constant}};
    g.cl ? bw.run_cl() : bw.run_nchw();
  });
  return {dx, gw, gb};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lp_forward, "fused Lp batch norm forward (CPU)");
  m.def("backward", &lp_backward, "fused Lp batch norm backward (CPU)");
}

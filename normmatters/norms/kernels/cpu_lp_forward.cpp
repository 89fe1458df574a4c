// Forward of the fused CPU batch norms (layout and conventions in cpu_lp.h).
// Passes over x: the mean (with row extrema for top-k), Σ|x − μ| and Σsign(x − μ) for L1 only,
// the top-k search in k rows per channel, then y = x·a + b, one multiply-add per element.
#include "cpu_lp.h"

#include <functional>

namespace nmlp {
namespace {

template <typename T> struct Forward {
  const T *x, *w, *b;
  T *y, *mu, *scale, *aux;  // aux: L1's mean sign (C), or the top-k's signs (C, k)
  int64_t* idx;
  Geo g;
  Params p;
  T *rlo = nullptr, *rhi = nullptr;  // row extrema (N, C), top-k only

  bool topk() const { return p.kind == kTopk; }

  // y = x·a + sh with a = γ/(s + ε), s = C·stat the scale without ε
  void coefficients(int64_t c, double stat, T& a, T& sh) {
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

  // ---------------------------------------------------------------- nchw, one channel per task
  void nchw_channel(int64_t c) {
    Lanes<T> sum;
    for (int64_t n = 0; n < g.N; ++n) {
      const T* row = x + g.at(n, c, 0);
      if (topk())
        lanes_add_extrema(sum, row, g.L, rlo[n * g.C + c], rhi[n * g.C + c]);
      else
        lanes_add(sum, row, g.L, [](T v) { return v; });
    }
    const T m = mu[c] = T(sum.result() / g.count());
    double stat = 0;
    if (p.kind == kL1) {
      Lanes<T> sa, ss;
      for (int64_t n = 0; n < g.N; ++n) {
        const T* row = x + g.at(n, c, 0);
        lanes_add(sa, row, g.L, [m](T v) { return abs_of(v - m); });
        lanes_add(ss, row, g.L, [m](T v) { return sign_of(v - m); });
      }
      stat = sa.result() / g.count();
      aux[c] = T(ss.result() / g.count());
    } else if (topk()) {
      stat = channel_topk(x, g, c, m, p.k, rlo, rhi, idx + c * p.k, aux + c * p.k);
    }
    T a, sh;
    coefficients(c, stat, a, sh);
    for (int64_t n = 0; n < g.N; ++n) {
      const T* xr = x + g.at(n, c, 0);
      T* yr = y + g.at(n, c, 0);
#pragma omp simd
      for (int64_t l = 0; l < g.L; ++l) yr[l] = xr[l] * a + sh;
    }
  }

  void run_nchw() {
    at::parallel_for(0, g.C, g.channel_grain(), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) nchw_channel(c);
    });
  }

  // ---------------------------------------------------------------- channels_last, by samples
  // Per sample: Σx (and extrema) per channel into part/rlo/rhi rows.
  template <bool Extrema> void cl_sums(int64_t n, const Period& q, T* part) {
    const int64_t C = g.C;
    std::vector<T> s(q.P, T(0)), lo(q.P, std::numeric_limits<T>::infinity()), hi(q.P, -std::numeric_limits<T>::infinity());
    T *sp = s.data(), *lp = lo.data(), *hp = hi.data();
    const T* xs = x + g.at(n, 0, 0);
    auto body = [&](const T* xb, int64_t len) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        sp[j] += xb[j];
        if (Extrema) lp[j] = std::min(lp[j], xb[j]), hp[j] = std::max(hp[j], xb[j]);
      }
    };
    for (int64_t blk = 0; blk < q.blocks; ++blk) body(xs + blk * q.P, q.P);
    for (int64_t t = 0; t < q.tail; ++t) body(xs + (q.blocks * q.r + t) * C, C);
    fold_sum(sp, q, C, part + n * C);
    if (Extrema)
      for (int64_t c = 0; c < C; ++c) {
        T mn = lp[c], mx = hp[c];
        for (int64_t t = 1; t < q.r; ++t) mn = std::min(mn, lp[t * C + c]), mx = std::max(mx, hp[t * C + c]);
        rlo[n * C + c] = mn, rhi[n * C + c] = mx;
      }
  }

  // Per sample: Σ|x − μ| and Σsign(x − μ) per channel.
  void cl_abs(int64_t n, const Period& q, const T* mup, T* pa, T* ps) {
    const int64_t C = g.C;
    std::vector<T> a(q.P, T(0)), s(q.P, T(0));
    T *ap = a.data(), *sp = s.data();
    const T* xs = x + g.at(n, 0, 0);
    auto body = [&](const T* xb, int64_t len) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        const T d = xb[j] - mup[j];
        ap[j] += abs_of(d), sp[j] += sign_of(d);
      }
    };
    for (int64_t blk = 0; blk < q.blocks; ++blk) body(xs + blk * q.P, q.P);
    for (int64_t t = 0; t < q.tail; ++t) body(xs + (q.blocks * q.r + t) * C, C);
    fold_sum(ap, q, C, pa + n * C);
    fold_sum(sp, q, C, ps + n * C);
  }

  // whether any |x − μ| − lim ≥ 0 in a block (lane maxima: a plain max reduction gets gathers)
  static bool over_limit(const T* xb, const T* mup, const T* limp, int64_t len) {
    alignas(64) T m[kW];
    std::fill(m, m + kW, -std::numeric_limits<T>::infinity());
    int64_t i = 0;
    for (; i + kW <= len; i += kW) {
#pragma omp simd
      for (int j = 0; j < kW; ++j) {
        const T v = abs_of(xb[i + j] - mup[i + j]) - limp[i + j];
        m[j] = v > m[j] ? v : m[j];
      }
    }
    for (; i < len; ++i) m[0] = std::max(m[0], abs_of(xb[i] - mup[i]) - limp[i]);
    return *std::max_element(m, m + kW) >= T(0);
  }

  // channels_last top-k (k > 1): a channel's rows are strided, so instead of visiting k rows it
  // streams over x once, keeping only elements with |x − μ| ≥ the k-th largest row maximum (a
  // lower bound of the k-th largest |x − μ|): about k per channel. Hits are merged in memory order.
  void cl_topk(const Period& q, std::vector<double>& stat) {
    const int64_t C = g.C, k = p.k;
    std::vector<T> lim(C, -std::numeric_limits<T>::infinity());
    if (g.N >= k)
      for (int64_t c = 0; c < C; ++c) {
        std::vector<T> dev(g.N);
        for (int64_t n = 0; n < g.N; ++n) dev[n] = std::max(rhi[n * C + c] - mu[c], mu[c] - rlo[n * C + c]);
        std::nth_element(dev.begin(), dev.begin() + (k - 1), dev.end(), std::greater<T>());
        lim[c] = dev[k - 1];
      }
    const std::vector<T> mu_v = periodic(mu, q, C), lim_v = periodic(lim.data(), q, C);
    const T *mup = mu_v.data(), *limp = lim_v.data();
    std::vector<std::vector<std::pair<int64_t, T>>> hits(g.N);  // (flat index, x − μ) per sample
    at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = g.at(n, 0, 0);
        auto body = [&](int64_t off, int64_t len) {
          const T* xb = x + off;
          if (over_limit(xb, mup, limp, len))
            for (int64_t j = 0; j < len; ++j)
              if (abs_of(xb[j] - mup[j]) >= limp[j]) hits[n].push_back({off + j, xb[j] - mup[j]});
        };
        for (int64_t blk = 0; blk < q.blocks; ++blk) body(o + blk * q.P, q.P);
        for (int64_t t = 0; t < q.tail; ++t) body(o + (q.blocks * q.r + t) * C, C);
      }
    });
    std::vector<TopK<T>> tops(C, TopK<T>(k));
    for (const auto& sample : hits)
      for (const auto& h : sample) tops[h.first % C].push(h.second, h.first);
    for (int64_t c = 0; c < C; ++c) {
      double total = 0;
      for (int64_t j = 0; j < k; ++j) {
        const auto& e = tops[c].h[j];
        total += e.v, idx[c * k + j] = e.idx, aux[c * k + j] = e.s;
      }
      stat[c] = total / k;
    }
  }

  void run_cl() {
    const int64_t C = g.C;
    const Period q = period(g);
    T* part = scratch<T>(0, g.N * C);
    T* part2 = scratch<T>(1, p.kind == kL1 ? g.N * C : 0);
    at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) topk() ? cl_sums<true>(n, q, part) : cl_sums<false>(n, q, part);
    });
    auto column = [&](const T* v, int64_t c) {
      double s = 0;
      for (int64_t n = 0; n < g.N; ++n) s += v[n * C + c];
      return s;
    };
    for (int64_t c = 0; c < C; ++c) mu[c] = T(column(part, c) / g.count());
    std::vector<double> stat(C, 0.0);
    if (p.kind == kL1) {
      const std::vector<T> mup = periodic(mu, q, C);
      at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) cl_abs(n, q, mup.data(), part, part2);
      });
      for (int64_t c = 0; c < C; ++c) stat[c] = column(part, c) / g.count(), aux[c] = T(column(part2, c) / g.count());
    } else if (topk() && p.k == 1) {  // L∞: the row maxima give the value; one row per channel holds it
      at::parallel_for(0, C, g.channel_grain(), [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) stat[c] = channel_topk(x, g, c, mu[c], 1, rlo, rhi, idx + c, aux + c);
      });
    } else if (topk()) {
      cl_topk(q, stat);
    }
    std::vector<T> a(C), sh(C);
    for (int64_t c = 0; c < C; ++c) coefficients(c, stat[c], a[c], sh[c]);
    const std::vector<T> ap = periodic(a.data(), q, C), shp = periodic(sh.data(), q, C);
    const T *A = ap.data(), *S = shp.data();
    at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = g.at(n, 0, 0);
        auto body = [&](int64_t off, int64_t len) {
          const T* xb = x + off;
          T* yb = y + off;
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) yb[j] = xb[j] * A[j] + S[j];
        };
        for (int64_t blk = 0; blk < q.blocks; ++blk) body(o + blk * q.P, q.P);
        for (int64_t t = 0; t < q.tail; ++t) body(o + (q.blocks * q.r + t) * C, C);
      }
    });
  }
};

}  // namespace

// Returns (y, mean, scale, aux, idx): scale = C·stat without ε (zeros for mean-only); aux = the
// mean of sign(x − μ) (L1, (C,)) or the signs at the top-k ((C, k)); idx = top-k flat indices.
// y is `out` when given (a contiguous tensor of x's shape and dtype, e.g. the canonical view of
// the caller's output in the model's own shape), else a new tensor.
std::vector<at::Tensor> forward(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                const c10::optional<at::Tensor>& bias, int64_t kind, double eps, double constant,
                                int64_t k, int64_t batch, const c10::optional<at::Tensor>& out) {
  const Geo g = geometry(x, batch);
  TORCH_CHECK(kind != kTopk || (k >= 1 && k <= g.N * g.L), "k must be in [1, elements per channel]");
  const int64_t kk = kind == kTopk ? k : 0;
  if (out.has_value()) {
    TORCH_CHECK(out->sizes() == x.sizes() && out->is_contiguous() && out->scalar_type() == x.scalar_type() &&
                    out->device() == x.device(), "out must be a contiguous tensor of x's shape, dtype and device");
  }
  auto y = out.has_value() ? *out : at::empty_like(x);
  auto mu = at::empty({g.C}, x.options());
  auto scale = at::zeros({g.C}, x.options());
  auto aux = kind == kTopk ? at::empty({g.C, k}, x.options()) : at::empty({kind == kL1 ? g.C : 0}, x.options());
  auto idx = at::empty({kk ? g.C : 0, kk}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nm_lp_forward", [&] {
    Forward<scalar_t> f{x.data_ptr<scalar_t>(), opt_ptr<scalar_t>(weight), opt_ptr<scalar_t>(bias),
                        y.data_ptr<scalar_t>(), mu.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                        aux.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), g, {kind, k, eps, constant}};
    if (kind == kTopk) f.rlo = scratch<scalar_t>(2, g.N * g.C), f.rhi = scratch<scalar_t>(3, g.N * g.C);
    g.cl ? f.run_cl() : f.run_nchw();
  });
  return {y, mu, scale, aux, idx};
}

std::vector<at::Tensor> backward(const at::Tensor& dy, const c10::optional<at::Tensor>& x, const at::Tensor& mu,
                                 const at::Tensor& scale, const c10::optional<at::Tensor>& weight,
                                 const at::Tensor& aux, const at::Tensor& idx, int64_t kind, double eps,
                                 double constant, int64_t k, int64_t batch);

}  // namespace nmlp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &nmlp::forward, "fused batch-norm forward (CPU)", py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("kind"), py::arg("eps"), py::arg("constant"), py::arg("k"), py::arg("batch"),
        py::arg("out") = py::none());
  m.def("backward", &nmlp::backward, "fused batch-norm backward (CPU)");
}

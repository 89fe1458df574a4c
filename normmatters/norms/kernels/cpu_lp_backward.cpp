// Backward of the fused CPU batch norms (layout and conventions in cpu_lp.h; the formulas are
// derived in python_lp.py). With a = γ/(s + ε) per channel:
//     dx = a·dy + b·sign(x − μ) + c0   (+ sparse terms at the top-k elements)
// b is non-zero for L1 only. One pass reads (dy, x) for Σdy and Σdy·(x − μ) (mean-only: dy
// alone); the second writes dx from dy, reading x again only for L1's sign.
#include "cpu_lp.h"

namespace nmlp {
namespace {

template <typename T> struct Backward {
  const T *dy, *x, *mu, *scale, *w, *aux;  // x is null for mean-only
  const int64_t* idx;
  T *dx, *gw, *gb;
  Geo g;
  Params p;

  bool l1() const { return p.kind == kL1; }

  // The per-channel coefficients from the two sums; coef (k) gets the top-k's sparse terms.
  void coefficients(int64_t c, double sdy, double sdyd, T& a, T& b, T& c0, T* coef) const {
    const double n = g.count();
    gb[c] = T(sdy);
    if (p.kind == kMean) {
      a = T(1), b = T(0), c0 = T(-sdy / n);
      return;
    }
    const double inv = double(T(1) / (scale[c] + T(p.eps)));
    const double ac = w ? inv * double(w[c]) : inv;
    if (gw) gw[c] = T(sdyd * inv);
    const double t = -ac * sdyd * inv;  // −S/(s + ε), S = Σ γ·dy·x̂
    double base = -ac * sdy / n;
    b = T(0);
    if (l1()) {
      const double bb = t * p.constant / n;
      b = T(bb), base -= bb * double(aux[c]);
    } else {
      double total = 0;
      for (int64_t j = 0; j < p.k; ++j) total += coef[j] = T(t * p.constant / p.k * double(aux[c * p.k + j]));
      base -= total / n;
    }
    a = T(ac), c0 = T(base);
  }

  void scatter(int64_t c, const T* coef) {
    if (p.kind == kTopk)
      for (int64_t j = 0; j < p.k; ++j) dx[idx[c * p.k + j]] += coef[j];
  }

  // ---------------------------------------------------------------- nchw, one channel per task
  void nchw_channel(int64_t c, T* coef) {
    Lanes<T> s1, s2;
    const T m = mu[c];
    for (int64_t n = 0; n < g.N; ++n) {
      const int64_t o = g.at(n, c, 0);
      lanes_add(s1, dy + o, g.L, [](T v) { return v; });
      if (x) {
        const T *d = dy + o, *xr = x + o;
        int64_t l = 0;
        for (; l + kW <= g.L; l += kW) {
#pragma omp simd
          for (int j = 0; j < kW; ++j) s2.v[j] += d[l + j] * (xr[l + j] - m);
        }
        for (; l < g.L; ++l) s2.v[0] += d[l] * (xr[l] - m);
        s2.counted(g.L);
      }
    }
    T a, b, c0;
    coefficients(c, s1.result(), s2.result(), a, b, c0, coef);
    for (int64_t n = 0; n < g.N; ++n) {
      const int64_t o = g.at(n, c, 0);
      const T* d = dy + o;
      T* out = dx + o;
      if (l1()) {
        const T* xr = x + o;
#pragma omp simd
        for (int64_t l = 0; l < g.L; ++l) out[l] = a * d[l] + b * sign_of(xr[l] - m) + c0;
      } else {
#pragma omp simd
        for (int64_t l = 0; l < g.L; ++l) out[l] = a * d[l] + c0;
      }
    }
    scatter(c, coef);
  }

  void run_nchw() {
    at::parallel_for(0, g.C, g.channel_grain(), [&](int64_t c0, int64_t c1) {
      std::vector<T> coef(p.k);
      for (int64_t c = c0; c < c1; ++c) nchw_channel(c, coef.data());
    });
  }

  // ---------------------------------------------------------------- channels_last, by samples
  void cl_sums(int64_t n, const Period& q, const T* mup, T* p1, T* p2) {
    const int64_t C = g.C;
    std::vector<T> s1(q.P, T(0)), s2(q.P, T(0));
    T *a = s1.data(), *b = s2.data();
    const int64_t o = g.at(n, 0, 0);
    auto body = [&](int64_t off, int64_t len) {
      const T* d = dy + off;
      if (x) {
        const T* xb = x + off;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) a[j] += d[j], b[j] += d[j] * (xb[j] - mup[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) a[j] += d[j];
      }
    };
    for (int64_t blk = 0; blk < q.blocks; ++blk) body(o + blk * q.P, q.P);
    for (int64_t t = 0; t < q.tail; ++t) body(o + (q.blocks * q.r + t) * C, C);
    fold_sum(a, q, C, p1 + n * C);
    if (x) fold_sum(b, q, C, p2 + n * C);
  }

  void cl_dense(int64_t n, const Period& q, const T* mup, const T* A, const T* B, const T* C0) {
    const int64_t o = g.at(n, 0, 0);
    auto body = [&](int64_t off, int64_t len) {
      const T* d = dy + off;
      T* out = dx + off;
      if (l1()) {
        const T* xb = x + off;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) out[j] = A[j] * d[j] + B[j] * sign_of(xb[j] - mup[j]) + C0[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) out[j] = A[j] * d[j] + C0[j];
      }
    };
    for (int64_t blk = 0; blk < q.blocks; ++blk) body(o + blk * q.P, q.P);
    for (int64_t t = 0; t < q.tail; ++t) body(o + (q.blocks * q.r + t) * g.C, g.C);
  }

  void run_cl() {
    const int64_t C = g.C;
    const Period q = period(g);
    const std::vector<T> mup = periodic(mu, q, C);
    T* p1 = scratch<T>(0, g.N * C);
    T* p2 = scratch<T>(1, x ? g.N * C : 0);
    at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) cl_sums(n, q, mup.data(), p1, p2);
    });
    std::vector<T> a(C), b(C), c0(C), coef(C * p.k);
    for (int64_t c = 0; c < C; ++c) {
      double sdy = 0, sdyd = 0;
      for (int64_t n = 0; n < g.N; ++n) sdy += p1[n * C + c], sdyd += x ? double(p2[n * C + c]) : 0.0;
      coefficients(c, sdy, sdyd, a[c], b[c], c0[c], coef.data() + c * p.k);
    }
    const std::vector<T> A = periodic(a.data(), q, C), B = periodic(b.data(), q, C), C0 = periodic(c0.data(), q, C);
    at::parallel_for(0, g.N, g.sample_grain(), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) cl_dense(n, q, mup.data(), A.data(), B.data(), C0.data());
    });
    for (int64_t c = 0; c < C; ++c) scatter(c, coef.data() + c * p.k);
  }
};

}  // namespace

// Returns (dx, dweight, dbias); dweight is undefined without weight, x is unused for mean-only.
std::vector<at::Tensor> backward(const at::Tensor& dy, const c10::optional<at::Tensor>& x, const at::Tensor& mu,
                                 const at::Tensor& scale, const c10::optional<at::Tensor>& weight,
                                 const at::Tensor& aux, const at::Tensor& idx, int64_t kind, double eps,
                                 double constant, int64_t k, int64_t batch) {
  const Geo g = geometry(dy, batch);
  TORCH_CHECK(kind == kMean || (x && x->defined() && x->sizes() == dy.sizes()), "x must match dy");
  auto dx = at::empty_like(dy);
  auto gb = at::empty({g.C}, dy.options());
  const bool has_w = weight && weight->defined();
  auto gw = has_w ? at::empty({g.C}, dy.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "nm_lp_backward", [&] {
    Backward<scalar_t> bw{dy.data_ptr<scalar_t>(), kind == kMean ? nullptr : x->data_ptr<scalar_t>(),
                          mu.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), opt_ptr<scalar_t>(weight),
                          aux.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), dx.data_ptr<scalar_t>(),
                          has_w ? gw.data_ptr<scalar_t>() : nullptr, gb.data_ptr<scalar_t>(), g,
                          {kind, k, eps, constant}};
    g.cl ? bw.run_cl() : bw.run_nchw();
  });
  return {dx, gw, gb};
}

}  // namespace nmlp

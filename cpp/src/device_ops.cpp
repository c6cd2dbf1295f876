// The "emulator" and "cuda" backends (backend.h): every layer operation composed
// from a DeviceBackend's kernel launches, in device memory. Widths up to
// kernels::kMaxWidth run the one-thread-per-example kernels (every chain of a
// level in one launch); wider dense layers run batched GEMMs with elementwise
// epilogue launches.
//
// What crosses between host and device in training: the features (uploaded once
// per evaluation and reused by the opening's gradient; the expand opening's
// padded copy of them), the parameters and the gradient (by the caller and, for
// the regularisers, by ResidualNetwork::regularization). States, adjoints and
// act'(.) stay on the device except as MPI messages between processes, and the
// final states of classifier_logits() (prediction).
#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <vector>

#include "layerparallel/backend.h"
#include "layerparallel/dense.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace {

// The whole number of fine steps in dt (every MGRIT step spans whole fine steps).
int fine_steps(double dt, double h) {
  const long m = std::lround(dt / h);
  LP_REQUIRE(m >= 1 && std::fabs(static_cast<double>(m) * h - dt) <= 1e-9 * dt,
             "a device backend steps whole multiples of h = " << h << ", got dt = " << dt);
  return static_cast<int>(m);
}

class DeviceOps final : public Backend {
 public:
  explicit DeviceOps(std::shared_ptr<DeviceBackend> dev) : dev_(std::move(dev)) {
    LP_REQUIRE(dev_ != nullptr, "a device backend is needed");
  }

  std::string name() const override { return dev_->name(); }
  bool fuses_chains() const override { return true; }
  int max_classes() const override { return kernels::kMaxClasses; }

  // ---- memory and state arithmetic: the device's
  bool host() const override { return false; }
  double* allocate(std::size_t n) override { return dev_->allocate(n); }
  void release(double* p) noexcept override { dev_->release(p); }
  void copy(double* dst, const double* src, std::size_t n) override { dev_->copy(dst, src, n); }
  void zero(double* dst, std::size_t n) override { dev_->zero(dst, n); }
  void add(double* dst, const double* a, std::size_t n) override { dev_->add(dst, a, n); }
  void sum(double* dst, const double* a, const double* b, std::size_t n) override { dev_->sum(dst, a, b, n); }
  void fas(double* g, const double* gf, const double* p, std::size_t n) override { dev_->fas(g, gf, p, n); }
  void sum_batch(double* const* dst, const double* const* a, const double* const* b, int count,
                 std::size_t n) override {
    dev_->sum_batch(dst, a, b, count, n);
  }
  void fas_batch(double* const* g, const double* const* gf, const double* const* p, int count,
                 std::size_t n) override {
    dev_->fas_batch(g, gf, p, count, n);
  }
  double sum_sq_diff(const double* a, const double* b, std::size_t n) const override {
    return dev_->sum_sq_diff(a, b, n);
  }
  void sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                         double* out) const override {
    dev_->sum_sq_diff_batch(a, b, count, n, out);
  }
  void synchronize() override { dev_->synchronize(); }
  void upload(double* dst, const double* src, std::size_t n) override { dev_->upload(dst, src, n); }
  void download(double* dst, const double* src, std::size_t n) const override { dev_->download(dst, src, n); }
  void* allocate_bytes(std::size_t bytes) override { return dev_->allocate_bytes(bytes); }
  void release_bytes(void* p) noexcept override { dev_->release_bytes(p); }
  void upload_bytes(void* dst, const void* src, std::size_t bytes) override { dev_->upload_bytes(dst, src, bytes); }

  // ---- dense
  void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                     int s) override;
  void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              const double* lam0, int s, double* gW, double* gb) override;
  void expand_opening(int w, int nf, const double* X, double* U0, int s) override {
    std::vector<double> u(static_cast<std::size_t>(s) * w);
    layerparallel::expand_opening(w, nf, X, u.data(), s);
    dev_->upload(U0, u.data(), u.size());
  }
  void dense_step(const DenseLayers& L, int n, double dt, const double* in, double* out, int s,
                  double* deriv) override {
    if (deriv) dense_deriv(L, n, in, deriv, s);
    const int idx[2] = {n, n + fine_steps(dt, L.h)};
    double* outs[1] = {out};
    const Propagator::Chain c{idx, 1, in, outs, nullptr};
    forward(L, &c, 1, s);
  }
  void dense_adjoint_step(const DenseLayers& L, int n, double dt, const double* u, const double* lam_next,
                          double* lam, int s, const double* deriv, double* gK, double* gb, double gscale) override;
  void dense_deriv(const DenseLayers& L, int n, const double* u, double* deriv, int s) override;
  bool dense_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, double* derivs,
                    int first) override;
  bool dense_adjoint_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                            const double* derivs, int first, const double* const* states, double* slots) override {
    LP_CHECK(slots == nullptr, "a device backend has no fused gradient slots");
    if (derivs == nullptr) return false;  // act'(.) per step from the states: dense_adjoint_step
    (void)states;
    adjoint(L, chains, n, s, derivs, first);
    return true;
  }
  std::size_t dense_grad_slot_size(int) const override { return 0; }
  void dense_reduce_slots(const DenseLayers&, const double*, int, int, int, double*, double*) override {
    LP_CHECK(false, "a device backend has no fused gradient slots (dense_grad_slot_size() is 0)");
  }
  /// The adjoint kernels read act'(.): it is always kept.
  bool dense_keeps_derivs(int) const override { return true; }

  // ---- classifier
  double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                    int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) override {
    return dev_->classifier(w, nc, Wc, mu, U, labels, s, scale, correct, lam, gW, gmu);
  }
  // The logits are small and read on the host: the final states go down once.
  void classifier_logits(int w, int nc, const double* Wc, const double* mu, const double* U, int s,
                         double* Z) override {
    std::vector<double> u(static_cast<std::size_t>(s) * w), wc(static_cast<std::size_t>(nc) * w), m(nc);
    dev_->download(u.data(), U, u.size());
    dev_->download(wc.data(), Wc, wc.size());
    dev_->download(m.data(), mu, m.size());
    layerparallel::classifier_logits(w, nc, wc.data(), m.data(), u.data(), s, Z);
  }

  // ---- conv: one launch per step
  void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                 const double* in, double* out, int s, double* deriv) override {
    dev_->conv_step(act, sh, K, bias, dt, in, out, s, deriv);
  }
  void conv_adjoint_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                         const double* u, const double* lam_next, double* lam, int s, const double* deriv,
                         double* gK, double* gb, double gscale) override {
    const std::size_t sz = static_cast<std::size_t>(s) * sh.size();
    if (deriv == nullptr) {  // act'(.) from a step of size 0 (its result is not needed)
      double* d = scratch(kDeriv, sz);
      dev_->conv_step(act, sh, K, bias, 0.0, u, scratch(kWork, sz), s, d);
      deriv = d;
    }
    if (lam) dev_->conv_adjoint(sh, K, dt, deriv, lam_next, lam, s);
    if (gK) dev_->conv_gradient(sh, u, lam_next, deriv, s, gK, gb, gscale);
  }
  void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) override {
    dev_->replicate_opening(sh, features(pixels, static_cast<std::size_t>(s) * sh.pixels(), true), U0, s);
  }
  bool has_conv_opening() const override { return false; }
  void conv_opening(Activation, const ConvShape&, const double*, const double*, const double*, double*,
                    int) override {
    LP_CHECK(false, "the learned conv opening has no device kernel (has_conv_opening() is false)");
  }
  void conv_opening_gradient(Activation, const ConvShape&, const double*, const double*, const double*,
                             const double*, int, double*, double*) override {
    LP_CHECK(false, "the learned conv opening has no device kernel (has_conv_opening() is false)");
  }

 private:
  enum Scratch { kWork = 0, kDeriv = 1, kProduct = 2, kScratch = 3 };
  double* scratch(Scratch k, std::size_t n) {
    if (scratch_[k].size() < n) scratch_[k] = StateBuffer(*dev_, n);
    return scratch_[k].data();
  }
  // X (host, n doubles) in device memory. A new evaluation (fresh = true, the
  // opening) always uploads: the caller may have refilled X in place; the
  // opening's gradient then reuses that upload.
  const double* features(const double* X, std::size_t n, bool fresh) {
    if (features_.size() < n) {
      features_ = StateBuffer(*dev_, n);
      features_of_ = nullptr;
    }
    if (fresh || X != features_of_) {
      dev_->upload(features_.data(), X, n);
      features_of_ = X;
    }
    return features_.data();
  }
  static bool wide(const DenseLayers& L) { return L.w > kernels::kMaxWidth; }
  static const double* Kn(const DenseLayers& L, int n) { return L.K + static_cast<std::size_t>(n) * L.w * L.w; }

  void forward(const DenseLayers& L, const Propagator::Chain* chains, int n, int s);
  void adjoint(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, const double* derivs, int first);
  void wide_forward(const DenseLayers& L, const Propagator::Chain* chains, int n, int s);
  void wide_adjoint(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, const double* derivs,
                    int first);

  std::shared_ptr<DeviceBackend> dev_;
  StateBuffer scratch_[kScratch];
  StateBuffer features_;
  const double* features_of_ = nullptr;
};

// Any number of chains: the device splits its launches (launch_plan.h).
void DeviceOps::forward(const DenseLayers& L, const Propagator::Chain* chains, int n, int s) {
  if (wide(L))
    wide_forward(L, chains, n, s);
  else
    dev_->block_propagate(L.act, L.w, s, L.h, L.K, L.bias, chains, n);
}

void DeviceOps::adjoint(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, const double* derivs,
                        int first) {
  if (wide(L))
    wide_adjoint(L, chains, n, s, derivs, first);
  else
    dev_->block_adjoint(L.w, s, L.layers, L.h, L.K, derivs, first, chains, n);
}

// The dense opening: one thread per example for narrow networks; for wide ones
// z = W x (a GEMM over the uploaded features), U0 = act(z + b).
void DeviceOps::dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              double* U0, int s) {
  const double* x = features(X, static_cast<std::size_t>(s) * nf, true);
  if (w <= kernels::kMaxWidth) {
    dev_->dense_opening(act, w, nf, W, b, x, U0, s);
    return;
  }
  double* Z[1] = {U0};
  dev_->gemm_batched(true, false, w, s, nf, 1.0, &W, nf, &x, nf, 0.0, Z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Activate;
  e.z = {U0};
  e.out = {U0};
  e.bias = {b};
  dev_->wide_epilogue(act, w, s, e);
}

// d = act'(W x + b) * lam0: narrow networks reduce per block; wide ones take
// gb += sum d (a dot of act'(.) with lam0) and gW += d x^T (a GEMM).
void DeviceOps::dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b,
                                       const double* X, const double* lam0, int s, double* gW, double* gb) {
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  const double* x = features(X, static_cast<std::size_t>(s) * nf, false);
  if (w <= kernels::kMaxWidth) {
    dev_->dense_opening_gradient(act, w, nf, W, b, x, lam0, s, gW, gb);
    return;
  }
  double* z = scratch(kWork, sz);
  double* D = scratch(kProduct, sz);
  dev_->gemm_batched(true, false, w, s, nf, 1.0, &W, nf, &x, nf, 0.0, &z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Deriv;
  e.z = {z};
  e.out = {z};
  e.bias = {b};
  dev_->wide_epilogue(act, w, s, e);
  dev_->dot_accumulate(z, lam0, sz, 1.0, gb);
  DeviceBackend::WideBatch p;
  p.op = kernels::WideOp::Product;
  p.a = {z};
  p.b = {lam0};
  p.z = {D};
  dev_->wide_epilogue(act, w, s, p);
  const double* Dp = D;
  dev_->gemm_batched(false, true, nf, w, s, 1.0, &x, nf, &Dp, w, 1.0, &gW, nf, 1);
}

void DeviceOps::dense_deriv(const DenseLayers& L, int n, const double* u, double* deriv, int s) {
  if (!wide(L)) {
    dev_->layer_derivs(L.act, L.w, s, L.K, L.bias, n, 1, &u, deriv);
    return;
  }
  // z = K_n u (a GEMM), deriv = act'(z + b_n).
  const int w = L.w;
  const double* A[1] = {Kn(L, n)};
  double* Z[1] = {scratch(kWork, static_cast<std::size_t>(s) * w)};
  dev_->gemm_batched(true, false, w, s, w, 1.0, A, w, &u, w, 0.0, Z, w, 1);
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Deriv;
  e.z = {Z[0]};
  e.out = {deriv};
  e.bias = {L.bias + n};
  dev_->wide_epilogue(L.act, w, s, e);
}

void DeviceOps::dense_adjoint_step(const DenseLayers& L, int n, double dt, const double* u, const double* lam_next,
                                   double* lam, int s, const double* deriv, double* gK, double* gb, double gscale) {
  const int w = L.w;
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  if (deriv == nullptr) {
    double* d = scratch(kDeriv, sz);
    dense_deriv(L, n, u, d, s);
    deriv = d;
  }
  if (lam) {
    // Reversed index k = N - n: the step k0 -> k1 = N - n uses layer n.
    const int k1 = L.layers - n;
    const int idx[2] = {k1 - fine_steps(dt, L.h), k1};
    double* outs[1] = {lam};
    const Propagator::Chain c{idx, 1, lam_next, outs, nullptr};
    adjoint(L, &c, 1, s, deriv, n);
  }
  if (!gK) return;
  if (!wide(L)) {
    dev_->layer_gradient(w, s, u, lam_next, deriv, gK, gb, gscale);
    return;
  }
  // D = deriv * lam_next; gK += gscale D^T u (a GEMM); gb += gscale sum(D).
  DeviceBackend::WideBatch e;
  e.op = kernels::WideOp::Product;
  e.a = {deriv};
  e.b = {lam_next};
  e.z = {scratch(kProduct, sz)};
  dev_->wide_epilogue(L.act, w, s, e);
  const double* A[1] = {u};
  const double* B[1] = {e.z[0]};
  double* C[1] = {gK};
  dev_->gemm_batched(false, true, w, w, s, gscale, A, w, B, w, 1.0, C, w, 1);
  dev_->dot_accumulate(deriv, lam_next, sz, gscale, gb);
}

bool DeviceOps::dense_chains(const DenseLayers& L, const Propagator::Chain* chains, int n, int s, double* derivs,
                             int first) {
  forward(L, chains, n, s);
  if (!derivs) return true;
  // act'(.) of the layers stepped through, from the states the chains just wrote.
  const std::size_t sz = static_cast<std::size_t>(s) * L.w;
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    std::vector<const double*> u(c.count);
    for (int k = 0; k < c.count; ++k) {
      LP_CHECK(c.idx[k + 1] == c.idx[k] + 1, "dense_chains: act' is captured on unit steps only");
      u[k] = k == 0 ? c.in : c.outs[k - 1];
    }
    double* d = derivs + static_cast<std::size_t>(c.idx[0] - first) * sz;
    if (!wide(L)) {
      dev_->layer_derivs(L.act, L.w, s, L.K, L.bias, c.idx[0], c.count, u.data(), d);
    } else {
      for (int k = 0; k < c.count; ++k) dense_deriv(L, c.idx[k], u[k], d + static_cast<std::size_t>(k) * sz, s);
    }
  }
  return true;
}

// Wide layers: step k of every chain at once, as one batched GEMM (z_q = K_{n_q}
// cur_q) and one epilogue launch over the chains.
void DeviceOps::wide_forward(const DenseLayers& L, const Propagator::Chain* chains, int n, int s) {
  const int w = L.w;
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  int steps = 0;
  for (int q = 0; q < n; ++q) steps = std::max(steps, chains[q].count);
  double* z = scratch(kWork, static_cast<std::size_t>(n) * sz);
  for (int k = 0; k < steps; ++k) {
    std::vector<const double*> A, B;
    DeviceBackend::WideBatch e;
    e.op = kernels::WideOp::Step;
    for (int q = 0; q < n; ++q) {
      const Propagator::Chain& c = chains[q];
      if (k >= c.count) continue;
      const double* cur = k == 0 ? c.in : c.outs[k - 1];
      A.push_back(Kn(L, c.idx[k]));
      B.push_back(cur);
      e.z.push_back(z + e.z.size() * sz);
      e.a.push_back(cur);
      e.out.push_back(c.outs[k]);
      e.rhs.push_back(c.rhs ? c.rhs[k] : nullptr);
      e.dt.push_back((c.idx[k + 1] - c.idx[k]) * L.h);
      e.bias.push_back(L.bias + c.idx[k]);
    }
    dev_->gemm_batched(true, false, w, s, w, 1.0, A.data(), w, B.data(), w, 0.0, e.z.data(), w,
                       static_cast<int>(A.size()));
    dev_->wide_epilogue(L.act, w, s, e);
  }
}

// The adjoint: z_q = dt act'(.) * cur_q and out_q = cur_q (+ rhs), then out_q += K^T z_q.
void DeviceOps::wide_adjoint(const DenseLayers& L, const Propagator::Chain* chains, int n, int s,
                             const double* derivs, int first) {
  const int w = L.w, N = L.layers;
  const std::size_t sz = static_cast<std::size_t>(s) * w;
  int steps = 0;
  for (int q = 0; q < n; ++q) steps = std::max(steps, chains[q].count);
  double* z = scratch(kWork, static_cast<std::size_t>(n) * sz);
  for (int k = 0; k < steps; ++k) {
    std::vector<const double*> A;
    DeviceBackend::WideBatch e;
    e.op = kernels::WideOp::AdjointPre;
    for (int q = 0; q < n; ++q) {
      const Propagator::Chain& c = chains[q];
      if (k >= c.count) continue;
      const int n0 = N - c.idx[k + 1];
      A.push_back(Kn(L, n0));
      e.a.push_back(k == 0 ? c.in : c.outs[k - 1]);
      e.b.push_back(derivs + static_cast<std::ptrdiff_t>(n0 - first) * static_cast<std::ptrdiff_t>(sz));
      e.z.push_back(z + e.z.size() * sz);
      e.out.push_back(c.outs[k]);
      e.rhs.push_back(c.rhs ? c.rhs[k] : nullptr);
      e.dt.push_back((c.idx[k + 1] - c.idx[k]) * L.h);
    }
    dev_->wide_epilogue(L.act, w, s, e);
    std::vector<const double*> Z(e.z.begin(), e.z.end());
    dev_->gemm_batched(false, false, w, s, w, 1.0, A.data(), w, Z.data(), w, 1.0, e.out.data(), w,
                       static_cast<int>(A.size()));
  }
}

}  // namespace

std::shared_ptr<Backend> backend_over(std::shared_ptr<DeviceBackend> device) {
  return std::make_shared<DeviceOps>(std::move(device));
}

std::shared_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return cpu_backend();
  if (name == "emulator" || name == "cuda") return backend_over(make_device_backend(name));
  LP_REQUIRE(false, "device must be one of cpu, emulator, cuda, got '" << name << "'");
}

}  // namespace layerparallel

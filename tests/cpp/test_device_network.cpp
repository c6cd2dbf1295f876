// Device-resident training (DeviceResNetMgrit) on the "emulator" device: the
// CUDA kernel bodies over their launch grids on the CPU, driven by the same
// orchestration as on a GPU (states in the backend's memory, every interval of
// a level in one block launch, right-hand sides on coarse levels, staged
// messages between processes). Compared with the CPU ResNetMgrit, which the
// other tests check against serial sweeps and finite differences. The
// CudaDevice cases repeat the comparison on a GPU and skip without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "layerparallel/conv_network.h"
#include "layerparallel/cuda.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/device_solver.h"
#include "layerparallel/resnet_mgrit.h"
#include "dense_problem.h"
#include "near_vec.h"
#include "reference.h"
#include "thread_comm.h"

using namespace layerparallel;
using namespace lptest;

namespace {

using Problem = DenseProblem;

Problem make_problem(int N, int w, Activation act, Opening op, int s, unsigned seed) {
  NetworkSpec spec;
  spec.n_features = 2;
  spec.n_classes = 5;
  spec.width = w;
  spec.layers = N;
  spec.T = 2.0;
  spec.activation = act;
  spec.opening = op;
  return dense_problem(spec, s, seed, 0.7);
}

MgritOptions options(int m, const std::string& store = "all", int levels = 10) {
  MgritOptions o;
  o.cfactor = m;
  o.min_coarse = 2;
  o.max_levels = levels;
  o.relax = {"F", "FCF"};
  o.store = store;
  o.threads = 1;
  o.max_iter = 60;
  return o;
}

std::vector<double> scaled(const std::vector<double>& t, int call) {
  std::vector<double> r = t;
  for (std::size_t k = 0; k < r.size(); ++k) r[k] *= 1.0 + 0.02 * call * std::sin(double(k));
  return r;
}

// Three evaluations (exact, then warm-started budgets) on the CPU and on `device`:
// objectives, accuracy, gradients, residual histories and trajectories agree.
void compare_with_cpu(const Problem& p, const MgritOptions& o, const Regularization& reg, const std::string& device,
                      const int budgets[3][2]) {
  DenseResNet net(p.spec);
  const std::size_t np = net.layout().size, sz = net.state_size(p.s);
  ResNetMgrit cpu(net, p.s, o, o);
  DeviceResNetMgrit dev(p.spec, p.s, o, o, nullptr, device);
  cpu.set_relative_tolerance(1e-10);
  dev.solver().set_relative_tolerance(1e-10);
  for (int call = 0; call < 3; ++call) {
    SCOPED_TRACE("evaluation " + std::to_string(call));
    const std::vector<double> t = scaled(p.theta, call);
    std::vector<double> gc(np), gd(np, 123.0);
    const MgritEvaluation a = cpu.evaluate(t.data(), p.X.data(), p.y.data(), reg, gc.data(), budgets[call][0],
                                           budgets[call][1]);
    const MgritEvaluation b = dev.evaluate(t.data(), p.X.data(), p.y.data(), reg, gd.data(), budgets[call][0],
                                           budgets[call][1]);
    EXPECT_NEAR(b.eval.objective, a.eval.objective, 1e-12 * std::fabs(a.eval.objective));
    EXPECT_NEAR(b.eval.regularization, a.eval.regularization, 1e-12 * (1 + std::fabs(a.eval.regularization)));
    EXPECT_EQ(b.eval.correct, a.eval.correct);
    EXPECT_TRUE(near_vec(gd, gc, 1e-11));
    EXPECT_EQ(b.forward.cycles, a.forward.cycles);
    EXPECT_EQ(b.adjoint.cycles, a.adjoint.cycles);
    EXPECT_EQ(b.forward.steps, a.forward.steps);
    // Residual histories (forward and adjoint) agree to 1e-9 relative, down to the
    // rounding floor of the states (1e-12 of the first residual) where MGRIT has converged.
    for (const auto& [ra, rb] : {std::make_pair(&a.forward.residuals, &b.forward.residuals),
                                 std::make_pair(&a.adjoint.residuals, &b.adjoint.residuals)}) {
      ASSERT_EQ(rb->size(), ra->size());
      double floor = 0.0;
      for (double r : *ra)
        if (std::isfinite(r) && floor == 0.0) floor = 1e-12 * r;
      for (std::size_t k = 0; k < ra->size(); ++k)
        if (std::isfinite((*ra)[k])) EXPECT_NEAR((*rb)[k], (*ra)[k], 1e-9 * (*ra)[k] + floor) << "cycle " << k;
    }
    for (int n : {0, p.spec.layers / 2, p.spec.layers}) {
      std::vector<double> u(sz), l(sz);
      dev.state(n, u.data());
      dev.adjoint(n, l.data());
      EXPECT_TRUE(near_vec(u, std::vector<double>(cpu.state(n), cpu.state(n) + sz), 1e-12)) << "u_" << n;
      EXPECT_TRUE(near_vec(l, std::vector<double>(cpu.adjoint(n), cpu.adjoint(n) + sz), 1e-11)) << "lambda_" << n;
    }
  }
}

const int kBudgets[3][2] = {{-1, -1}, {2, 1}, {1, 1}};

using Shape = std::tuple<int, int, int, Activation, Opening>;  // N, width, batch, activation, opening

class EmulatorDevice : public ::testing::TestWithParam<Shape> {};

TEST_P(EmulatorDevice, TrainingEvaluationsMatchCpu) {
  const auto [N, w, s, act, op] = GetParam();
  const Problem p = make_problem(N, w, act, op, s, 40 + N + w + s);
  compare_with_cpu(p, options(4), Regularization{1e-3, 2e-3, 1e-2}, "emulator", kBudgets);
}

// Widths 8/16/32 run the compile-time kernels, 5 the runtime width; batches
// that leave a partial block (37, 130); depths not divisible by the factor.
INSTANTIATE_TEST_SUITE_P(Shapes, EmulatorDevice,
                         ::testing::Values(Shape{16, 8, 37, Activation::SmoothRelu, Opening::Dense},
                                           Shape{19, 5, 130, Activation::Tanh, Opening::Dense},
                                           Shape{12, 16, 20, Activation::Relu, Opening::Expand},
                                           Shape{9, 32, 3, Activation::Tanh, Opening::Dense},
                                           // Wide layers: batched GEMMs (the reference GEMM body on the
                                           // emulator) with the epilogue kernels.
                                           Shape{10, 33, 21, Activation::SmoothRelu, Opening::Dense},
                                           Shape{13, 48, 70, Activation::Tanh, Opening::Expand}));

TEST(EmulatorDeviceOptions, StorageCyclesAndOneLevel) {
  const Problem p = make_problem(24, 8, Activation::Tanh, Opening::Dense, 33, 7);
  const Regularization reg{1e-3, 1e-3, 1e-3};
  MgritOptions cp = options(2, "cpoints");
  compare_with_cpu(p, cp, reg, "emulator", kBudgets);
  MgritOptions fc = options(3);
  fc.cycle = "F";
  fc.relax = {"FCF"};
  compare_with_cpu(p, fc, reg, "emulator", kBudgets);
  // One level: the serial forward and backward sweeps as block launches.
  compare_with_cpu(p, options(2, "all", 1), reg, "emulator", kBudgets);
}

// Convolutional networks (replicate opening): the emulated device against the CPU.
void compare_conv(const ConvSpec& spec, int s, const MgritOptions& o, const Regularization& reg,
                  const std::string& device) {
  ConvResNet net(spec);
  const std::size_t np = net.param_size(), sz = net.state_size(s);
  const std::vector<double> theta = random_vector(np, -0.3, 0.3, 17);
  const std::vector<double> X = random_vector(static_cast<std::size_t>(s) * spec.height * spec.width, 0, 255, 18);
  std::vector<std::int64_t> y(s);
  for (int i = 0; i < s; ++i) y[i] = (3 * i + 1) % spec.n_classes;
  ResNetMgrit cpu(net, s, o, o);
  DeviceResNetMgrit dev(spec, s, o, o, nullptr, device);
  cpu.set_relative_tolerance(1e-10);
  dev.solver().set_relative_tolerance(1e-10);
  for (int call = 0; call < 3; ++call) {
    SCOPED_TRACE("evaluation " + std::to_string(call));
    const std::vector<double> t = scaled(theta, call);
    std::vector<double> gc(np), gd(np, 5.0);
    const MgritEvaluation a = cpu.evaluate(t.data(), X.data(), y.data(), reg, gc.data(), kBudgets[call][0],
                                           kBudgets[call][1]);
    const MgritEvaluation b = dev.evaluate(t.data(), X.data(), y.data(), reg, gd.data(), kBudgets[call][0],
                                           kBudgets[call][1]);
    EXPECT_NEAR(b.eval.objective, a.eval.objective, 1e-12 * std::fabs(a.eval.objective));
    EXPECT_EQ(b.eval.correct, a.eval.correct);
    EXPECT_EQ(b.forward.cycles, a.forward.cycles);
    EXPECT_EQ(b.adjoint.cycles, a.adjoint.cycles);
    EXPECT_TRUE(near_vec(gd, gc, 1e-11));
    for (int n : {0, spec.layers}) {
      std::vector<double> u(sz), l(sz);
      dev.state(n, u.data());
      dev.adjoint(n, l.data());
      EXPECT_TRUE(near_vec(u, std::vector<double>(cpu.state(n), cpu.state(n) + sz), 1e-12)) << "u_" << n;
      EXPECT_TRUE(near_vec(l, std::vector<double>(cpu.adjoint(n), cpu.adjoint(n) + sz), 1e-11)) << "lambda_" << n;
    }
  }
}

TEST(EmulatorDeviceConv, TrainingEvaluationsMatchCpu) {
  ConvSpec spec;
  spec.channels = 2;
  spec.height = 5;
  spec.width = 4;
  spec.n_classes = 3;
  spec.layers = 8;
  spec.T = 1.0;
  spec.activation = Activation::Tanh;
  compare_conv(spec, 7, options(2), Regularization{1e-3, 1e-3, 1e-3}, "emulator");  // bias per pixel
  spec.bias_per_channel = true;
  spec.channels = 3;
  spec.layers = 9;
  spec.activation = Activation::SmoothRelu;
  compare_conv(spec, 4, options(3, "cpoints"), Regularization{}, "emulator");
  ConvSpec learned = spec;
  learned.conv_opening = true;
  EXPECT_THROW(DeviceResNetMgrit(learned, 4, options(2), options(2), nullptr, "emulator"), std::invalid_argument);
}

TEST(EmulatorDeviceOptions, ThreadsOverIntervalsAreIgnoredForDeviceStates) {
  // A ResNetMgrit built directly on a device network with threads > 1 (and store =
  // cpoints, whose sweeps do not fuse): the engine must still drive the device from
  // one thread, so the results are the CPU's.
  const Problem p = make_problem(32, 40, Activation::Tanh, Opening::Dense, 11, 8);
  MgritOptions o = options(4, "cpoints");
  o.threads = 4;
  DenseResNet host(p.spec);
  ResNetMgrit cpu(host, p.s, o, o);
  auto dev = backend_over(std::shared_ptr<DeviceBackend>(make_emulated_backend()));
  DenseResNet net(p.spec, dev);
  ResNetMgrit solver(net, p.s, o, o);
  StateBuffer theta(*dev, p.theta.size()), g(*dev, p.theta.size());
  dev->upload(theta.data(), p.theta.data(), p.theta.size());
  std::vector<double> gc(p.theta.size()), gd(p.theta.size());
  for (int call = 0; call < 2; ++call) {
    const double a = cpu.evaluate(p.theta.data(), p.X.data(), p.y.data(), Regularization{}, gc.data(), 2, 2).eval.objective;
    const double b = solver.evaluate(theta.data(), p.X.data(), p.y.data(), Regularization{}, g.data(), 2, 2).eval.objective;
    dev->download(gd.data(), g.data(), gd.size());
    EXPECT_NEAR(b, a, 1e-12 * std::fabs(a));
    EXPECT_TRUE(near_vec(gd, gc, 1e-11));
  }
}

TEST(EmulatorDeviceOptions, GradientMatchesFiniteDifferences) {
  const Problem p = make_problem(12, 8, Activation::Tanh, Opening::Dense, 17, 3);
  const Regularization reg{1e-3, 1e-3, 1e-3};
  DeviceResNetMgrit dev(p.spec, p.s, options(2), options(2), nullptr, "emulator");
  dev.solver().set_relative_tolerance(1e-14);
  const std::size_t np = p.theta.size();
  std::vector<double> g(np);
  dev.evaluate(p.theta.data(), p.X.data(), p.y.data(), reg, g.data(), -1, -1);
  const DenseResNet net(p.spec);
  const ParamLayout& L = net.layout();
  // Entries in every parameter block: opening, a weight, a bias, the classifier.
  for (std::size_t k : {L.opening_weight + 1, L.weights + 70, L.biases + 5, L.classifier_weight + 3,
                        L.classifier_bias + 2}) {
    const double e = 1e-6;
    std::vector<double> tp = p.theta, tm = p.theta;
    tp[k] += e;
    tm[k] -= e;
    const double fp = dev.evaluate(tp.data(), p.X.data(), p.y.data(), reg, nullptr, -1, -1).eval.objective;
    const double fm = dev.evaluate(tm.data(), p.X.data(), p.y.data(), reg, nullptr, -1, -1).eval.objective;
    EXPECT_NEAR(g[k], (fp - fm) / (2 * e), 1e-7 * (1 + std::fabs(g[k]))) << "parameter " << k;
  }
}

class EmulatorDistributed : public ::testing::TestWithParam<std::tuple<int, std::string, std::string>> {};

TEST_P(EmulatorDistributed, LayersMatchOneCpuProcess) {
  // Three processes, each with its own emulated device: states stay in device
  // memory and the neighbour messages are staged through host copies (or handed
  // to a device-aware communicator). Width 40 runs the GEMM path.
  const auto& [w, store, cycle] = GetParam();
  const int N = 18, P = 3;
  const Problem p = make_problem(N, w, Activation::Tanh, Opening::Dense, 21, 9);
  MgritOptions o = options(2, store);
  o.cycle = cycle;
  const Regularization reg{};
  DenseResNet net(p.spec);
  const std::size_t np = net.layout().size;
  ResNetMgrit cpu(net, p.s, o, o);
  cpu.set_relative_tolerance(1e-10);
  std::vector<std::vector<double>> want(3, std::vector<double>(np));
  std::vector<double> want_obj(3);
  for (int call = 0; call < 3; ++call) {
    const auto t = scaled(p.theta, call);
    want_obj[call] = cpu.evaluate(t.data(), p.X.data(), p.y.data(), reg, want[call].data(), kBudgets[call][0],
                                  kBudgets[call][1])
                         .eval.objective;
  }
  for (bool aware : {false, true}) {  // staged through host copies / handed to a device-aware Comm
  SCOPED_TRACE(aware ? "device-aware comm" : "staged messages");
  ThreadWorld world(P);
  std::vector<std::vector<std::vector<double>>> got(P, std::vector<std::vector<double>>(3, std::vector<double>(np)));
  std::vector<std::vector<double>> obj(P, std::vector<double>(3));
  run_ranks(P, [&](int rank) {
    ThreadComm comm(world, rank, aware);
    DeviceResNetMgrit dev(p.spec, p.s, o, o, &comm, "emulator");
    dev.solver().set_relative_tolerance(1e-10);
    for (int call = 0; call < 3; ++call) {
      const auto t = scaled(p.theta, call);
      obj[rank][call] = dev.evaluate(t.data(), p.X.data(), p.y.data(), reg, got[rank][call].data(),
                                     kBudgets[call][0], kBudgets[call][1])
                            .eval.objective;
    }
  });
  for (int call = 0; call < 3; ++call) {
    std::vector<double> sum(np, 0.0);
    for (int r = 0; r < P; ++r) {
      EXPECT_NEAR(obj[r][call], want_obj[call], 1e-12 * std::fabs(want_obj[call]));
      for (std::size_t k = 0; k < np; ++k) sum[k] += got[r][call][k];
    }
    EXPECT_TRUE(near_vec(sum, want[call], 1e-11)) << "evaluation " << call;
  }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmulatorDistributed,
                         ::testing::Values(std::make_tuple(8, std::string("all"), std::string("V")),
                                           std::make_tuple(40, std::string("cpoints"), std::string("V")),
                                           std::make_tuple(8, std::string("cpoints"), std::string("F"))));

TEST(EmulatorDeviceOptions, FusesTheIntervalsOfALevel) {
  // The engine hands the device every middle interval of a sweep at once.
  class Counting final : public DeviceBackend {
   public:
    explicit Counting(std::unique_ptr<DeviceBackend> b) : b_(std::move(b)) {}
    std::string name() const override { return "counting"; }
    double* allocate(std::size_t n) override { return b_->allocate(n); }
    void release(double* p) noexcept override { b_->release(p); }
    void* allocate_bytes(std::size_t n) override { return b_->allocate_bytes(n); }
    void release_bytes(void* p) noexcept override { b_->release_bytes(p); }
    void upload_bytes(void* d, const void* s, std::size_t n) override { b_->upload_bytes(d, s, n); }
    void block_propagate(Activation a, int w, int s, double h, const double* K, const double* b,
                         const Propagator::Chain* c, int n) override {
      max_chains = std::max(max_chains, n);
      b_->block_propagate(a, w, s, h, K, b, c, n);
    }
    void block_adjoint(int w, int s, int L, double h, const double* K, const double* d, int f,
                       const Propagator::Chain* c, int n) override {
      max_adjoint_chains = std::max(max_adjoint_chains, n);
      b_->block_adjoint(w, s, L, h, K, d, f, c, n);
    }
    void layer_derivs(Activation a, int w, int s, const double* K, const double* b, int f, int c,
                      const double* const* u, double* d) override {
      b_->layer_derivs(a, w, s, K, b, f, c, u, d);
    }
    void layer_gradient(int w, int s, const double* u, const double* l, const double* d, double* gK, double* gb,
                        double g) override {
      b_->layer_gradient(w, s, u, l, d, gK, gb, g);
    }
    double classifier(int w, int nc, const double* W, const double* mu, const double* U, const std::int64_t* y,
                      int s, double sc, std::int64_t* c, double* l, double* gW, double* gm) override {
      return b_->classifier(w, nc, W, mu, U, y, s, sc, c, l, gW, gm);
    }
    void gemm_batched(bool ta, bool tb, int m, int n, int k, double al, const double* const* A, int lda,
                      const double* const* B, int ldb, double be, double* const* C, int ldc, int batch) override {
      max_chains = std::max(max_chains, batch);
      ++gemms;
      b_->gemm_batched(ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc, batch);
    }
    void wide_epilogue(Activation a, int w, int s, const WideBatch& e) override { b_->wide_epilogue(a, w, s, e); }
    void conv_step(Activation a, const ConvShape& sh, const double* K, const double* b, double dt, const double* in,
                   double* out, int s, double* d) override {
      b_->conv_step(a, sh, K, b, dt, in, out, s, d);
    }
    void conv_adjoint(const ConvShape& sh, const double* K, double dt, const double* d, const double* l, double* lam,
                      int s) override {
      b_->conv_adjoint(sh, K, dt, d, l, lam, s);
    }
    void conv_gradient(const ConvShape& sh, const double* u, const double* l, const double* d, int s, double* gK,
                       double* gb, double g) override {
      b_->conv_gradient(sh, u, l, d, s, gK, gb, g);
    }
    void replicate_opening(const ConvShape& sh, const double* p, double* U, int s) override {
      b_->replicate_opening(sh, p, U, s);
    }
    void dense_opening(Activation a, int w, int nf, const double* W, const double* b, const double* X, double* U,
                       int s) override {
      b_->dense_opening(a, w, nf, W, b, X, U, s);
    }
    void dense_opening_gradient(Activation a, int w, int nf, const double* W, const double* b, const double* X,
                                const double* l, int s, double* gW, double* gb) override {
      b_->dense_opening_gradient(a, w, nf, W, b, X, l, s, gW, gb);
    }
    void dot_accumulate(const double* a, const double* b, std::size_t n, double sc, double* d) override {
      b_->dot_accumulate(a, b, n, sc, d);
    }
    int max_chains = 0;
    int max_adjoint_chains = 0;
    int gemms = 0;

   private:
    std::unique_ptr<DeviceBackend> b_;
  };
  for (int w : {8, 40}) {  // narrow: one block launch; wide: one batched GEMM per step index
    SCOPED_TRACE("width " + std::to_string(w));
    const Problem p = make_problem(32, w, Activation::Tanh, Opening::Dense, 9, 5);
    auto dev = std::make_shared<Counting>(make_emulated_backend());
    DenseResNet net(p.spec, backend_over(dev));
    ResNetMgrit solver(net, p.s, options(4), options(4));
    StateBuffer theta(*dev, p.theta.size());
    dev->upload(theta.data(), p.theta.data(), p.theta.size());
    // (The emulator's memory is host memory: the host labels can be passed as they are.)
    std::vector<double> grad(p.theta.size());
    StateBuffer g(*dev, grad.size());
    solver.evaluate(theta.data(), p.X.data(), p.y.data(), Regularization{}, g.data(), 2, 1);
    EXPECT_EQ(dev->max_chains, 8);  // 32 layers / factor 4: the finest sweep's 8 intervals at once
    // Narrow networks never need cuBLAS (forward, adjoint, gradients and the opening),
    // and their adjoint sweeps are one launch per level too.
    if (w <= kernels::kMaxWidth) {
      EXPECT_EQ(dev->gemms, 0);
      EXPECT_EQ(dev->max_adjoint_chains, 8);
    } else {
      EXPECT_GT(dev->gemms, 0);
    }
  }
}

// The backend's state arithmetic, reductions and GEMMs against plain host loops,
// for sizes that leave partial blocks and sizes past the grid-stride cap.
void check_backend_ops(DeviceBackend& dev) {
  for (std::size_t n : {std::size_t{1}, std::size_t{257}, std::size_t{300001}}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const std::vector<double> a = random_vector(n, -1, 1, 1), b = random_vector(n, -1, 1, 2),
                              c = random_vector(n, -1, 1, 3);
    StateBuffer A(dev, n), B(dev, n), C(dev, n);
    dev.upload(A.data(), a.data(), n);
    dev.upload(B.data(), b.data(), n);
    auto got = [&](const StateBuffer& x) {
      std::vector<double> h(n);
      dev.download(h.data(), x.data(), n);
      return h;
    };
    std::vector<double> want(n);
    EXPECT_EQ(got(C), std::vector<double>(n, 0.0));  // allocations are zeroed
    dev.copy(C.data(), A.data(), n);
    EXPECT_EQ(got(C), a);
    dev.add(C.data(), B.data(), n);
    for (std::size_t k = 0; k < n; ++k) want[k] = a[k] + b[k];
    EXPECT_EQ(got(C), want);
    dev.sum(C.data(), B.data(), B.data(), n);
    for (std::size_t k = 0; k < n; ++k) want[k] = b[k] + b[k];
    EXPECT_EQ(got(C), want);
    dev.upload(C.data(), c.data(), n);
    dev.fas(C.data(), A.data(), B.data(), n);
    for (std::size_t k = 0; k < n; ++k) want[k] = a[k] + b[k] - c[k];
    EXPECT_EQ(got(C), want);
    dev.fas(C.data(), nullptr, B.data(), n);
    for (std::size_t k = 0; k < n; ++k) want[k] = b[k] - want[k];
    EXPECT_EQ(got(C), want);
    // Batched: C = A + B and D = copy of A, then C = A + B - C and D = B - D.
    StateBuffer D(dev, n);
    {
      double* dst[2] = {C.data(), D.data()};
      const double* x[2] = {A.data(), A.data()};
      const double* y[2] = {B.data(), nullptr};
      dev.sum_batch(dst, x, y, 2, n);
      for (std::size_t k = 0; k < n; ++k) want[k] = a[k] + b[k];
      EXPECT_EQ(got(C), want);
      EXPECT_EQ(got(D), a);
      const double* gf[2] = {A.data(), nullptr};
      const double* p[2] = {B.data(), B.data()};
      dev.fas_batch(dst, gf, p, 2, n);
      for (std::size_t k = 0; k < n; ++k) want[k] = a[k] + b[k] - (a[k] + b[k]);
      EXPECT_EQ(got(C), want);
      for (std::size_t k = 0; k < n; ++k) want[k] = b[k] - a[k];
      EXPECT_EQ(got(D), want);
    }
    dev.zero(C.data(), n);
    EXPECT_EQ(got(C), std::vector<double>(n, 0.0));
    double ss = 0, sd = 0, dot = 0;
    for (std::size_t k = 0; k < n; ++k) {
      ss += a[k] * a[k];
      sd += (a[k] - b[k]) * (a[k] - b[k]);
      dot += 0.5 * a[k] * b[k];
    }
    EXPECT_NEAR(dev.sum_sq_diff(A.data(), nullptr, n), ss, 1e-12 * ss);
    EXPECT_NEAR(dev.sum_sq_diff(A.data(), B.data(), n), sd, 1e-12 * sd);
    {  // batched: the same reductions, the same rounding
      const double* x[3] = {A.data(), A.data(), B.data()};
      const double* y[3] = {nullptr, B.data(), A.data()};
      double out[3] = {-1, -1, -1};
      dev.sum_sq_diff_batch(x, y, 3, n, out);
      EXPECT_EQ(out[0], dev.sum_sq_diff(A.data(), nullptr, n));
      EXPECT_EQ(out[1], dev.sum_sq_diff(A.data(), B.data(), n));
      EXPECT_EQ(out[2], dev.sum_sq_diff(B.data(), A.data(), n));
    }
    StateBuffer acc(dev, 1);
    const double one = 1.0;
    dev.upload(acc.data(), &one, 1);
    dev.dot_accumulate(A.data(), B.data(), n, 0.5, acc.data());
    double r = 0;
    dev.download(&r, acc.data(), 1);
    EXPECT_NEAR(r, 1.0 + dot, 1e-12 * (1 + std::fabs(dot)));
  }
  // Batched column-major GEMMs in all four transpose combinations, beta 0 and 1.
  const int m = 37, n = 5, k = 41;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0}) {
        SCOPED_TRACE(std::string("ta ") + (ta ? "T" : "N") + " tb " + (tb ? "T" : "N") + " beta " + std::to_string(beta));
        const int lda = ta ? k : m, ldb = tb ? n : k;
        std::vector<std::vector<double>> hA, hB, hC;
        std::vector<StateBuffer> dA, dB, dC;
        std::vector<const double*> pA, pB;
        std::vector<double*> pC;
        for (int q = 0; q < 3; ++q) {
          hA.push_back(random_vector(static_cast<std::size_t>(lda) * (ta ? m : k), -1, 1, 10 + q));
          hB.push_back(random_vector(static_cast<std::size_t>(ldb) * (tb ? k : n), -1, 1, 20 + q));
          hC.push_back(random_vector(static_cast<std::size_t>(m) * n, -1, 1, 30 + q));
          dA.emplace_back(dev, hA[q].size());
          dB.emplace_back(dev, hB[q].size());
          dC.emplace_back(dev, hC[q].size());
          dev.upload(dA[q].data(), hA[q].data(), hA[q].size());
          dev.upload(dB[q].data(), hB[q].data(), hB[q].size());
          dev.upload(dC[q].data(), hC[q].data(), hC[q].size());
        }
        for (int q = 0; q < 3; ++q) {
          pA.push_back(dA[q].data());
          pB.push_back(dB[q].data());
          pC.push_back(dC[q].data());
        }
        dev.gemm_batched(ta, tb, m, n, k, 0.75, pA.data(), lda, pB.data(), ldb, beta, pC.data(), m, 3);
        for (int q = 0; q < 3; ++q) {
          std::vector<double> out(hC[q].size());
          dev.download(out.data(), dC[q].data(), out.size());
          for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
              double x = 0;
              for (int l = 0; l < k; ++l)
                x += (ta ? hA[q][l + i * lda] : hA[q][i + l * lda]) * (tb ? hB[q][j + l * ldb] : hB[q][l + j * ldb]);
              const double want_ij = 0.75 * x + beta * hC[q][i + j * m];
              ASSERT_NEAR(out[i + j * m], want_ij, 1e-13 * k) << "batch " << q << " entry " << i << "," << j;
            }
        }
      }
}

TEST(EmulatorBackend, StateArithmeticReductionsAndGemms) { check_backend_ops(*make_emulated_backend()); }

TEST(CudaBackend, StateArithmeticReductionsAndGemms) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status();
  check_backend_ops(*make_cuda_backend());
}

TEST(DeviceSelection, BadDevicesAreRefusedWithTheReason) {
  const Problem p = make_problem(8, 8, Activation::Tanh, Opening::Dense, 4, 1);
  EXPECT_THROW(make_device_backend("gpu"), std::invalid_argument);
  NetworkSpec many = p.spec;
  many.n_classes = kernels::kMaxClasses + 1;
  try {
    DeviceResNetMgrit d(many, 4, options(2), options(2), nullptr, "emulator");
    ADD_FAILURE() << "too many classes were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("classes"), std::string::npos) << e.what();
  }
  if (!cuda_available()) {
    try {
      make_device_backend("cuda");
      ADD_FAILURE() << "the CUDA backend was created without a usable device";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(cuda_status()), std::string::npos) << e.what();
    }
  }
}

TEST(DeviceSelection, ProcessesOfANodeSpreadOverItsDevices) {
  const char* vars[] = {"LP_CUDA_DEVICE", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                        "PMI_LOCAL_RANK"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* v : vars) {
    if (const char* x = std::getenv(v)) saved.emplace_back(v, x);
    unsetenv(v);
  }
  EXPECT_EQ(pick_cuda_device(4), 0);
  setenv("SLURM_LOCALID", "5", 1);
  EXPECT_EQ(pick_cuda_device(4), 1);  // the local rank modulo the devices
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
  EXPECT_EQ(pick_cuda_device(4), 2);  // Open MPI's variable first
  setenv("LP_CUDA_DEVICE", "3", 1);
  EXPECT_EQ(pick_cuda_device(4), 3);  // an explicit choice wins
  EXPECT_THROW(pick_cuda_device(2), std::invalid_argument);  // no device 3
  setenv("LP_CUDA_DEVICE", "x", 1);
  EXPECT_THROW(pick_cuda_device(2), std::invalid_argument);
  for (const char* v : vars) unsetenv(v);
  for (const auto& [k, v] : saved) setenv(k.c_str(), v.c_str(), 1);
}

TEST(CudaDeviceTraining, MatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status();
  const Problem p = make_problem(32, 8, Activation::SmoothRelu, Opening::Dense, 1000, 2);
  compare_with_cpu(p, options(4), Regularization{1e-3, 1e-3, 1e-3}, "cuda", kBudgets);
  const Problem q = make_problem(19, 16, Activation::Tanh, Opening::Expand, 77, 4);
  compare_with_cpu(q, options(2, "cpoints"), Regularization{}, "cuda", kBudgets);
  ConvSpec conv;
  conv.channels = 4;
  conv.height = 12;
  conv.width = 12;
  conv.layers = 16;
  compare_conv(conv, 100, options(4), Regularization{1e-3, 1e-3, 1e-3}, "cuda");
  const Problem wide = make_problem(16, 96, Activation::Tanh, Opening::Dense, 300, 6);  // cuBLAS
  compare_with_cpu(wide, options(4), Regularization{1e-3, 1e-3, 1e-3}, "cuda", kBudgets);
}

}  // namespace

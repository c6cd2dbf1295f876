// The "emulator" device: the CUDA kernels' bodies run on the CPU over the very
// launches CudaBackend (cuda/cuda_backend.cu) makes, taken from the same plans
// (launch_plan.h: grids, block and shared-memory sizes, large batches split into
// several launches), with the same phases, on host memory. Slow (one thread at a
// time), exact in what it computes: it is how device-resident training is
// tested on machines without a GPU.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "layerparallel/conv_kernels_impl.h"
#include "layerparallel/device_backend.h"
#include "layerparallel/grid_emulator.h"
#include "layerparallel/launch_plan.h"
#include "layerparallel/macros.h"

namespace layerparallel {

namespace detail {

FlatChains flatten_chains(const Propagator::Chain* chains, int n) {
  LP_REQUIRE(n >= 1, "block propagation needs at least one chain, got " << n);
  FlatChains f;
  for (int q = 0; q < n; ++q) {
    const Propagator::Chain& c = chains[q];
    LP_REQUIRE(c.count >= 1, "chain " << q << " of a block propagation has no step");
    f.step_start.push_back(f.step_start.back() + c.count);
    f.idx.insert(f.idx.end(), c.idx, c.idx + c.count + 1);
    f.in.push_back(c.in);
    f.out.insert(f.out.end(), c.outs, c.outs + c.count);
    for (int k = 0; k < c.count; ++k) {
      const double* g = c.rhs ? c.rhs[k] : nullptr;
      f.rhs.push_back(g);
      f.any_rhs = f.any_rhs || g != nullptr;
    }
  }
  return f;
}

}  // namespace detail

namespace {

using emu::Block;
using emu::run_launch;
using kernels::Idx3;
using kernels::Launch;
using kernels::LaunchPlan;

// The compile-time widths the CUDA dispatcher instantiates (8, 16, 32; 0 = any).
template <class F>
void with_width(int w, F&& f) {
  kernels::with_kernel_width(w, std::forward<F>(f));
}

void require_width(int w) {
  LP_REQUIRE(w >= 1 && w <= kernels::kMaxWidth,
             "the device kernels take widths 1.." << kernels::kMaxWidth << ", got " << w);
}

kernels::IntervalSteps view(const detail::FlatChains& f) {
  kernels::IntervalSteps iv;
  iv.intervals = static_cast<int>(f.in.size());
  iv.step_start = f.step_start.data();
  iv.idx = f.idx.data();
  iv.in = f.in.data();
  iv.out = f.out.data();
  iv.rhs = f.any_rhs ? f.rhs.data() : nullptr;
  return iv;
}

class EmulatedBackend final : public DeviceBackend {
 public:
  std::string name() const override { return "emulator"; }

  // ---- memory: host memory (StateSpace's defaults), arithmetic through the kernel bodies
  void* allocate_bytes(std::size_t bytes) override { return ::operator new(std::max<std::size_t>(bytes, 1)); }
  void release_bytes(void* p) noexcept override { ::operator delete(p); }
  void upload_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }

  void zero(double* dst, std::size_t n) override { element({kernels::ElementOp::Zero, dst, nullptr, nullptr, ll(n)}); }
  void copy(double* dst, const double* src, std::size_t n) override {
    if (dst != src) element({kernels::ElementOp::Copy, dst, src, nullptr, ll(n)});
  }
  void add(double* dst, const double* a, std::size_t n) override {
    element({kernels::ElementOp::Add, dst, a, nullptr, ll(n)});
  }
  void sum(double* dst, const double* a, const double* b, std::size_t n) override {
    element({kernels::ElementOp::Sum, dst, a, b, ll(n)});
  }
  void fas(double* g, const double* gf, const double* p, std::size_t n) override {
    element({kernels::ElementOp::Fas, g, gf, p, ll(n)});
  }

  void sum_batch(double* const* dst, const double* const* a, const double* const* b, int count,
                 std::size_t n) override {
    element_batch({kernels::ElementOp::Sum, dst, a, b, ll(n)}, count);
  }
  void fas_batch(double* const* g, const double* const* gf, const double* const* p, int count,
                 std::size_t n) override {
    element_batch({kernels::ElementOp::Fas, g, gf, p, ll(n)}, count);
  }

  void sum_sq_diff_batch(const double* const* a, const double* const* b, int count, std::size_t n,
                         double* out) const override {
    if (count <= 0) return;
    if (n == 0) {
      std::fill(out, out + count, 0.0);
      return;
    }
    // Row q reduces a[q] - b[q] over the same blocks as sum_sq_diff, then sum_rows adds each row.
    const LaunchPlan p = kernels::plan_tree_reduce(ll(n), count);
    std::vector<double> partial(p.partial_doubles(1));
    p.each([&](const Launch& l) {
      const double* const* la = kernels::rows_from(a, l);
      const double* const* lb = kernels::rows_from(b, l);
      double* lpart = kernels::partial_rows_for_launch(partial.data(), l);
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::sumsq_load(blk, t, l.block, l.grid, la[blk.y], lb[blk.y], ll(n), sh);
        });
        for (int stride = l.block.x / 2; stride > 0; stride /= 2)
          B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_tree(t, stride, sh); });
        B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_batch_store(blk, t, l.grid, sh, lpart); });
      });
    });
    kernels::plan_sum_rows(count).each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) {
          kernels::sum_rows(blk, t, l.block, partial.data(), count, p.blocks, out);
        });
      });
    });
  }

  double sum_sq_diff(const double* a, const double* b, std::size_t n) const override {
    double total = 0.0;
    tree_reduce(n, &total, [&](Idx3 blk, Idx3 t, Idx3 bd, Idx3 grid, double* sh) {
      kernels::sumsq_load(blk, t, bd, grid, a, b, ll(n), sh);
    });
    return total;
  }

  // ---- kernels
  void block_propagate(Activation act, int w, int s, double h, const double* K, const double* bias,
                       const Propagator::Chain* chains, int n) override {
    require_width(w);
    if (s <= 0) return;
    const detail::FlatChains f = detail::flatten_chains(chains, n);
    kernels::PropagateArgs a;
    a.w = w;
    a.s = s;
    a.h = h;
    a.K = K;
    a.bias = bias;
    a.iv = view(f);
    with_activation(act, [&](auto A) {
      with_width(w, [&](auto WC) {
        run_block_chains(kernels::plan_block_propagate(w, s, n), a,
                         [&](int k, Idx3 blk, Idx3 t, Idx3 bd, const kernels::PropagateArgs& la, double* sh) {
                           kernels::block_propagate_load(k, blk, t, bd, la, sh);
                         },
                         [&](int k, Idx3 blk, Idx3 t, Idx3 bd, const kernels::PropagateArgs& la, const double* sh,
                             double* cur) {
                           kernels::block_propagate_step<decltype(A), decltype(WC)::value>(k, blk, t, bd, la, sh, cur);
                         });
      });
    });
  }

  void block_adjoint(int w, int s, int layers, double h, const double* K, const double* deriv, int first,
                     const Propagator::Chain* chains, int n) override {
    require_width(w);
    if (s <= 0) return;
    const detail::FlatChains f = detail::flatten_chains(chains, n);
    kernels::AdjointPropagateArgs a;
    a.w = w;
    a.s = s;
    a.layers = layers;
    a.h = h;
    a.K = K;
    a.deriv = deriv;
    a.first = first;
    a.iv = view(f);
    with_width(w, [&](auto WC) {
      run_block_chains(kernels::plan_block_adjoint(w, s, n), a,
                       [&](int k, Idx3 blk, Idx3 t, Idx3 bd, const kernels::AdjointPropagateArgs& la, double* sh) {
                         kernels::block_adjoint_load(k, blk, t, bd, la, sh);
                       },
                       [&](int k, Idx3 blk, Idx3 t, Idx3 bd, const kernels::AdjointPropagateArgs& la,
                           const double* sh, double* cur) {
                         kernels::block_adjoint_step<decltype(WC)::value>(k, blk, t, bd, la, sh, cur);
                       });
    });
  }

  void layer_derivs(Activation act, int w, int s, const double* K, const double* bias, int first, int count,
                    const double* const* u, double* deriv) override {
    require_width(w);
    if (s <= 0 || count <= 0) return;
    kernels::LayerDerivArgs a;
    a.w = w;
    a.s = s;
    a.first = first;
    a.K = K;
    a.bias = bias;
    a.u = u;
    a.deriv = deriv;
    with_activation(act, [&](auto A) {
      with_width(w, [&](auto WC) {
        constexpr int W = decltype(WC)::value;
        kernels::plan_layer_derivs(w, s, count).each([&](const Launch& l) {
          const kernels::LayerDerivArgs la = kernels::for_launch(a, l);
          run_launch(l, 0, [&](Idx3 blk, Block& B) {
            B.phase([&](Idx3 t, double* sh, double*) { kernels::layer_derivs_load(blk, t, l.block, la, sh); });
            B.phase([&](Idx3 t, double* sh, double*) {
              kernels::layer_derivs_compute<decltype(A), W>(blk, t, l.block, la, sh);
            });
          });
        });
      });
    });
  }

  void layer_gradient(int w, int s, const double* u, const double* lam_next, const double* deriv, double* gK,
                      double* gb, double gscale) override {
    require_width(w);
    if (s <= 0) return;
    const LaunchPlan p = kernels::plan_layer_gradient(w, s);
    const int len = kernels::layer_gradient_len(w);
    std::vector<double> partial(p.partial_doubles(len));
    // With deriv given, the activation and K are not read (TanhAct is a placeholder).
    with_width(w, [&](auto WC) {
      constexpr int W = decltype(WC)::value;
      p.each([&](const Launch& l) {
        const Idx3 bd = l.block;
        run_launch(l, 0, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double* sh, double*) { kernels::layer_gradient_load(t, bd, w, nullptr, deriv, sh); });
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::layer_gradient_rows<TanhAct, W>(blk, t, bd, w, 0.0, u, lam_next, deriv, s, sh);
          });
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::layer_gradient_entries(blk, t, bd, w, u, s, gscale, sh, partial.data());
          });
        });
      });
    });
    sum_partials(partial.data(), p.blocks, len, kernels::layer_gradient_targets(w, gK, gb));
  }

  double classifier(int w, int nc, const double* Wc, const double* mu, const double* U, const std::int64_t* labels,
                    int s, double scale, std::int64_t* correct, double* lam, double* gW, double* gmu) override {
    kernels::require_classifier_shape(w, nc);
    if (s <= 0) {
      if (correct) *correct = 0;
      return 0.0;
    }
    const bool grad = gW != nullptr;
    const LaunchPlan p = kernels::plan_classifier(nc, s);
    const int len = kernels::classifier_len(w, nc, grad);
    std::vector<double> partial(p.partial_doubles(len));
    p.each([&](const Launch& l) {
      const Idx3 bd = l.block;
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::classifier_rows(blk, t, bd, w, nc, Wc, mu, U, labels, s, scale, lam, sh);
        });
        B.phase([&](Idx3 t, double* sh, double*) {
          kernels::classifier_entries(blk, t, bd, w, nc, U, s, grad, sh, partial.data());
        });
      });
    });
    double totals[2] = {0.0, 0.0};
    sum_partials(partial.data(), p.blocks, len, kernels::classifier_targets(w, nc, totals, gW, gmu));
    if (correct) *correct = static_cast<std::int64_t>(totals[1]);
    return totals[0];
  }

  void dense_opening(Activation act, int w, int nf, const double* W, const double* b, const double* X, double* U0,
                     int s) override {
    if (s <= 0) return;
    with_activation(act, [&](auto A) {
      kernels::plan_dense_opening(s).each([&](const Launch& l) {
        run_launch(l, 0, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double*, double*) {
            kernels::opening_compute<decltype(A)>(blk, t, l.block, w, nf, W, b, X, U0, s);
          });
        });
      });
    });
  }

  void dense_opening_gradient(Activation act, int w, int nf, const double* W, const double* b, const double* X,
                              const double* lam0, int s, double* gW, double* gb) override {
    if (s <= 0) return;
    const LaunchPlan p = kernels::plan_opening_gradient(w, s);
    const int len = kernels::opening_gradient_len(w, nf);
    std::vector<double> partial(p.partial_doubles(len));
    with_activation(act, [&](auto A) {
      p.each([&](const Launch& l) {
        const Idx3 bd = l.block;
        run_launch(l, 0, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::opening_gradient_rows<decltype(A)>(blk, t, bd, w, nf, W, b, X, lam0, s, sh);
          });
          B.phase([&](Idx3 t, double* sh, double*) {
            kernels::opening_gradient_entries(blk, t, bd, w, nf, X, s, sh, partial.data());
          });
        });
      });
    });
    sum_partials(partial.data(), p.blocks, len, kernels::matrix_bias_targets(w * nf, gW, gb));
  }

  void conv_step(Activation act, const ConvShape& sh, const double* K, const double* bias, double dt,
                 const double* in, double* out, int s, double* deriv) override {
    if (s <= 0) return;
    with_activation(act, [&](auto A) {
      kernels::plan_conv_step(sh, s).each([&](const Launch& l) {
        run_launch(l, 0, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double*, double*) {
            kernels::conv_step_channel<decltype(A)>(blk, t, l.block, sh, K, bias, dt, in, out, s, deriv);
          });
        });
      });
    });
  }

  void conv_adjoint(const ConvShape& sh, const double* K, double dt, const double* deriv, const double* lam_next,
                    double* lam, int s) override {
    if (s <= 0) return;
    const LaunchPlan p = kernels::plan_conv_adjoint(s);
    std::vector<double> scratch(p.row_threads() * kernels::conv_adjoint_scratch(sh));
    // With deriv given the activation, u and the bias are not read (lam_next stands in for u).
    p.each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) {
          kernels::conv_adjoint_examples<TanhAct>(blk, t, l.block, l.grid, sh, K, nullptr, dt, lam_next, deriv,
                                                  lam_next, lam, s, scratch.data());
        });
      });
    });
  }

  void conv_gradient(const ConvShape& sh, const double* u, const double* lam_next, const double* deriv, int s,
                     double* gK, double* gb, double gscale) override {
    if (s <= 0) return;
    const LaunchPlan p = kernels::plan_conv_gradient(s);
    std::vector<double> scratch(p.row_threads() * sh.size());
    std::vector<double> partial(p.partial_doubles(kernels::conv_gradient_len(sh)));
    p.each([&](const Launch& l) {
      const Idx3 bd = l.block, grid = l.grid;
      const int rounds = kernels::conv_gradient_rounds(s, bd, grid);
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        for (int r = 0; r < rounds; ++r) {
          B.phase([&](Idx3 t, double*, double*) {
            kernels::conv_gradient_rows<TanhAct>(r, blk, t, bd, grid, sh, nullptr, nullptr, u, lam_next, deriv, s,
                                                 scratch.data());
          });
          B.phase([&](Idx3 t, double*, double*) {
            kernels::conv_gradient_entries(r, blk, t, bd, grid, sh, u, s, gscale, scratch.data(), partial.data());
          });
        }
      });
    });
    kernels::plan_conv_gradient_sum(sh).each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) {
          kernels::conv_gradient_sum(blk, t, l.block, sh, partial.data(), p.blocks, gK, gb);
        });
      });
    });
  }

  void replicate_opening(const ConvShape& sh, const double* pixels, double* U0, int s) override {
    if (s <= 0) return;
    kernels::plan_replicate_opening(s).each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) {
          kernels::replicate_opening_examples(blk, t, l.block, sh, pixels, U0, s);
        });
      });
    });
  }

  // cuBLAS's batched GEMM is split into calls as CudaBackend splits it; each entry
  // runs the reference GEMM (gemm_reference), the emulator's stand-in for cuBLAS.
  void gemm_batched(bool ta, bool tb, int m, int n, int k, double alpha, const double* const* A, int lda,
                    const double* const* B, int ldb, double beta, double* const* C, int ldc, int batch) override {
    const LaunchPlan p = kernels::plan_gemm_reference(m, n);
    for (int i = 0; i < kernels::gemm_calls(batch); ++i) {
      const kernels::RowRange r = kernels::row_range(batch, i);
      for (int q = r.row0; q < r.row0 + r.rows; ++q) {
        const kernels::GemmArgs g{ta, tb, m, n, k, alpha, beta, A[q], lda, B[q], ldb, C[q], ldc};
        p.each([&](const Launch& l) {
          run_launch(l, 0, [&](Idx3 blk, Block& B2) {
            B2.phase([&](Idx3 t, double*, double*) { kernels::gemm_reference(blk, t, l.block, l.grid, g); });
          });
        });
      }
    }
  }

  void wide_epilogue(Activation act, int w, int s, const WideBatch& wb) override {
    const int count = static_cast<int>(wb.out.size() ? wb.out.size() : wb.z.size());
    if (count == 0 || s <= 0) return;
    kernels::WideArgs a;
    a.op = wb.op;
    a.w = w;
    a.s = s;
    a.a = wb.a.empty() ? nullptr : wb.a.data();
    a.b = wb.b.empty() ? nullptr : wb.b.data();
    a.z = wb.z.empty() ? nullptr : wb.z.data();
    a.out = wb.out.empty() ? nullptr : wb.out.data();
    a.rhs = wb.rhs.empty() ? nullptr : wb.rhs.data();
    a.dt = wb.dt.empty() ? nullptr : wb.dt.data();
    a.bias = wb.bias.empty() ? nullptr : wb.bias.data();
    with_activation(act, [&](auto A) {
      kernels::plan_wide_epilogue(w, s, count).each([&](const Launch& l) {
        const kernels::WideArgs la = kernels::for_launch(a, l);
        run_launch(l, 0, [&](Idx3 blk, Block& B) {
          B.phase([&](Idx3 t, double*, double*) { kernels::wide_epilogue<decltype(A)>(blk, t, l.block, l.grid, la); });
        });
      });
    });
  }

  void dot_accumulate(const double* a, const double* b, std::size_t n, double scale, double* dst) override {
    tree_reduce(n, dst, [&](Idx3 blk, Idx3 t, Idx3 bd, Idx3 grid, double* sh) {
      kernels::dot_load(blk, t, bd, grid, a, b, ll(n), scale, sh);
    });
  }

 private:
  static long long ll(std::size_t n) { return static_cast<long long>(n); }

  // The launches of a block propagation as the CUDA kernels run them (forward or
  // adjoint): per launch, each block loads its chains' start states, then per
  // step a load phase (the layer's weights into shared memory) and a step phase.
  // load / step get the launch's arguments (kernels::for_launch).
  template <class Args, class Load, class Step>
  static void run_block_chains(const LaunchPlan& p, const Args& a, Load&& load, Step&& step) {
    p.each([&](const Launch& l) {
      const Args la = kernels::for_launch(a, l);
      const Idx3 bd = l.block;
      run_launch(l, kernels::kMaxWidth, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double* cur) { kernels::block_propagate_begin(blk, t, bd, la.w, la.s, la.iv, cur); });
        const int steps = kernels::block_propagate_steps(blk, la.iv);
        for (int k = 0; k < steps; ++k) {
          B.phase([&](Idx3 t, double* sh, double*) { load(k, blk, t, bd, la, sh); });
          B.phase([&](Idx3 t, double* sh, double* cur) { step(k, blk, t, bd, la, sh, cur); });
        }
      });
    });
  }

  // A grid-stride reduction as the CUDA backend launches it (plan_tree_reduce):
  // load(block, thread, ...) fills shared memory, a tree halves it, one partial
  // per block, the partials added into *dst in block order.
  template <class Load>
  static void tree_reduce(std::size_t n, double* dst, Load&& load) {
    if (n == 0) return;
    const LaunchPlan p = kernels::plan_tree_reduce(ll(n));
    std::vector<double> partial(p.partial_doubles(1));
    p.each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double* sh, double*) { load(blk, t, l.block, l.grid, sh); });
        for (int stride = l.block.x / 2; stride > 0; stride /= 2)
          B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_tree(t, stride, sh); });
        B.phase([&](Idx3 t, double* sh, double*) { kernels::sumsq_store(blk, t, sh, partial.data()); });
      });
    });
    sum_partials(partial.data(), p.blocks, 1, kernels::scalar_target(dst));
  }

  void element_batch(const kernels::ElementBatchArgs& e, int count) const {
    if (e.n <= 0 || count <= 0) return;
    kernels::plan_elementwise(e.n, count).each([&](const Launch& l) {
      const kernels::ElementBatchArgs le = kernels::for_launch(e, l);
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) { kernels::elementwise_batch(blk, t, l.block, l.grid, le); });
      });
    });
  }

  void element(const kernels::ElementArgs& e) const {
    if (e.n <= 0) return;
    kernels::plan_elementwise(e.n).each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 t, double*, double*) { kernels::elementwise(blk, t, l.block, l.grid, e); });
      });
    });
  }

  static void sum_partials(const double* partial, int nblocks, int len, const kernels::PartialTargets& t) {
    kernels::plan_sum_partials(len).each([&](const Launch& l) {
      run_launch(l, 0, [&](Idx3 blk, Block& B) {
        B.phase([&](Idx3 th, double*, double*) { kernels::sum_partials(blk, th, l.block, partial, nblocks, len, t); });
      });
    });
  }
};

}  // namespace

std::unique_ptr<DeviceBackend> make_emulated_backend() { return std::make_unique<EmulatedBackend>(); }

int pick_cuda_device(int device_count) {
  LP_REQUIRE(device_count >= 1, "there is no CUDA device to pick from");
  auto parse = [](const char* name, const char* text) {
    char* end = nullptr;
    const long v = std::strtol(text, &end, 10);
    LP_REQUIRE(end != text && *end == '\0' && v >= 0, name << " must be a non-negative integer, got '" << text << "'");
    return static_cast<int>(v);
  };
  if (const char* d = std::getenv("LP_CUDA_DEVICE")) {
    const int k = parse("LP_CUDA_DEVICE", d);
    LP_REQUIRE(k < device_count, "LP_CUDA_DEVICE = " << k << " but this machine has " << device_count
                                                     << " CUDA device" << (device_count > 1 ? "s" : ""));
    return k;
  }
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK"})
    if (const char* r = std::getenv(name)) return parse(name, r) % device_count;
  return 0;
}

std::unique_ptr<DeviceBackend> make_device_backend(const std::string& device) {
  if (device == "emulator") return make_emulated_backend();
  if (device == "cuda") return make_cuda_backend();
  LP_REQUIRE(false, "device must be 'cuda' or 'emulator' for a device backend, got '" << device << "'");
  return nullptr;
}

}  // namespace layerparallel

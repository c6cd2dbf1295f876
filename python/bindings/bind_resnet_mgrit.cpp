// Bindings of the ResNet MGRIT solver (exact and one-shot gradient evaluation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <string>

#include "checks.h"
#include "layerparallel/device_solver.h"
#include "layerparallel/macros.h"
#include "layerparallel/resnet_mgrit.h"
#include "mgrit_options.h"

namespace py = pybind11;
using namespace layerparallel;
using lpbind::as_doubles;
using lpbind::as_labels;
using lpbind::DArray;

namespace {

py::dict report(const SolveReport& r) {
  py::dict d;
  d["residuals"] = r.residuals;
  d["cycles"] = r.cycles;
  d["steps"] = r.steps;
  d["converged"] = r.converged;
  return d;
}

// Holds the network alive as long as the solver (the solver keeps a reference).
// On a device the solver runs on the same network class over the device backend, built from the spec.
struct PyResNetMgrit {
  py::object net_owner;
  py::object comm_owner;
  std::unique_ptr<ResNetMgrit> host;
  std::unique_ptr<DeviceResNetMgrit> dev;

  ResNetMgrit& solver() { return dev ? dev->solver() : *host; }
  const ResNetMgrit& solver() const { return dev ? dev->solver() : *host; }
  MgritEvaluation evaluate(const double* theta, const double* X, const std::int64_t* y, const Regularization& reg,
                           double* grad, int fb, int ab) {
    return dev ? dev->evaluate(theta, X, y, reg, grad, fb, ab) : host->evaluate(theta, X, y, reg, grad, fb, ab);
  }
  void copy_state(int n, bool adjoint, double* out, std::size_t sz) {
    if (dev) {
      adjoint ? dev->adjoint(n, out) : dev->state(n, out);
    } else {
      std::copy_n(adjoint ? host->adjoint(n) : host->state(n), sz, out);
    }
  }
};

}  // namespace

void bind_resnet_mgrit(py::module_& m) {
  py::class_<PyResNetMgrit>(m, "ResNetMgrit",
                            "Objective and gradient of a residual network with MGRIT forward and adjoint solves; "
                            "keeps the space-time state between calls (warm starts).")
      .def(py::init([](py::object net, int batch, const py::dict& forward, const py::dict& adjoint,
                       py::object comm, const std::string& device) {
             const ResidualNetwork& n = net.cast<const ResidualNetwork&>();
             auto p = std::make_unique<PyResNetMgrit>();
             p->net_owner = net;
             p->comm_owner = comm;
             Comm* c = comm.is_none() ? nullptr : comm.cast<Comm*>();
             if (device == "cpu") {
               p->host = std::make_unique<ResNetMgrit>(n, batch, lpbind::mgrit_options(forward),
                                                       lpbind::mgrit_options(adjoint), c);
               return p;
             }
             if (const auto* dense = dynamic_cast<const DenseResNet*>(&n)) {
               p->dev = std::make_unique<DeviceResNetMgrit>(dense->spec(), batch, lpbind::mgrit_options(forward),
                                                            lpbind::mgrit_options(adjoint), c, device);
             } else if (const auto* conv = dynamic_cast<const ConvResNet*>(&n)) {
               p->dev = std::make_unique<DeviceResNetMgrit>(conv->spec(), batch, lpbind::mgrit_options(forward),
                                                            lpbind::mgrit_options(adjoint), c, device);
             } else {
               LP_REQUIRE(false, "device '" << device << "' trains DenseResNet and ConvResNet networks only");
             }
             return p;
           }),
           py::arg("net"), py::arg("batch"), py::arg("forward_options"), py::arg("adjoint_options"),
           py::arg("comm") = py::none(), py::arg("device") = "cpu",
           "comm: a layerparallel.comm.core_comm (or any _core.Comm subclass) over which the layers are "
           "distributed; None = all layers here. device: 'cpu', 'cuda' (states, adjoints, parameters and "
           "gradients on the GPU; dense networks, and convolutional ones with the replicate opening) or "
           "'emulator' (the CUDA kernels' bodies run on the CPU over their launch grids: slow, for testing).")
      .def_property_readonly("device", [](const PyResNetMgrit& p) { return p.dev ? p.dev->device() : std::string("cpu"); })
      .def_property_readonly("foreign_layers", [](const PyResNetMgrit& p) { return p.solver().foreign_layers(); },
                             "Layers of other processes whose parameters this one reads (coarse forward steps).")
      .def_property_readonly("owned_layers", [](const PyResNetMgrit& p) {
        const Range r = p.solver().owned_layers();
        return py::make_tuple(r.begin, r.end);
      })
      .def_property_readonly("batch", [](const PyResNetMgrit& p) { return p.solver().batch(); })
      .def_property_readonly("levels",
                             [](const PyResNetMgrit& p) { return p.solver().forward_solver().hierarchy().num_levels(); })
      .def_property_readonly("forward_steps_per_level",
                             [](const PyResNetMgrit& p) { return p.solver().forward_solver().steps_per_level(); })
      .def_property_readonly("adjoint_steps_per_level",
                             [](const PyResNetMgrit& p) { return p.solver().adjoint_solver().steps_per_level(); })
      .def("reset", [](PyResNetMgrit& p) { p.solver().reset(); }, "Forget the warm-start state.")
      .def_property_readonly("started", [](const PyResNetMgrit& p) { return p.solver().started(); },
                             "Whether a warm start exists (an evaluation ran since construction or reset()).")
      .def(
          "warm_start_state",
          [](PyResNetMgrit& p) -> py::object {
            ResNetMgrit& s = p.solver();
            if (!s.started()) return py::none();
            const auto n = static_cast<py::ssize_t>(s.trajectory_size());
            DArray f(n), a(n);
            // Distributed, only the owned points are written: the rest stays zero (not
            // uninitialised memory, which the loader's finiteness check would refuse).
            std::fill_n(f.mutable_data(), n, 0.0);
            std::fill_n(a.mutable_data(), n, 0.0);
            s.save_warm_start(f.mutable_data(), a.mutable_data());
            return py::make_tuple(f, a);
          },
          "The forward and adjoint warm-start trajectories (flat, for a checkpoint), or None before the first "
          "evaluation.")
      .def(
          "load_warm_start_state",
          [](PyResNetMgrit& p, const py::handle& forward, const py::handle& adjoint) {
            ResNetMgrit& s = p.solver();
            const auto n = static_cast<py::ssize_t>(s.trajectory_size());
            DArray f = as_doubles(forward, "forward warm start", 1, n);
            DArray a = as_doubles(adjoint, "adjoint warm start", 1, n);
            s.load_warm_start(f.data(), a.data());
          },
          py::arg("forward"), py::arg("adjoint"),
          "Restore warm_start_state()'s arrays: the next evaluation continues as the saved solver's would.")
      .def("set_fused_final_sweep", [](PyResNetMgrit& p, bool on) { p.solver().set_fused_final_sweep(on); },
           py::arg("on"),
           "Form act' and the parameter gradient inside the last finest sweeps of fixed-budget solves (on by "
           "default; the same values bit for bit as the separate passes, which off restores).")
      .def("set_relative_tolerances",
           [](PyResNetMgrit& p, double f, double a) { p.solver().set_relative_tolerances(f, a); },
           py::arg("forward"), py::arg("adjoint"), "set_relative_tolerance, separately for the two solves.")
      .def("set_cycle_limit", [](PyResNetMgrit& p, int k) { p.solver().set_cycle_limit(k); }, py::arg("max_cycles"),
           "The most cycles of later solves to the tolerance (budget < 0).")
      .def("set_relative_tolerance", [](PyResNetMgrit& p, double t) { p.solver().set_relative_tolerance(t); },
           py::arg("rel_tol"), "Exact solves stop at residual <= rel_tol * |initial value| (0: options' tol).")
      .def(
          "evaluate",
          [](PyResNetMgrit& p, const py::handle& theta, const py::handle& X, const py::handle& y, double tikhonov,
             double classifier, double ddt, int forward_budget, int adjoint_budget, bool gradient) {
            const ResidualNetwork& net = p.net_owner.cast<const ResidualNetwork&>();
            DArray th = as_doubles(theta, "theta (the flat parameter vector)", 1,
                                   static_cast<py::ssize_t>(net.param_size()));
            DArray x = as_doubles(X, "features", 2, p.solver().batch(), net.input_size());
            auto lab = as_labels(y, "labels", x.shape(0), net.classes());
            Regularization reg{tikhonov, classifier, ddt};
            reg.validate();
            py::object grad = py::none();
            MgritEvaluation me;
            if (gradient) {
              DArray g(static_cast<py::ssize_t>(net.param_size()));
              double* gp = g.mutable_data();
              {
                py::gil_scoped_release nogil;
                me = p.evaluate(th.data(), x.data(), lab.data(), reg, gp, forward_budget, adjoint_budget);
              }
              grad = std::move(g);
            } else {
              py::gil_scoped_release nogil;
              me = p.evaluate(th.data(), x.data(), lab.data(), reg, nullptr, forward_budget, adjoint_budget);
            }
            py::dict d;
            d["objective"] = me.eval.objective;
            d["loss"] = me.eval.loss;
            d["regularization"] = me.eval.regularization;
            d["correct"] = me.eval.correct;
            d["examples"] = me.eval.examples;
            d["accuracy"] = static_cast<double>(me.eval.correct) / static_cast<double>(me.eval.examples);
            d["gradient"] = grad;
            d["forward"] = report(me.forward);
            d["adjoint"] = report(me.adjoint);
            return d;
          },
          py::arg("theta"), py::arg("features"), py::arg("labels"), py::arg("tikhonov") = 0.0,
          py::arg("classifier") = 0.0, py::arg("ddt") = 0.0, py::arg("forward_budget") = -1,
          py::arg("adjoint_budget") = -1, py::arg("gradient") = true,
          "A budget < 0 solves to the tolerance; >= 0 runs that many warm-started cycles.")
      .def(
          "states",
          [](PyResNetMgrit& p) {
            const ResidualNetwork& net = p.net_owner.cast<const ResidualNetwork&>();
            const int N = net.layers(), s = p.solver().batch(), w = net.state_width();
            DArray u({N + 1, s, w});
            double* up = u.mutable_data();
            for (int n = 0; n <= N; ++n) p.copy_state(n, false, up + n * s * w, static_cast<std::size_t>(s) * w);
            return u;
          },
          "States u_0..u_N of the last evaluation, shape (N+1, s, width).")
      .def(
          "adjoints",
          [](PyResNetMgrit& p) {
            const ResidualNetwork& net = p.net_owner.cast<const ResidualNetwork&>();
            const int N = net.layers(), s = p.solver().batch(), w = net.state_width();
            DArray u({N + 1, s, w});
            double* up = u.mutable_data();
            for (int n = 0; n <= N; ++n) p.copy_state(n, true, up + n * s * w, static_cast<std::size_t>(s) * w);
            return u;
          },
          "Adjoints lambda_0..lambda_N of the last evaluation with a gradient, shape (N+1, s, width).");
}

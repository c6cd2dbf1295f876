// Bindings of the ResNet MGRIT solver (exact and one-shot gradient evaluation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "checks.h"
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
struct PyResNetMgrit {
  py::object net_owner;
  py::object comm_owner;
  std::unique_ptr<ResNetMgrit> solver;
};

}  // namespace

void bind_resnet_mgrit(py::module_& m) {
  py::class_<PyResNetMgrit>(m, "ResNetMgrit",
                            "Objective and gradient of a residual network with MGRIT forward and adjoint solves; "
                            "keeps the space-time state between calls (warm starts).")
      .def(py::init([](py::object net, int batch, const py::dict& forward, const py::dict& adjoint,
                       py::object comm) {
             const ResidualNetwork& n = net.cast<const ResidualNetwork&>();
             auto p = std::make_unique<PyResNetMgrit>();
             p->net_owner = net;
             p->comm_owner = comm;
             Comm* c = comm.is_none() ? nullptr : comm.cast<Comm*>();
             p->solver = std::make_unique<ResNetMgrit>(n, batch, lpbind::mgrit_options(forward),
                                                       lpbind::mgrit_options(adjoint), c);
             return p;
           }),
           py::arg("net"), py::arg("batch"), py::arg("forward_options"), py::arg("adjoint_options"),
           py::arg("comm") = py::none(),
           "comm: a layerparallel.parallel.CoreComm (or any _core.Comm subclass) over which the layers are "
           "distributed; None = all layers here.")
      .def_property_readonly("foreign_layers", [](const PyResNetMgrit& p) { return p.solver->foreign_layers(); },
                             "Layers of other processes whose parameters this one reads (coarse forward steps).")
      .def_property_readonly("owned_layers", [](const PyResNetMgrit& p) {
        const Range r = p.solver->owned_layers();
        return py::make_tuple(r.begin, r.end);
      })
      .def_property_readonly("batch", [](const PyResNetMgrit& p) { return p.solver->batch(); })
      .def_property_readonly("levels",
                             [](const PyResNetMgrit& p) { return p.solver->forward_solver().hierarchy().num_levels(); })
      .def_property_readonly("forward_steps_per_level",
                             [](const PyResNetMgrit& p) { return p.solver->forward_solver().steps_per_level(); })
      .def_property_readonly("adjoint_steps_per_level",
                             [](const PyResNetMgrit& p) { return p.solver->adjoint_solver().steps_per_level(); })
      .def("reset", [](PyResNetMgrit& p) { p.solver->reset(); }, "Forget the warm-start state.")
      .def("set_relative_tolerance", [](PyResNetMgrit& p, double t) { p.solver->set_relative_tolerance(t); },
           py::arg("rel_tol"), "Exact solves stop at residual <= rel_tol * |initial value| (0: options' tol).")
      .def(
          "evaluate",
          [](PyResNetMgrit& p, const py::handle& theta, const py::handle& X, const py::handle& y, double tikhonov,
             double classifier, double ddt, int forward_budget, int adjoint_budget, bool gradient) {
            const ResidualNetwork& net = p.net_owner.cast<const ResidualNetwork&>();
            DArray th = as_doubles(theta, "theta (the flat parameter vector)", 1,
                                   static_cast<py::ssize_t>(net.param_size()));
            DArray x = as_doubles(X, "features", 2, p.solver->batch(), net.input_size());
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
                me = p.solver->evaluate(th.data(), x.data(), lab.data(), reg, gp, forward_budget, adjoint_budget);
              }
              grad = std::move(g);
            } else {
              py::gil_scoped_release nogil;
              me = p.solver->evaluate(th.data(), x.data(), lab.data(), reg, nullptr, forward_budget, adjoint_budget);
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
            const int N = net.layers(), s = p.solver->batch(), w = net.state_width();
            DArray u({N + 1, s, w});
            double* up = u.mutable_data();
            for (int n = 0; n <= N; ++n) std::copy_n(p.solver->state(n), static_cast<std::size_t>(s) * w, up + n * s * w);
            return u;
          },
          "States u_0..u_N of the last evaluation, shape (N+1, s, width).")
      .def(
          "adjoints",
          [](PyResNetMgrit& p) {
            const ResidualNetwork& net = p.net_owner.cast<const ResidualNetwork&>();
            const int N = net.layers(), s = p.solver->batch(), w = net.state_width();
            DArray u({N + 1, s, w});
            double* up = u.mutable_data();
            for (int n = 0; n <= N; ++n)
              std::copy_n(p.solver->adjoint(n), static_cast<std::size_t>(s) * w, up + n * s * w);
            return u;
          },
          "Adjoints lambda_0..lambda_N of the last evaluation with a gradient, shape (N+1, s, width).");
}

// Bindings of the dense residual network (objective, gradient, logits) and of
// the thread controls. Validates every array at the boundary, releases the GIL
// around compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "checks.h"
#include "layerparallel/cuda.h"
#include "layerparallel/conv_network.h"
#include "layerparallel/network.h"
#include "layerparallel/build_info.h"
#include "layerparallel/threading.h"

namespace py = pybind11;
using namespace layerparallel;
using lpbind::as_doubles;
using lpbind::as_labels;
using lpbind::DArray;

namespace {

NetworkSpec make_spec(int n_features, int n_classes, int width, int layers, double T,
                      const std::string& activation, const std::string& opening) {
  NetworkSpec s;
  s.n_features = n_features;
  s.n_classes = n_classes;
  s.width = width;
  s.layers = layers;
  s.T = T;
  s.activation = parse_activation(activation);
  s.opening = parse_opening(opening);
  s.validate();
  return s;
}

DArray theta_of(const ResidualNetwork& net, const py::handle& theta) {
  return as_doubles(theta, "theta (the flat parameter vector)", 1, static_cast<py::ssize_t>(net.param_size()));
}

DArray features_of(const ResidualNetwork& net, const py::handle& X) {
  DArray x = as_doubles(X, "features", 2, -1, net.input_size());
  if (x.shape(0) < 1) throw py::value_error("features must hold at least one example, got 0 rows");
  return x;
}

}  // namespace

void bind_network(py::module_& m) {
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Threads for the compiled loops and BLAS (0 = all cores).");
  m.def("num_threads", &num_threads);
  m.def("max_threads", &max_threads);
  m.def("thread_limit", &thread_limit, "The most threads set_num_threads and MgritOptions.threads take (64 per core).");
  m.def("has_blas", []() {
#if defined(LP_WITH_BLAS)
    return true;
#else
    return false;
#endif
  });
  m.def("build_info", []() {
    const BuildInfo b = build_info();
    py::dict d;
    d["blas"] = b.blas;
    d["blas_config"] = b.blas_config;
    d["blas_threads"] = b.blas_threads;
    d["simd"] = b.simd;
    d["simd_doubles"] = b.simd_doubles;
    d["vector_math"] = b.vector_math;
    d["openmp_version"] = b.openmp_version;
    d["openmp_threads"] = b.openmp_threads;
    d["compiler"] = b.compiler;
    return d;
  }, "What the compiled core was built with: BLAS (and its threads), SIMD, vector math, OpenMP, compiler.");
  m.def("built_with_cuda", []() {
#if defined(LP_WITH_CUDA)
    return true;
#else
    return false;
#endif
  });
  m.def("cuda_status", &cuda_status,
        "One sentence saying whether the CUDA backend can be used here and, if not, why.");

  py::class_<ResidualNetwork>(m, "ResidualNetwork", "A residual network: objective, gradient, logits, states.")
      .def_property_readonly("param_size", &ResidualNetwork::param_size)
      .def_property_readonly("n_features", &ResidualNetwork::input_size)
      .def_property_readonly("n_classes", &ResidualNetwork::classes)
      .def_property_readonly("layers", &ResidualNetwork::layers)
      .def_property_readonly("state_width", &ResidualNetwork::state_width)
      .def(
          "evaluate",
          [](const ResidualNetwork& net, const py::handle& theta, const py::handle& X, const py::handle& y,
             double tikhonov, double classifier, double ddt, bool gradient) {
            DArray th = theta_of(net, theta);
            DArray x = features_of(net, X);
            auto lab = as_labels(y, "labels", x.shape(0), net.classes());
            Regularization reg{tikhonov, classifier, ddt};
            reg.validate();
            py::object grad = py::none();
            Evaluation ev;
            const int s = static_cast<int>(x.shape(0));
            if (gradient) {
              DArray g(static_cast<py::ssize_t>(net.param_size()));
              double* gp = g.mutable_data();
              {
                py::gil_scoped_release nogil;
                ev = net.evaluate(th.data(), x.data(), lab.data(), s, reg, gp);
              }
              grad = std::move(g);
            } else {
              py::gil_scoped_release nogil;
              ev = net.evaluate(th.data(), x.data(), lab.data(), s, reg, nullptr);
            }
            py::dict d;
            d["objective"] = ev.objective;
            d["loss"] = ev.loss;
            d["regularization"] = ev.regularization;
            d["correct"] = ev.correct;
            d["examples"] = ev.examples;
            d["accuracy"] = static_cast<double>(ev.correct) / static_cast<double>(ev.examples);
            d["gradient"] = grad;
            return d;
          },
          py::arg("theta"), py::arg("features"), py::arg("labels"), py::arg("tikhonov") = 0.0,
          py::arg("classifier") = 0.0, py::arg("ddt") = 0.0, py::arg("gradient") = true,
          "Objective, mean loss, accuracy and (optionally) the gradient by serial forward and adjoint sweeps.")
      .def(
          "layout",
          [](const ResidualNetwork& net) {
            py::list out;
            for (const ParameterBlock& b : net.parameters().blocks)
              out.append(py::make_tuple(b.name, b.offset, std::vector<py::ssize_t>(b.shape.begin(), b.shape.end())));
            return out;
          },
          "List of (name, offset, shape) of the parameter blocks in the flat vector, in order.")
      .def(
          "parameter_blocks",
          [](const ResidualNetwork& net) {
            py::list out;
            for (const ParameterBlock& b : net.parameters().blocks) {
              py::dict d;
              d["name"] = b.name;
              d["offset"] = b.offset;
              d["shape"] = py::tuple(py::cast(std::vector<py::ssize_t>(b.shape.begin(), b.shape.end())));
              d["per_layer"] = b.per_layer;
              d["classifier"] = b.classifier;
              out.append(d);
            }
            return out;
          },
          "The parameter blocks with their roles: name, offset, shape, per_layer (one row per hidden layer) "
          "and classifier (regularised by the classifier weight, else by Tikhonov).")
      .def(
          "regularization_values",
          [](const ResidualNetwork& net, const py::handle& theta, int a, int b, bool first, bool last,
             double tikhonov, double classifier, double ddt) {
            DArray th = theta_of(net, theta);
            Regularization reg{tikhonov, classifier, ddt};
            reg.validate();
            if (a < 0 || a > b || b > net.layers())
              throw py::value_error("owned layers [" + std::to_string(a) + ", " + std::to_string(b) +
                                    ") must lie in [0, " + std::to_string(net.layers()) + "]");
            DArray g(static_cast<py::ssize_t>(net.param_size()));
            double* gp = g.mutable_data();
            std::fill(gp, gp + net.param_size(), 0.0);
            std::vector<double> values;
            regularization_values(net.parameters(), net.h(), reg, th.data(), a, b, first, last, values, gp);
            return py::make_tuple(DArray(static_cast<py::ssize_t>(values.size()), values.data()), g);
          },
          py::arg("theta"), py::arg("first_layer"), py::arg("end_layer"), py::arg("first"), py::arg("last"),
          py::arg("tikhonov"), py::arg("classifier"), py::arg("ddt"),
          "(values, gradient) of the regularisers on the entries a process owns: layers "
          "[first_layer, end_layer) of the per-layer blocks, the opening when first, the classifier when last. "
          "theta must also hold the rows of layers first_layer - 1 and end_layer. The values are per slot, "
          "zero where another process owns them: summed over processes and then left to right (ordered_sum) "
          "they give the same rounding on any split; regularization() is that sum on one process.")
      .def(
          "regularization",
          [](const ResidualNetwork& net, const py::handle& theta, double tikhonov, double classifier, double ddt) {
            DArray th = theta_of(net, theta);
            Regularization reg{tikhonov, classifier, ddt};
            reg.validate();
            DArray g(static_cast<py::ssize_t>(net.param_size()));
            double* gp = g.mutable_data();
            std::fill(gp, gp + net.param_size(), 0.0);
            const double value = net.regularization(th.data(), reg, gp);
            return py::make_tuple(value, g);
          },
          py::arg("theta"), py::arg("tikhonov"), py::arg("classifier"), py::arg("ddt"),
          "(value, gradient) of the three regularisers.")
      .def(
          "logits",
          [](const ResidualNetwork& net, const py::handle& theta, const py::handle& X) {
            DArray th = theta_of(net, theta);
            DArray x = features_of(net, X);
            const int s = static_cast<int>(x.shape(0));
            DArray z({static_cast<py::ssize_t>(s), static_cast<py::ssize_t>(net.classes())});
            double* zp = z.mutable_data();
            {
              py::gil_scoped_release nogil;
              net.logits(th.data(), x.data(), s, zp);
            }
            return z;
          },
          py::arg("theta"), py::arg("features"))
      .def(
          "forward_states",
          [](const ResidualNetwork& net, const py::handle& theta, const py::handle& X) {
            DArray th = theta_of(net, theta);
            DArray x = features_of(net, X);
            const int s = static_cast<int>(x.shape(0));
            DArray u({static_cast<py::ssize_t>(net.layers() + 1), static_cast<py::ssize_t>(s),
                      static_cast<py::ssize_t>(net.state_width())});
            double* up = u.mutable_data();
            {
              py::gil_scoped_release nogil;
              net.forward_sweep(th.data(), x.data(), s, up);
            }
            return u;
          },
          py::arg("theta"), py::arg("features"), "All states u_0..u_N, shape (N+1, s, state_width).");

  py::class_<DenseResNet, ResidualNetwork>(m, "DenseResNet", "Dense residual network (docs/algorithm.md sections 1-2).")
      .def(py::init([](int nf, int nc, int w, int N, double T, const std::string& a, const std::string& o) {
             return DenseResNet(make_spec(nf, nc, w, N, T, a, o));
           }),
           py::arg("n_features"), py::arg("n_classes"), py::arg("width"), py::arg("layers"), py::arg("T"),
           py::arg("activation"), py::arg("opening"))
      .def_property_readonly("width", [](const DenseResNet& n) { return n.spec().width; })
      .def_property_readonly("T", [](const DenseResNet& n) { return n.spec().T; })
      .def_property_readonly("activation", [](const DenseResNet& n) { return activation_name(n.spec().activation); })
      .def_property_readonly("opening", [](const DenseResNet& n) { return opening_name(n.spec().opening); });

  py::class_<ConvResNet, ResidualNetwork>(m, "ConvResNet",
                                          "3x3 convolutional residual network with the replicate opening.")
      .def(py::init([](int channels, int height, int width, int n_classes, int layers, double T,
                       const std::string& activation, const std::string& bias, const std::string& opening) {
             ConvSpec s;
             s.channels = channels;
             s.height = height;
             s.width = width;
             s.n_classes = n_classes;
             s.layers = layers;
             s.T = T;
             s.activation = parse_activation(activation);
             if (bias != "pixel" && bias != "channel")
               throw py::value_error("bias must be 'pixel' or 'channel', got '" + bias + "'");
             s.bias_per_channel = bias == "channel";
             if (opening != "replicate" && opening != "conv")
               throw py::value_error("opening must be 'replicate' or 'conv' for a convolutional network, got '" +
                                     opening + "'");
             s.conv_opening = opening == "conv";
             return ConvResNet(s);
           }),
           py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("n_classes"), py::arg("layers"),
           py::arg("T"), py::arg("activation"), py::arg("bias") = "pixel", py::arg("opening") = "replicate")
      .def_property_readonly("opening",
                             [](const ConvResNet& n) { return n.spec().conv_opening ? "conv" : "replicate"; })
      .def_property_readonly("channels", [](const ConvResNet& n) { return n.spec().channels; })
      .def_property_readonly("height", [](const ConvResNet& n) { return n.spec().height; })
      .def_property_readonly("width", [](const ConvResNet& n) { return n.spec().width; })
      .def_property_readonly("T", [](const ConvResNet& n) { return n.spec().T; })
      .def_property_readonly("activation", [](const ConvResNet& n) { return activation_name(n.spec().activation); })
      .def_property_readonly("bias", [](const ConvResNet& n) { return n.spec().bias_per_channel ? "channel" : "pixel"; });
}

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

  py::class_<DenseResNet, ResidualNetwork>(m, "DenseResNet", "Dense residual network (ALGORITHM.md sections 1-2).")
      .def(py::init([](int nf, int nc, int w, int N, double T, const std::string& a, const std::string& o) {
             return DenseResNet(make_spec(nf, nc, w, N, T, a, o));
           }),
           py::arg("n_features"), py::arg("n_classes"), py::arg("width"), py::arg("layers"), py::arg("T"),
           py::arg("activation"), py::arg("opening"))
      .def_property_readonly("width", [](const DenseResNet& n) { return n.spec().width; })
      .def_property_readonly("T", [](const DenseResNet& n) { return n.spec().T; })
      .def_property_readonly("activation", [](const DenseResNet& n) { return activation_name(n.spec().activation); })
      .def_property_readonly("opening", [](const DenseResNet& n) { return opening_name(n.spec().opening); })
      .def(
          "layout",
          [](const DenseResNet& net) {
            // (name, offset, shape) of every named block, in flat order.
            const auto& L = net.layout();
            const auto& s = net.spec();
            py::list out;
            using Shape = std::vector<py::ssize_t>;
            if (L.has_opening) {
              out.append(py::make_tuple("opening_weight", L.opening_weight, Shape{s.width, s.n_features}));
              out.append(py::make_tuple("opening_bias", L.opening_bias, Shape{}));
            }
            out.append(py::make_tuple("weights", L.weights, Shape{s.layers, s.width, s.width}));
            out.append(py::make_tuple("biases", L.biases, Shape{s.layers}));
            out.append(py::make_tuple("classifier_weight", L.classifier_weight, Shape{s.n_classes, s.width}));
            out.append(py::make_tuple("classifier_bias", L.classifier_bias, Shape{s.n_classes}));
            return out;
          },
          "List of (name, offset, shape) of the parameter blocks in the flat vector.");

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
      .def_property_readonly("bias", [](const ConvResNet& n) { return n.spec().bias_per_channel ? "channel" : "pixel"; })
      .def(
          "layout",
          [](const ConvResNet& net) {
            const auto& L = net.layout();
            const auto& s = net.spec();
            using Shape = std::vector<py::ssize_t>;
            py::list out;
            if (s.conv_opening) {
              out.append(py::make_tuple("opening_weight", L.opening_weight, Shape{s.channels, 1, 3, 3}));
              out.append(py::make_tuple("opening_bias", L.opening_bias,
                                        s.bias_per_channel ? Shape{s.channels} : Shape{s.height, s.width}));
            }
            out.append(py::make_tuple("weights", L.weights, Shape{s.layers, s.channels, s.channels, 3, 3}));
            out.append(py::make_tuple("biases", L.biases,
                                      s.bias_per_channel ? Shape{s.layers, s.channels}
                                                         : Shape{s.layers, s.height, s.width}));
            out.append(py::make_tuple("classifier_weight", L.classifier_weight,
                                      Shape{s.n_classes, s.channels * s.height * s.width}));
            out.append(py::make_tuple("classifier_bias", L.classifier_bias, Shape{s.n_classes}));
            return out;
          },
          "List of (name, offset, shape) of the parameter blocks in the flat vector.");
}

// The layerparallel._core extension module: links the engine library and
// calls one bind_<subsystem> per binding file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_comm(py::module_& m);
void bind_network(py::module_& m);
void bind_ode(py::module_& m);
void bind_resnet_mgrit(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "Compiled core of layerparallel (C++ engine, CPU backend)";
  m.attr("__version__") = LP_VERSION;
  // C++ exceptions map to Python: std::invalid_argument -> ValueError (pybind11's default),
  // std::runtime_error -> RuntimeError.
  bind_comm(m);
  bind_network(m);
  bind_ode(m);
  bind_resnet_mgrit(m);
}

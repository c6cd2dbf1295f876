// Boundary validation shared by the binding files: shapes, dtypes, finiteness.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace lpbind {

namespace py = pybind11;
using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using IArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

inline std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t k = 0; k < a.ndim(); ++k) os << (k ? ", " : "") << a.shape(k) << (a.ndim() == 1 ? "," : "");
  os << ")";
  return os.str();
}

/// Converts to a C-contiguous float64 array with the given number of dimensions and
/// (where >= 0) sizes, all values finite; ValueError naming `what` otherwise.
inline DArray as_doubles(const py::handle& obj, const char* what, int ndim, py::ssize_t d0 = -1,
                         py::ssize_t d1 = -1) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw py::value_error(std::string(what) + " must be a numeric array");
  if (raw.dtype().kind() != 'f' && raw.dtype().kind() != 'i' && raw.dtype().kind() != 'u')
    throw py::value_error(std::string(what) + " must hold real numbers, got dtype " +
                          std::string(py::str(raw.dtype())));
  DArray a = DArray::ensure(raw);
  std::ostringstream expect;
  bool ok = a.ndim() == ndim && (d0 < 0 || a.shape(0) == d0) && (ndim < 2 || d1 < 0 || a.shape(1) == d1);
  if (!ok) {
    expect << what << " must have shape (";
    expect << (d0 < 0 ? std::string("s") : std::to_string(d0));
    if (ndim >= 2) expect << ", " << (d1 < 0 ? std::string("any") : std::to_string(d1));
    if (ndim == 1) expect << ",";
    expect << "), got " << shape_str(a);
    throw py::value_error(expect.str());
  }
  const double* p = a.data();
  for (py::ssize_t k = 0; k < a.size(); ++k)
    if (!std::isfinite(p[k]))
      throw py::value_error(std::string(what) + " must be finite, found " + std::to_string(p[k]) +
                            " at flat index " + std::to_string(k));
  return a;
}

inline IArray as_labels(const py::handle& obj, const char* what, py::ssize_t n, std::int64_t n_classes) {
  py::array raw = py::array::ensure(obj);
  if (!raw || (raw.dtype().kind() != 'i' && raw.dtype().kind() != 'u'))
    throw py::value_error(std::string(what) + " must be an integer array of class indices");
  IArray a = IArray::ensure(raw);
  if (a.ndim() != 1 || a.shape(0) != n)
    throw py::value_error(std::string(what) + " must have shape (" + std::to_string(n) + ",), got " +
                          shape_str(a));
  const std::int64_t* p = a.data();
  for (py::ssize_t k = 0; k < n; ++k)
    if (p[k] < 0 || p[k] >= n_classes)
      throw py::value_error(std::string(what) + " must lie in [0, " + std::to_string(n_classes) +
                            "), found " + std::to_string(p[k]) + " at index " + std::to_string(k));
  return a;
}

}  // namespace lpbind

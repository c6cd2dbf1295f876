// Conversion of Python keyword options to MgritOptions, shared by the binding
// files of the generic engine and of the ResNet solvers.
#pragma once

#include <climits>
#include <string>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>
#include <vector>

#include "layerparallel/mgrit.h"

namespace lpbind {

namespace py = pybind11;

/// Builds MgritOptions from a dict with (a subset of) the keys max_levels,
/// cfactor, cfactor_fine, min_coarse, relax (a string "F,FCF" / "F FCF" or a
/// list of strings), cycle, tol, rtol, max_iter, fmg, skip_first_down, store,
/// threads, compute_residuals. Unknown keys and wrong types raise ValueError naming the key.
inline layerparallel::MgritOptions mgrit_options(const py::dict& d) {
  layerparallel::MgritOptions o;
  for (auto item : d) {
    const std::string key = py::str(item.first);
    py::handle v = item.second;
    auto as_int = [&](int& dst) {
      if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v))
        throw py::value_error("mgrit option " + key + " must be an integer");
      // The engine takes 32-bit integers: a larger one would be a cast error.
      if (v.attr("__gt__")(INT_MAX).cast<bool>() || v.attr("__lt__")(INT_MIN).cast<bool>())
        throw py::value_error("mgrit option " + key + " must be at most " + std::to_string(INT_MAX) +
                              " in size (a 32-bit integer), got " + py::str(v).cast<std::string>());
      dst = v.cast<int>();
    };
    auto as_float = [&](double& dst) {
      if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::float_>(v) || py::isinstance<py::int_>(v)))
        throw py::value_error("mgrit option " + key + " must be a number");
      dst = v.cast<double>();
    };
    auto as_bool = [&](bool& dst) {
      if (!py::isinstance<py::bool_>(v)) throw py::value_error("mgrit option " + key + " must be true or false");
      dst = v.cast<bool>();
    };
    auto as_str = [&](std::string& dst) {
      if (!py::isinstance<py::str>(v)) throw py::value_error("mgrit option " + key + " must be a string");
      dst = v.cast<std::string>();
    };
    if (key == "max_levels") as_int(o.max_levels);
    else if (key == "cfactor") as_int(o.cfactor);
    else if (key == "cfactor_fine") as_int(o.cfactor_fine);
    else if (key == "min_coarse") as_int(o.min_coarse);
    else if (key == "max_iter") as_int(o.max_iter);
    else if (key == "threads") as_int(o.threads);
    else if (key == "tol") as_float(o.tol);
    else if (key == "rtol") as_float(o.rtol);
    else if (key == "fmg") as_bool(o.fmg);
    else if (key == "skip_first_down") as_bool(o.skip_first_down);
    else if (key == "compute_residuals") as_bool(o.compute_residuals);
    else if (key == "cycle") as_str(o.cycle);
    else if (key == "store") as_str(o.store);
    else if (key == "relax") {
      o.relax.clear();
      if (py::isinstance<py::str>(v)) {
        std::string s = v.cast<std::string>();
        for (char& c : s)
          if (c == ',') c = ' ';
        std::istringstream is(s);
        std::string tok;
        while (is >> tok) o.relax.push_back(tok);
      } else {
        try {
          o.relax = v.cast<std::vector<std::string>>();
        } catch (const py::cast_error&) {
          throw py::value_error("mgrit option relax must be a string like \"F,FCF\" or a list of strings");
        }
      }
    } else {
      throw py::value_error("unknown mgrit option '" + key + "'");
    }
  }
  o.validate();
  return o;
}

}  // namespace lpbind

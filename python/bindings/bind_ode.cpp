// Bindings of the generic MGRIT engine for any ODE whose one-step map is a
// Python callable: a Propagator that calls back into Python, ode_solve (MGRIT)
// and ode_serial (exact forward substitution). The Python side is
// layerparallel/ode.py.
//
// Threads: a Python step function can only run while its thread holds the GIL,
// so concurrent calls from the engine's OpenMP threads would just queue on the
// GIL (and give the user's function a nondeterministic call order for nothing).
// The solver is therefore always run with MgritOptions::threads = 1; the
// parallelism a user gets here is MGRIT's algorithmic one, which pays off when
// the step itself is parallel (numpy/BLAS inside, or a later MPI layout).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"
#include "layerparallel/mgrit.h"
#include "layerparallel/propagator.h"
#include "mgrit_options.h"

namespace py = pybind11;
using namespace layerparallel;
using lpbind::as_doubles;
using lpbind::DArray;

namespace {

/// Propagator whose step is the Python callable step(u, t0, t1, level) -> new u.
/// Every call gets a fresh float64 copy of the input state, so whatever the
/// callable does to its argument (in place updates, keeping a reference) cannot
/// reach the engine's buffers; the result is validated and copied into `out`.
class PyPropagator final : public Propagator {
 public:
  PyPropagator(py::object step, std::vector<double> t, std::size_t n)
      : step_(std::move(step)), t_(std::move(t)), n_(n) {}

  std::size_t state_size() const override { return n_; }

  void step(int level, int i0, int i1, const double* in, double* out) override {
    // The engine runs with the GIL released; take it back for the call.
    py::gil_scoped_acquire gil;
    const double t0 = t_[static_cast<std::size_t>(i0)];
    const double t1 = t_[static_cast<std::size_t>(i1)];
    py::array_t<double> u(static_cast<py::ssize_t>(n_));
    std::memcpy(u.mutable_data(), in, n_ * sizeof(double));
    py::object r;
    try {
      r = step_(u, t0, t1, level);
    } catch (py::error_already_set& e) {
      // Keep the user's exception (type, message, traceback); say where it came from.
      if (py::hasattr(e.value(), "add_note"))  // Python >= 3.11
        e.value().attr("add_note")("raised by the step function called as step(u, " + where(t0, t1, level) +
                                   ") from the layerparallel MGRIT solver");
      throw;
    }
    copy_result(r, out, t0, t1, level);
  }

 private:
  static std::string where(double t0, double t1, int level) {
    return "t0=" + std::string(py::repr(py::float_(t0))) + ", t1=" + std::string(py::repr(py::float_(t1))) +
           ", level=" + std::to_string(level);
  }

  [[noreturn]] void fail(const std::string& what, double t0, double t1, int level) const {
    throw py::value_error("step " + what + " (" + where(t0, t1, level) +
                          "); it must return the new state as a real array of shape (" + std::to_string(n_) + ",)");
  }

  void copy_result(const py::object& r, double* out, double t0, double t1, int level) const {
    if (r.is_none()) fail("returned None", t0, t1, level);
    py::array raw = py::array::ensure(r);
    if (!raw) fail("returned a " + std::string(py::str(py::type::of(r).attr("__name__"))) +
                       " that is not convertible to an array", t0, t1, level);
    const char kind = raw.dtype().kind();
    if (kind == 'c') fail("returned complex values (dtype " + std::string(py::str(raw.dtype())) + ")", t0, t1, level);
    if (kind != 'f' && kind != 'i' && kind != 'u')
      fail("returned an array of dtype " + std::string(py::str(raw.dtype())) + ", not real numbers", t0, t1, level);
    if (raw.ndim() != 1 || raw.shape(0) != static_cast<py::ssize_t>(n_))
      fail("returned shape " + lpbind::shape_str(raw) + " for a state of size " + std::to_string(n_), t0, t1,
           level);
    DArray a = DArray::ensure(raw);
    if (!a) fail("returned values not convertible to float64", t0, t1, level);
    const double* p = a.data();
    for (std::size_t k = 0; k < n_; ++k) {
      if (!std::isfinite(p[k]))
        fail("returned a non-finite value (" + std::string(py::repr(py::float_(p[k]))) + " at index " +
                 std::to_string(k) + ")",
             t0, t1, level);
      out[k] = p[k];
    }
  }

  py::object step_;
  std::vector<double> t_;
  std::size_t n_;
};

py::object checked_step(const py::object& step) {
  if (!PyCallable_Check(step.ptr()))
    throw py::type_error("step must be callable as step(u, t0, t1, level) -> new state, got a " +
                         std::string(py::str(py::type::of(step).attr("__name__"))));
  return step;
}

DArray initial_state(const py::handle& u0) {
  DArray a = as_doubles(u0, "u0 (the initial state)", 1);
  if (a.shape(0) < 1) throw py::value_error("u0 (the initial state) must hold at least one value, got shape (0,)");
  return a;
}

/// The time grid as a vector: 1-D, >= 2 points, finite, strictly increasing.
std::vector<double> time_grid(const py::handle& t) {
  DArray a = as_doubles(t, "t (the time grid)", 1);
  const py::ssize_t n = a.shape(0);
  if (n < 2) throw py::value_error("t (the time grid) must hold at least 2 points, got " + std::to_string(n));
  if (n - 1 > std::numeric_limits<int>::max())
    throw py::value_error("t (the time grid) has too many points (" + std::to_string(n) + ")");
  const double* p = a.data();
  for (py::ssize_t k = 1; k < n; ++k)
    if (!(p[k] > p[k - 1]))
      throw py::value_error("t (the time grid) must be strictly increasing, but t[" + std::to_string(k) +
                            "] = " + std::string(py::repr(py::float_(p[k]))) + " <= t[" + std::to_string(k - 1) +
                            "] = " + std::string(py::repr(py::float_(p[k - 1]))));
  return std::vector<double>(p, p + n);
}

MgritOptions ode_options(const py::dict& options) {
  if (options.contains("threads")) {
    py::object v = options["threads"];
    if (!(py::isinstance<py::int_>(v) && !py::isinstance<py::bool_>(v) && v.cast<long long>() >= 0 &&
          v.cast<long long>() <= 1))
      throw py::value_error("mgrit option threads must be 0 or 1 for a Python step function: the GIL "
                            "serialises its calls, so the solver runs on one thread, got " +
                            std::string(py::repr(v)));
  }
  MgritOptions o = lpbind::mgrit_options(options);
  o.threads = 1;
  return o;
}

py::list to_list(const std::vector<double>& v) {
  py::list l;
  for (double x : v) l.append(x);
  return l;
}

/// The solve() stopping rule applied to the history of an iterate() call.
bool meets_tolerance(const std::vector<double>& h, const MgritOptions& o) {
  if (h.empty()) return false;
  const double r = h.back();
  if (!std::isfinite(r)) return false;
  if (r == 0.0) return true;
  if (o.tol > 0.0 && r <= o.tol) return true;
  const double ref = std::isfinite(h[0]) ? h[0] : h.size() > 1 ? h[1] : std::nan("");
  return o.rtol > 0.0 && std::isfinite(ref) && r <= o.rtol * ref;
}

py::dict ode_solve(const py::object& step_fn, const py::handle& u0_in, const py::handle& t_in,
                   const py::dict& options, const py::object& initial, const py::object& iterations) {
  py::object step = checked_step(step_fn);
  DArray u0 = initial_state(u0_in);
  std::vector<double> t = time_grid(t_in);
  const MgritOptions opts = ode_options(options);
  const int N = static_cast<int>(t.size()) - 1;
  const std::size_t n = static_cast<std::size_t>(u0.shape(0));

  int cycles = -1;
  if (!iterations.is_none()) {
    if (!py::isinstance<py::int_>(iterations) || py::isinstance<py::bool_>(iterations))
      throw py::value_error("iterations must be None (solve to tolerance) or an integer >= 0, got " +
                            std::string(py::repr(iterations)));
    const long long k = iterations.cast<long long>();
    if (k < 0 || k > std::numeric_limits<int>::max())
      throw py::value_error("iterations must be >= 0, got " + std::to_string(k));
    cycles = static_cast<int>(k);
  }
  const bool warm = !initial.is_none();
  DArray init;  // a default array_t is an empty array, not a null handle: test `warm`
  if (warm)
    init = as_doubles(initial, "initial (the warm-start trajectory)", 2, static_cast<py::ssize_t>(N) + 1,
                      static_cast<py::ssize_t>(n));

  PyPropagator prop(step, std::move(t), n);
  Mgrit solver(prop, N, opts);
  solver.set_initial(u0.data());
  if (warm) solver.warm_start(init.data());

  py::array_t<double> states({static_cast<py::ssize_t>(N) + 1, static_cast<py::ssize_t>(n)});
  double* sp = states.mutable_data();
  bool converged = false;
  {
    py::gil_scoped_release nogil;
    if (cycles >= 0) {
      solver.iterate(cycles);
      converged = meets_tolerance(solver.residual_history(), solver.options());
    } else {
      converged = solver.solve();
    }
    solver.trajectory(sp);
  }

  py::dict d;
  d["states"] = states;
  d["residuals"] = to_list(solver.residual_history());
  d["factors"] = to_list(solver.convergence_factors());
  d["iterations"] = solver.iterations();
  d["steps_per_level"] = py::cast(solver.steps_per_level());
  d["total_steps"] = solver.total_steps();
  d["levels"] = solver.hierarchy().num_levels();
  d["converged"] = converged;
  return d;
}

py::array_t<double> ode_serial(const py::object& step_fn, const py::handle& u0_in, const py::handle& t_in) {
  py::object step = checked_step(step_fn);
  DArray u0 = initial_state(u0_in);
  std::vector<double> t = time_grid(t_in);
  const int N = static_cast<int>(t.size()) - 1;
  const std::size_t n = static_cast<std::size_t>(u0.shape(0));
  PyPropagator prop(step, std::move(t), n);
  py::array_t<double> states({static_cast<py::ssize_t>(N) + 1, static_cast<py::ssize_t>(n)});
  double* sp = states.mutable_data();
  {
    py::gil_scoped_release nogil;
    serial_propagate(prop, N, u0.data(), sp);
  }
  return states;
}

}  // namespace

void bind_ode(py::module_& m) {
  m.def("ode_solve", &ode_solve, py::arg("step"), py::arg("u0"), py::arg("t"), py::arg("options") = py::dict(),
        py::arg("initial") = py::none(), py::arg("iterations") = py::none(),
        "MGRIT solve of u_{i+1} = step(u_i, t[i], t[i+1], 0) on the grid t (coarse levels call "
        "step(u, t[i], t[i+s], level) with the level's stride s). iterations=None runs cycles to "
        "tol/rtol/max_iter, an integer runs exactly that many; initial is a warm-start trajectory "
        "(N+1, n). Returns a dict: states, residuals, factors, iterations, steps_per_level, "
        "total_steps, levels, converged. Runs on one thread (the GIL serialises the step calls).");
  m.def("ode_serial", &ode_serial, py::arg("step"), py::arg("u0"), py::arg("t"),
        "Exact serial forward substitution u_{i+1} = step(u_i, t[i], t[i+1], 0): (N+1, n) states.");
}

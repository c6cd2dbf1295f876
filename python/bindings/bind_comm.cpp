// The communicator seam exposed to Python: a Python subclass of _core.Comm
// (layerparallel.comm.core_comm, which forwards to an mpi4py communicator)
// is what the C++ engine sends through. The engine calls it from one thread
// with the GIL released; each call takes the GIL back. Buffers are handed over
// as numpy views of the engine's memory (no copy); the engine keeps them alive
// and unchanged until it has waited on the request.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <map>

#include "layerparallel/comm.h"
#include "layerparallel/mpi_comm.h"

namespace py = pybind11;
using layerparallel::Comm;
using layerparallel::MpiComm;

namespace {

py::array_t<double> view(const double* data, std::size_t n) {
  // A do-nothing capsule as the base: numpy then borrows the memory instead of copying it.
  py::capsule borrowed(data, [](void*) {});
  return py::array_t<double>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(double))}, data,
                             borrowed);
}

class PyComm : public Comm {
 public:
  int rank() const override { PYBIND11_OVERRIDE_PURE(int, Comm, rank, ); }
  int size() const override { PYBIND11_OVERRIDE_PURE(int, Comm, size, ); }
  void barrier() override { PYBIND11_OVERRIDE_PURE(void, Comm, barrier, ); }
  void allreduce_sum(double* data, std::size_t n) override {
    py::gil_scoped_acquire gil;
    call("allreduce_sum")(view(data, n));
  }
  void bcast(double* data, std::size_t n, int root) override {
    py::gil_scoped_acquire gil;
    call("bcast")(view(data, n), root);
  }
  int isend(const double* data, std::size_t n, int dest, int tag) override {
    py::gil_scoped_acquire gil;
    return call("isend")(view(data, n), dest, tag).cast<int>();
  }
  int irecv(double* data, std::size_t n, int src, int tag) override {
    py::gil_scoped_acquire gil;
    return call("irecv")(view(data, n), src, tag).cast<int>();
  }
  void wait(int request) override {
    py::gil_scoped_acquire gil;
    call("wait")(request);
  }

 private:
  py::function call(const char* name) const {
    py::function f = py::get_override(static_cast<const Comm*>(this), name);
    if (!f) throw std::logic_error(std::string("Comm subclass does not implement ") + name);
    return f;
  }
};

// Python-side use of an MpiComm (the solver's own messages): buffers must be
// float64, C-contiguous and, for receives, writeable, so that MPI works on the
// caller's memory and never on a temporary copy.
double* buffer(const py::array& a, bool writeable, const char* what) {
  if (!py::isinstance<py::array_t<double>>(a) || !(a.flags() & py::array::c_style) ||
      (writeable && !a.writeable()))
    throw py::value_error(std::string(what) + " needs a C-contiguous float64 numpy array" +
                          (writeable ? " that is writeable" : ""));
  return static_cast<double*>(const_cast<void*>(a.data()));
}

py::dict alive(py::object self) {
  if (!py::hasattr(self, "_alive")) self.attr("_alive") = py::dict();
  return self.attr("_alive");
}

// isend / irecv from Python: `post` starts the message on the caller's buffer,
// which stays referenced (so alive) until wait(id).
template <class Post>
auto post_keeping_alive(const char* what, bool writeable, Post post) {
  return [what, writeable, post](py::object self, const py::array& a, int peer, int tag) {
    const int id = post(self.cast<MpiComm&>(), buffer(a, writeable, what), static_cast<std::size_t>(a.size()), peer, tag);
    alive(self)[py::int_(id)] = a;
    return id;
  };
}

py::list trace_list(const std::vector<layerparallel::TraceEvent>& ev) {
  py::list out;
  for (const auto& e : ev) {
    const std::string k = e.kind;
    if (k == "send" || k == "recv")
      out.append(py::make_tuple(k, e.span_ns, e.peer, e.tag, e.bytes, e.request));
    else if (k == "wait")
      out.append(py::make_tuple(k, e.span_ns, e.request));
    else if (k == "allreduce")
      out.append(py::make_tuple(k, e.span_ns, e.bytes));
    else if (k == "bcast")
      out.append(py::make_tuple(k, e.span_ns, e.bytes, e.peer));
    else if (k == "barrier")
      out.append(py::make_tuple(k, e.span_ns, 0));
    else
      out.append(py::make_tuple(k, e.span_ns));
  }
  return out;
}

}  // namespace

void bind_comm(py::module_& m) {
  // Reproducible reductions (layerparallel.layer_parallel.LayerShard): one compiled loop
  // for every block, so the same values give the same bits on any split.
  m.def(
      "block_dots",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& a,
         const py::array_t<double, py::array::c_style | py::array::forcecast>& b,
         const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& bounds) {
        if (a.ndim() != 1 || b.ndim() != 1 || a.size() != b.size())
          throw py::value_error("block_dots needs two 1-D arrays of the same length");
        const std::int64_t* bd = bounds.data();
        const py::ssize_t nb = bounds.size() > 0 ? bounds.size() - 1 : 0;
        py::array_t<double> out(nb);
        double* o = out.mutable_data();
        const double* x = a.data();
        const double* y = b.data();
        for (py::ssize_t i = 0; i < nb; ++i) {
          if (bd[i] < 0 || bd[i] > bd[i + 1] || bd[i + 1] > a.size())
            throw py::value_error("block_dots: bounds must be non-decreasing offsets into the arrays");
          double acc = 0.0;
          for (std::int64_t k = bd[i]; k < bd[i + 1]; ++k) acc += x[k] * y[k];
          o[i] = acc;
        }
        return out;
      },
      py::arg("a"), py::arg("b"), py::arg("bounds"),
      "out[i] = sum(a[k] * b[k] for k in bounds[i]..bounds[i+1]-1), each in one fixed order.");
  m.def(
      "ordered_sum",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& a) {
        double acc = 0.0;
        const double* x = a.data();
        for (py::ssize_t k = 0; k < a.size(); ++k) acc += x[k];
        return acc;
      },
      py::arg("values"), "Left-to-right sum (the same rounding wherever it runs).");

  py::class_<Comm, PyComm>(m, "Comm",
                           "Base class of the communicators the engine talks through. Subclasses implement "
                           "rank(), size(), barrier(), allreduce_sum(buf), bcast(buf, root), isend(buf, dest, "
                           "tag) -> id, irecv(buf, src, tag) -> id and wait(id); buf is a float64 numpy view.")
      .def(py::init<>())
      .def("rank", &Comm::rank)
      .def("size", &Comm::size);

  // MpiComm is a Comm the engine uses directly (no Python per message). The
  // holder keeps the buffers of Python-side requests alive until their wait.
  py::class_<MpiComm, Comm>(m, "MpiComm", py::dynamic_attr(),
                            "Comm over an mpi4py communicator through the already loaded MPI library "
                            "(layerparallel.comm.core_comm builds it).")
      .def(py::init([](std::uintptr_t comm, std::uintptr_t dtype, std::uintptr_t op_sum, const std::string& lib) {
             layerparallel::MpiHandles h{comm, dtype, op_sum, lib};
             return new MpiComm(h);
           }),
           py::arg("comm_handle"), py::arg("double_handle"), py::arg("sum_handle"), py::arg("library"))
      .def("allreduce_sum",
           [](MpiComm& c, const py::array& a) { c.allreduce_sum(buffer(a, true, "allreduce_sum"), a.size()); })
      .def("bcast", [](MpiComm& c, const py::array& a, int root) { c.bcast(buffer(a, true, "bcast"), a.size(), root); })
      .def("barrier", &MpiComm::barrier)
      .def("isend",
           post_keeping_alive("isend", false,
                              [](MpiComm& c, double* p, std::size_t n, int peer, int tag) { return c.isend(p, n, peer, tag); }),
           py::arg("buf"), py::arg("dest"), py::arg("tag"))
      .def("irecv",
           post_keeping_alive("irecv", true,
                              [](MpiComm& c, double* p, std::size_t n, int peer, int tag) { return c.irecv(p, n, peer, tag); }),
           py::arg("buf"), py::arg("src"), py::arg("tag"))
      .def("wait",
           [](py::object self, int id) {
             self.cast<MpiComm&>().wait(id);
             py::dict d = alive(self);
             if (d.contains(py::int_(id))) PyDict_DelItem(d.ptr(), py::int_(id).ptr());
           })
      .def("start_trace", &MpiComm::start_trace)
      .def("stop_trace", [](MpiComm& c) { return trace_list(c.stop_trace()); });
}

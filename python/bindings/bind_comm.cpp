// The communicator seam exposed to Python: a Python subclass of _core.Comm
// (layerparallel.parallel.CoreComm, which forwards to an mpi4py communicator)
// is what the C++ engine sends through. The engine calls it from one thread
// with the GIL released; each call takes the GIL back. Buffers are handed over
// as numpy views of the engine's memory (no copy); the engine keeps them alive
// and unchanged until it has waited on the request.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "layerparallel/comm.h"

namespace py = pybind11;
using layerparallel::Comm;

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

}  // namespace

void bind_comm(py::module_& m) {
  py::class_<Comm, PyComm>(m, "Comm",
                           "Base class of the communicators the engine talks through. Subclasses implement "
                           "rank(), size(), barrier(), allreduce_sum(buf), bcast(buf, root), isend(buf, dest, "
                           "tag) -> id, irecv(buf, src, tag) -> id and wait(id); buf is a float64 numpy view.")
      .def(py::init<>())
      .def("rank", &Comm::rank)
      .def("size", &Comm::size);
}

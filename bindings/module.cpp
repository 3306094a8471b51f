#include <string>

#include "register.hpp"

namespace {

// Every class of the module refuses Cls.__new__(Cls) without its constructor: pybind11 would
// hand back an object whose C++ value does not exist, and the first method call would
// dereference it (a segfault). The refusing __new__ goes into the class dict only, so the
// tp_new slot that Cls(...) uses is unchanged.
void refuse_bare_new(pybind11::module_& m) {
  namespace py = pybind11;
  for (const auto& item : m.attr("__dict__").cast<py::dict>()) {
    if (!PyType_Check(item.second.ptr())) continue;
    auto* type = reinterpret_cast<PyTypeObject*>(item.second.ptr());
    if (type->tp_dict == nullptr || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE)) continue;
    const std::string name = py::str(item.first);
    py::cpp_function refuse(
        [name](const py::args&, const py::kwargs&) -> py::object {
          throw py::type_error(name + ".__new__(" + name + ") makes no usable object: call " +
                               name + "(...) to construct one");
        },
        py::name("__new__"));
    py::object wrapped = py::reinterpret_steal<py::object>(PyStaticMethod_New(refuse.ptr()));
    if (!wrapped || PyDict_SetItemString(type->tp_dict, "__new__", wrapped.ptr()) != 0) {
      throw py::error_already_set();
    }
    PyType_Modified(type);
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "colmena's compiled core (private; use the colmena package).";
  colmena::bindings::register_info(m);
  colmena::bindings::register_buffer(m);
  colmena::bindings::register_features(m);
  colmena::bindings::register_state(m);
  colmena::bindings::register_risk(m);
  colmena::bindings::register_loop(m);
  colmena::bindings::register_nn(m);
  colmena::bindings::register_cuda(m);
  refuse_bare_new(m);
}

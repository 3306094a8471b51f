#pragma once
// One registration function per area; module.cpp only assembles them.
#include <pybind11/pybind11.h>

namespace colmena::bindings {
void register_info(pybind11::module_& m);
void register_buffer(pybind11::module_& m);
void register_features(pybind11::module_& m);
void register_state(pybind11::module_& m);
void register_risk(pybind11::module_& m);
void register_loop(pybind11::module_& m);
void register_nn(pybind11::module_& m);
void register_cuda(pybind11::module_& m);
}  // namespace colmena::bindings

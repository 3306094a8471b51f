#include "register.hpp"
namespace colmena::bindings {
void register_buffer(pybind11::module_&) {}
}  // namespace colmena::bindings

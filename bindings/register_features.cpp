#include "register.hpp"
namespace colmena::bindings {
void register_features(pybind11::module_&) {}
}  // namespace colmena::bindings

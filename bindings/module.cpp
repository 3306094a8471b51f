#include "register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "colmena's compiled core (private; use the colmena package).";
  colmena::bindings::register_info(m);
  colmena::bindings::register_buffer(m);
  colmena::bindings::register_features(m);
  colmena::bindings::register_state(m);
  colmena::bindings::register_risk(m);
  colmena::bindings::register_loop(m);
  colmena::bindings::register_nn(m);
}

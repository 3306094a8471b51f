#pragma once
// Boundary checks shared by the binding files: dtype, dimensions, contiguity.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace colmena::bindings {

using DoubleArray = pybind11::array_t<double, pybind11::array::c_style>;

/// The 1-D C-contiguous float64 array behind `obj`; TypeError naming `name` otherwise.
inline DoubleArray require_1d_float64(const pybind11::handle& obj, const char* name) {
  if (!pybind11::isinstance<pybind11::array>(obj)) {
    throw pybind11::type_error(std::string(name) + " must be a numpy.ndarray of float64");
  }
  auto arr = pybind11::reinterpret_borrow<pybind11::array>(obj);
  if (!arr.dtype().is(pybind11::dtype::of<double>())) {
    throw pybind11::type_error(std::string(name) + " must have dtype float64, got " +
                               std::string(pybind11::str(arr.dtype())));
  }
  if (arr.ndim() != 1) {
    throw pybind11::value_error(std::string(name) + " must be 1-D, got " +
                                std::to_string(arr.ndim()) + " dimensions");
  }
  if (!(arr.flags() & pybind11::array::c_style)) {
    throw pybind11::value_error(std::string(name) + " must be C-contiguous");
  }
  return pybind11::reinterpret_borrow<DoubleArray>(arr);
}

}  // namespace colmena::bindings

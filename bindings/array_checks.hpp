#pragma once
// Boundary checks shared by the binding files: dtype, dimensions, contiguity, numbers that are
// not bools, and MemoryError with a message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

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

/// MemoryError with a message (pybind11 turns a bare std::bad_alloc into one without any).
class memory_error : public pybind11::builtin_exception {
 public:
  using pybind11::builtin_exception::builtin_exception;
  void set_error() const override { PyErr_SetString(PyExc_MemoryError, what()); }
};

/// Runs fn (typically a constructor) and turns std::bad_alloc into MemoryError naming `what`
/// ("MarketBuffer: cannot allocate the storage of capacity 1000000000").
template <class Fn>
decltype(auto) allocating(const std::string& what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    throw memory_error(what);
  }
}

/// The name of obj's type ("float", "str").
inline std::string arg_type_name(const pybind11::handle& obj) {
  return pybind11::str(pybind11::type::handle_of(obj).attr("__name__"));
}

/// (`name` is a C string so that the success path allocates nothing.)
/// TypeError naming `name` when obj is a Python bool: bool is a subclass of int, so an int or
/// float parameter would silently take True as 1 (a timestamp of 1 ns, a capacity of 1, ...).
inline void refuse_bool(const pybind11::handle& obj, const char* name,
                        const char* kind = "a number") {
  if (PyBool_Check(obj.ptr())) {
    throw pybind11::type_error(std::string(name) + " must be " + kind + ", not a bool (got " +
                               std::string(pybind11::str(obj)) + ")");
  }
}

/// obj as an integer (an int or anything with __index__, never a float or a bool); TypeError
/// naming `name` otherwise, OverflowError beyond int64.
inline std::int64_t int_arg(const pybind11::handle& obj, const char* name) {
  refuse_bool(obj, name, "an int");
  if (!PyLong_Check(obj.ptr()) && !PyIndex_Check(obj.ptr())) {
    throw pybind11::type_error(std::string(name) + " must be an int, got " +
                               arg_type_name(obj));
  }
  const long long v = PyLong_AsLongLong(obj.ptr());
  if (v == -1 && PyErr_Occurred()) throw pybind11::error_already_set();
  return v;
}

/// obj as a float (a float, an int or anything with __float__, never a bool or a string);
/// TypeError naming `name` otherwise.
inline double float_arg(const pybind11::handle& obj, const char* name) {
  refuse_bool(obj, name);
  if (PyFloat_CheckExact(obj.ptr())) return PyFloat_AS_DOUBLE(obj.ptr());
  if (PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr())) {
    throw pybind11::type_error(std::string(name) + " must be a number, got " +
                               arg_type_name(obj));
  }
  const double v = PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) throw pybind11::error_already_set();
  return v;
}

/// A read-write number attribute `field` of `cls` (class named `owner`) whose setter refuses
/// bools (TypeError "RiskConfig.max_leverage must be a number, not a bool"), non-numbers and,
/// for unsigned fields, negative values (ValueError).
template <class Class, class T>
void number_field(pybind11::class_<Class>& cls, const char* owner, const char* field,
                  T Class::*member) {
  auto name = std::make_shared<std::string>(std::string(owner) + "." + field);
  cls.def_property(
      field, [member](const Class& c) { return c.*member; },
      [member, name](Class& c, const pybind11::handle& value) {
        if constexpr (std::is_floating_point_v<T>) {
          c.*member = static_cast<T>(float_arg(value, name->c_str()));
        } else {
          const std::int64_t v = int_arg(value, name->c_str());
          if (std::is_unsigned_v<T> && v < 0) {
            throw pybind11::value_error(*name + " must be >= 0, got " + std::to_string(v));
          }
          c.*member = static_cast<T>(v);
        }
      });
}

}  // namespace colmena::bindings

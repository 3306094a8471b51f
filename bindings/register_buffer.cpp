// MarketBuffer and OHLCV validation: array checks, error conversion, GIL release. The logic lives
// in cpp/ (market_buffer.hpp, ohlcv_validation.hpp).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "colmena/market_buffer.hpp"
#include "colmena/ohlcv_validation.hpp"
#include "array_checks.hpp"
#include "core_call.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {

// The core buffer plus a lock: extend() releases the GIL, so without the lock another Python
// thread could write while a bulk copy runs. The lock is never held while taking the GIL.
struct BufferHandle {
  BufferHandle(std::size_t capacity, RingStoragePreference preference)
      : buffer(capacity, preference) {}
  MarketBuffer buffer;
  std::mutex mutex;
};

// A 1-D, contiguous, native-endian array of T; anything else is a TypeError or ValueError that
// names the argument.
template <typename T>
const T* checked_column(const py::handle& obj, const std::string& context, const char* name,
                        std::optional<py::ssize_t>& length) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(context + ": " + name + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  const auto array = py::reinterpret_borrow<py::array>(obj);
  const py::dtype want = py::dtype::of<T>();
  if (!array.dtype().equal(want)) {
    throw py::type_error(context + ": " + name + " must have dtype " + std::string(py::str(want)) +
                         ", got " + std::string(py::str(array.dtype())));
  }
  if (array.ndim() != 1) {
    throw py::value_error(context + ": " + name + " must be 1-D, got " +
                          std::to_string(array.ndim()) + " dimensions");
  }
  if (array.shape(0) > 1 && array.strides(0) != static_cast<py::ssize_t>(sizeof(T))) {
    throw py::value_error(context + ": " + name +
                          " must be contiguous (use numpy.ascontiguousarray)");
  }
  if (length && *length != array.shape(0)) {
    throw py::value_error(context + ": columns differ in length: ts has " +
                          std::to_string(*length) + " rows, " + name + " has " +
                          std::to_string(array.shape(0)));
  }
  length = array.shape(0);
  return static_cast<const T*>(array.data());
}

OhlcvColumns checked_columns(const std::string& context, const py::handle& ts,
                             const py::handle& open, const py::handle& high, const py::handle& low,
                             const py::handle& close, const py::handle& volume) {
  std::optional<py::ssize_t> length;
  OhlcvColumns c;
  c.ts = checked_column<std::int64_t>(ts, context, "ts", length);
  c.open = checked_column<double>(open, context, "open", length);
  c.high = checked_column<double>(high, context, "high", length);
  c.low = checked_column<double>(low, context, "low", length);
  c.close = checked_column<double>(close, context, "close", length);
  c.volume = checked_column<double>(volume, context, "volume", length);
  c.size = static_cast<std::size_t>(*length);
  return c;
}

// A read-only view of n elements at ptr whose base is `owner` (keeps the buffer alive).
template <typename T>
py::array ring_view(const py::object& owner, const T* ptr, std::size_t n) {
  py::array view(py::dtype::of<T>(), {static_cast<py::ssize_t>(n)},
                 {static_cast<py::ssize_t>(sizeof(T))}, ptr, owner);
  py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return view;
}

template <typename T>
py::array owned_array(const std::vector<T>& values) {
  return py::array_t<T>(static_cast<py::ssize_t>(values.size()), values.data());  // copies
}

// MarketBuffer.push as a METH_FASTCALL method: pybind11's generic dispatch (an argument tuple,
// overload resolution, six casters) costs several times more than the push itself, and push is
// the per-candle path of live feeds. Same checks, same errors.
constexpr const char* kPushDoc =
    "push($self, /, ts, open, high, low, close, volume)\n--\n\n"
    "Append one candle (ts int ns since epoch UTC; prices and volume float); O(1). Raises "
    "ValueError on a candle that breaks a rule and TypeError on a non-number.";

PyObject* push_fastcall(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                        PyObject* kwnames) noexcept {
  static constexpr const char* kNames[MarketBuffer::kFields] = {"ts",  "open",  "high",
                                                                "low", "close", "volume"};
  PyObject* values[MarketBuffer::kFields] = {};
  if (nargs > static_cast<Py_ssize_t>(MarketBuffer::kFields)) {
    PyErr_Format(PyExc_TypeError, "MarketBuffer.push() takes 6 arguments (%zd given)", nargs);
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) values[i] = args[i];
  const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, k);
    std::size_t slot = MarketBuffer::kFields;
    for (std::size_t f = 0; f < MarketBuffer::kFields; ++f) {
      if (PyUnicode_CompareWithASCIIString(name, kNames[f]) == 0) slot = f;
    }
    if (slot == MarketBuffer::kFields || values[slot] != nullptr) {
      PyErr_Format(PyExc_TypeError, "MarketBuffer.push() got %s keyword argument '%U'",
                   slot == MarketBuffer::kFields ? "an unexpected" : "a repeated", name);
      return nullptr;
    }
    values[slot] = args[nargs + k];
  }
  for (std::size_t f = 0; f < MarketBuffer::kFields; ++f) {
    if (values[f] == nullptr) {
      PyErr_Format(PyExc_TypeError, "MarketBuffer.push() missing argument '%s'", kNames[f]);
      return nullptr;
    }
  }
  Candle candle;
  // ts must be an integer: an int or anything with __index__ (numpy integers), never a float
  // and never a bool (an int subclass: True would be 1 ns after the epoch).
  for (std::size_t f = 0; f < MarketBuffer::kFields; ++f) {
    if (PyBool_Check(values[f])) {
      PyErr_Format(PyExc_TypeError, "MarketBuffer.push: %s must be a number, not a bool (got %R)",
                   kNames[f], values[f]);
      return nullptr;
    }
  }
  if (!PyLong_Check(values[0]) && !PyIndex_Check(values[0])) {
    PyErr_Format(PyExc_TypeError,
                 "MarketBuffer.push: ts must be an int (ns since epoch UTC), got %s",
                 Py_TYPE(values[0])->tp_name);
    return nullptr;
  }
  candle.ts = PyLong_AsLongLong(values[0]);
  if (candle.ts == -1 && PyErr_Occurred()) return nullptr;
  double* targets[5] = {&candle.open, &candle.high, &candle.low, &candle.close, &candle.volume};
  for (std::size_t f = 1; f < MarketBuffer::kFields; ++f) {
    PyObject* v = values[f];
    if (PyFloat_CheckExact(v)) {
      *targets[f - 1] = PyFloat_AS_DOUBLE(v);
      continue;
    }
    // PyFloat_AsDouble rejects strings too, but with a message that does not name the field.
    if (PyUnicode_Check(v) || PyBytes_Check(v)) {
      PyErr_Format(PyExc_TypeError, "MarketBuffer.push: %s must be a number, got %s", kNames[f],
                   Py_TYPE(v)->tp_name);
      return nullptr;
    }
    *targets[f - 1] = PyFloat_AsDouble(v);  // int, numpy scalars, anything with __float__
    if (*targets[f - 1] == -1.0 && PyErr_Occurred()) return nullptr;
  }
  try {
    auto& h = py::handle(self).cast<BufferHandle&>();
    std::lock_guard<std::mutex> lock(h.mutex);
    h.buffer.push(candle);
  } catch (const OhlcvValidationError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  } catch (const py::cast_error& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef kPushMethod = {
    "push", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&push_fastcall)),
    METH_FASTCALL | METH_KEYWORDS, kPushDoc};

RingStoragePreference parse_storage(const std::string& name) {
  if (name == "auto") return RingStoragePreference::automatic;
  if (name == "mirrored") return RingStoragePreference::mirrored;
  if (name == "double_write") return RingStoragePreference::double_write;
  throw py::value_error(
      "MarketBuffer: storage must be 'auto', 'mirrored' or 'double_write', got '" + name + "'");
}

}  // namespace

void register_buffer(py::module_& m) {
  py::class_<OhlcvViolation>(
      m, "OhlcvViolation", "The first invalid row of a batch of candles (see find_invalid_ohlcv).")
      .def_property_readonly(
          "row", [](const OhlcvViolation& v) { return v.row; }, "0-based row index in the batch.")
      .def_property_readonly(
          "field", [](const OhlcvViolation& v) { return field_name(v.field); },
          "Field at fault: 'ts', 'open', 'high', 'low', 'close' or 'volume'.")
      .def_property_readonly(
          "rule", [](const OhlcvViolation& v) { return rule_name(v.rule); },
          "Rule broken, e.g. 'high_below_low' or 'ts_not_increasing'.")
      .def_property_readonly(
          "value",
          [](const OhlcvViolation& v) -> py::object {
            if (v.field == OhlcvField::ts) return py::int_(v.candle.ts);
            return py::float_(v.value());
          },
          "Offending value: int ns since epoch UTC for 'ts', float otherwise.")
      .def_property_readonly(
          "message", [](const OhlcvViolation& v) { return v.describe(true); },
          "What is wrong, with the row: \"row 17: high (101.5) < low (102.0)\".")
      .def_property_readonly(
          "detail", [](const OhlcvViolation& v) { return v.describe(false); },
          "What is wrong, without the row: \"high (101.5) < low (102.0)\".")
      .def("__repr__", [](const OhlcvViolation& v) {
        return "OhlcvViolation(row=" + std::to_string(v.row) + ", field='" + field_name(v.field) +
               "', rule='" + rule_name(v.rule) + "', message='" + v.describe(true) + "')";
      });

  m.def(
      "find_invalid_ohlcv",
      [](const py::handle& ts, const py::handle& open, const py::handle& high,
         const py::handle& low, const py::handle& close, const py::handle& volume,
         const py::handle& newest_obj) -> std::optional<OhlcvViolation> {
        std::optional<std::int64_t> newest_timestamp;
        if (!newest_obj.is_none()) {
          newest_timestamp = int_arg(newest_obj, "find_invalid_ohlcv: newest_timestamp");
        }
        const OhlcvColumns c =
            checked_columns("find_invalid_ohlcv", ts, open, high, low, close, volume);
        CoreCall call;
        return find_invalid_ohlcv(c, newest_timestamp);
      },
      py::arg("ts"), py::arg("open"), py::arg("high"), py::arg("low"), py::arg("close"),
      py::arg("volume"), py::arg("newest_timestamp") = py::none(),
      "First row breaking an OHLCV rule, or None. Arrays: ts int64 ns since epoch UTC, the rest "
      "float64, all 1-D, contiguous and of equal length.");

  py::class_<BufferHandle> buffer_class(
      m, "MarketBuffer", "Fixed-capacity ring of OHLCV candles (core; use colmena.MarketBuffer).");
  buffer_class
      .def(py::init([](const py::handle& capacity_obj, const std::string& storage) {
             const std::int64_t capacity = int_arg(capacity_obj, "MarketBuffer: capacity");
             if (capacity <= 0) {
               throw py::value_error("MarketBuffer: capacity must be >= 1, got " +
                                     std::to_string(capacity));
             }
             const RingStoragePreference preference = parse_storage(storage);
             return allocating(
                 "MarketBuffer: cannot allocate the storage of capacity " +
                     std::to_string(capacity) + " (" + std::to_string(MarketBuffer::kFields) +
                     " fields of 8 bytes per candle)",
                 [&] { return new BufferHandle(static_cast<std::size_t>(capacity), preference); });
           }),
           py::arg("capacity"), py::arg("storage") = "auto")
      .def_property_readonly("capacity", [](const BufferHandle& h) { return h.buffer.capacity(); })
      .def_property_readonly("ring_slots", [](const BufferHandle& h) { return h.buffer.slots(); })
      .def_property_readonly("is_full", [](const BufferHandle& h) { return h.buffer.full(); })
      .def_property_readonly(
          "storage", [](const BufferHandle& h) { return ring_storage_name(h.buffer.storage()); })
      .def_property_readonly("newest_timestamp",
                             [](BufferHandle& h) {
                               std::lock_guard<std::mutex> lock(h.mutex);
                               return h.buffer.newest_timestamp();
                             })
      .def("__len__",
           [](BufferHandle& h) {
             std::lock_guard<std::mutex> lock(h.mutex);
             return h.buffer.size();
           })
      .def(
          "extend",
          [](BufferHandle& h, const py::handle& ts, const py::handle& open, const py::handle& high,
             const py::handle& low, const py::handle& close, const py::handle& volume,
             const std::string& caller) {
            const OhlcvColumns c = checked_columns(caller, ts, open, high, low, close, volume);
            CoreCall call;
            std::lock_guard<std::mutex> lock(h.mutex);  // released before the GIL is retaken
            h.buffer.extend(c, caller.c_str());
          },
          py::arg("ts"), py::arg("open"), py::arg("high"), py::arg("low"), py::arg("close"),
          py::arg("volume"), py::kw_only(), py::arg("caller") = "MarketBuffer.extend",
          "Append candles from 1-D contiguous arrays (ts int64, the rest float64); all-or-nothing. "
          "`caller` names the operation in error messages.")
      .def(
          "last",
          [](const py::object& self, const py::handle& n_obj, bool copy) {
            const std::int64_t n = int_arg(n_obj, "MarketBuffer.last: n");
            if (n < 0) {
              throw py::value_error("MarketBuffer.last: n must be >= 0, got " + std::to_string(n));
            }
            auto& h = self.cast<BufferHandle&>();
            OhlcvColumns w;
            if (copy) {
              // Copy under the lock into C++ vectors; build the arrays (which may run Python code
              // and let other threads in) only after the lock is released.
              std::vector<std::int64_t> ts;
              std::vector<double> values[5];
              {
                std::lock_guard<std::mutex> lock(h.mutex);
                w = h.buffer.last(static_cast<std::size_t>(n));
                ts.assign(w.ts, w.ts + w.size);
                const double* src[5] = {w.open, w.high, w.low, w.close, w.volume};
                for (std::size_t f = 0; f < 5; ++f) values[f].assign(src[f], src[f] + w.size);
              }
              return py::make_tuple(owned_array(ts), owned_array(values[0]), owned_array(values[1]),
                                    owned_array(values[2]), owned_array(values[3]),
                                    owned_array(values[4]));
            }
            {
              std::lock_guard<std::mutex> lock(h.mutex);
              w = h.buffer.last(static_cast<std::size_t>(n));
            }
            return py::make_tuple(ring_view(self, w.ts, w.size), ring_view(self, w.open, w.size),
                                  ring_view(self, w.high, w.size), ring_view(self, w.low, w.size),
                                  ring_view(self, w.close, w.size),
                                  ring_view(self, w.volume, w.size));
          },
          py::arg("n"), py::arg("copy") = false)
      .def("clear", [](BufferHandle& h) {
        std::lock_guard<std::mutex> lock(h.mutex);
        h.buffer.clear();
      });
  auto* type = reinterpret_cast<PyTypeObject*>(buffer_class.ptr());
  py::object push = py::reinterpret_steal<py::object>(PyDescr_NewMethod(type, &kPushMethod));
  if (!push) throw py::error_already_set();
  buffer_class.attr("push") = push;
}

}  // namespace colmena::bindings

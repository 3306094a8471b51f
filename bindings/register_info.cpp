// Build and device information, and the knobs for threads and SIMD level.
#include <pybind11/stl.h>

#include <chrono>

#include "colmena/build_info.hpp"
#include "colmena/cpu_features.hpp"
#include "colmena/parallel.hpp"
#include "array_checks.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {
// How long the exit hook waits for core calls in flight.
constexpr std::chrono::milliseconds kExitWait{10000};
}  // namespace


void register_info(py::module_& m) {
  m.def("build_info", [] {
    const BuildInfo info = colmena::build_info();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["build_type"] = info.build_type;
    d["backends"] = info.backends;
    d["simd_compiled"] = info.simd_compiled;
    d["simd_supported"] = info.simd_supported;
    d["simd_selected"] = info.simd_selected;
    d["native_build"] = info.native_build;
    d["cuda_toolkit"] =
        info.cuda_toolkit.empty() ? py::object(py::none()) : py::str(info.cuda_toolkit);
    d["cuda_architectures"] =
        info.cuda_architectures.empty() ? py::object(py::none()) : py::str(info.cuda_architectures);
    d["hardware_threads"] = info.hardware_threads;
    d["max_threads"] = colmena::max_threads();
    return d;
  });
  m.def("cuda_device_count", &colmena::cuda_device_count);
  m.def("cuda_devices", [] {
    py::list out;
    for (const auto& dev : colmena::cuda_devices()) {
      py::dict d;
      d["index"] = dev.index;
      d["name"] = dev.name;
      d["compute_capability"] =
          py::make_tuple(dev.compute_capability_major, dev.compute_capability_minor);
      d["total_memory_bytes"] = dev.total_memory_bytes;
      d["multiprocessor_count"] = dev.multiprocessor_count;
      out.append(d);
    }
    return out;
  });
  m.def("set_simd_level", [](const std::string& name) {
    for (SimdLevel level : {SimdLevel::baseline, SimdLevel::avx2, SimdLevel::avx512}) {
      if (name == simd_level_name(level)) {
        if (!colmena::set_simd_level(level)) {
          throw py::value_error(
              "SIMD level '" + name +
              "' is not usable here (not compiled in or not supported by this CPU)");
        }
        return;
      }
    }
    throw py::value_error("unknown SIMD level '" + name +
                          "'; expected 'baseline', 'avx2' or 'avx512'");
  });
  m.def("set_max_threads", [](const py::handle& n_obj) {
    const std::int64_t n = int_arg(n_obj, "set_max_threads: n");
    if (n < 0)
      throw py::value_error("max_threads must be >= 0 (0 restores the default), got " +
                            std::to_string(n));
    colmena::set_max_threads(static_cast<std::size_t>(n));
  }, py::arg("n"));
  m.def("max_threads", &colmena::max_threads);

  m.def("core_calls_in_flight", &colmena::core_calls_in_flight,
        "Core calls running without the GIL right now (counted from just before the GIL is "
        "released to just before it is retaken). A test's synchronisation point: > 0 once a "
        "thread is inside such a call.");
  m.attr("CORE_EXIT_WAIT_S") = kExitWait.count() / 1000.0;
  // Clean stop at interpreter exit (parallel.hpp, "Interpreter exit"): atexit hooks run after
  // the non-daemon threads are joined and before finalization, while daemon threads may still be
  // inside core calls.
  py::module_::import("atexit").attr("register")(py::cpp_function([] {
    py::gil_scoped_release release;  // lets the calls in flight retake the GIL and return
    colmena::core_calls_stop(kExitWait);
  }));
}

}  // namespace colmena::bindings

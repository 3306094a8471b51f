// The CUDA twins of the core, for colmena.model.device: the neural networks on the CUDA backend
// (CudaSwarm, CudaVAEEncoder) and the device operations of device_ops.hpp, taking device
// pointers (as integers) that the Python layer reads from __cuda_array_interface__ / DLPack and
// has checked (shape, dtype, contiguity, device). Registered in every build, so the module's
// names never depend on the build: without COLMENA_CUDA every call raises RuntimeError naming
// what is missing. Pointers are checked here once more against the device they must be on.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "colmena/device_ops.hpp"
#include "colmena/mlp.hpp"
#include "colmena/networks.hpp"
#include "array_checks.hpp"
#include "register.hpp"

#ifdef COLMENA_WITH_CUDA
#include "colmena/cuda_backend.hpp"
#endif

namespace py = pybind11;

namespace colmena::bindings {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// "<where>: <message>", unless the message already starts with where.
std::string prefixed(const std::string& where, const std::string& message) {
  return message.rfind(where + ":", 0) == 0 ? message : where + ": " + message;
}

[[noreturn]] void rethrow(const std::string& where) {
  try {
    throw;
  } catch (const CudaUnavailable& e) {
    throw std::runtime_error(e.what());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(prefixed(where, e.what()));
  } catch (const std::out_of_range& e) {
    throw py::index_error(prefixed(where, e.what()));
  }
}

template <class Fn>
decltype(auto) guarded(const std::string& where, Fn&& fn) {
  try {
    return fn();
  } catch (const py::error_already_set&) {
    throw;
  } catch (const py::builtin_exception&) {
    throw;
  } catch (const CudaUnavailable&) {
    rethrow(where);
  } catch (const std::invalid_argument&) {
    rethrow(where);
  } catch (const std::out_of_range&) {
    rethrow(where);
  }
}

// The calling thread's stream for the scope (a cudaStream_t as an integer; 0: the legacy
// default stream). Does nothing in a build without CUDA (every call there raises first).
class Stream {
 public:
  explicit Stream(std::uintptr_t stream)
#ifdef COLMENA_WITH_CUDA
      : scope_(reinterpret_cast<void*>(stream))
#endif
  {
    (void)stream;
  }

 private:
#ifdef COLMENA_WITH_CUDA
  cuda::StreamScope scope_;
#endif
};

void* pointer(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

Activation activation_arg(const std::string& name, const std::string& where) {
  if (const auto a = parse_activation(name)) return *a;
  throw py::value_error(where + ": activation must be 'tanh', 'relu', 'gelu' or 'identity', got '" +
                        name + "'");
}

std::size_t count_arg(std::int64_t v, const std::string& where, const char* name) {
  if (v < 0) throw py::value_error(where + ": " + name + " must be >= 0");
  return static_cast<std::size_t>(v);
}

// A host float32 C-contiguous array of exactly `shape`.
FloatArray exact_float32(const py::handle& obj, const std::vector<py::ssize_t>& shape,
                         const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy.ndarray of float32");
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().equal(py::dtype::of<float>())) {
    throw py::type_error(what + " must have dtype float32, got " + std::string(py::str(arr.dtype())));
  }
  bool ok = arr.ndim() == static_cast<py::ssize_t>(shape.size());
  for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = arr.shape(i) == shape[i];
  if (!ok) throw py::value_error(what + " has the wrong shape");
  return FloatArray::ensure(arr);
}

// Runs `fn(x_device, out_device...)` on host arrays through device copies (the host
// convenience path of the twins): x [n_rows, n_in] float32 in, outputs out.
#ifdef COLMENA_WITH_CUDA
struct HostRun {
  int device;
  std::vector<std::unique_ptr<cuda::DeviceMemory>> blocks;
  void* alloc(std::size_t bytes) {
    blocks.push_back(std::make_unique<cuda::DeviceMemory>(bytes, device));
    return blocks.back()->data();
  }
};
#endif

// ---------------------------------------------------------------- networks
class CudaSwarm {
 public:
  CudaSwarm(std::int64_t n_agents, const std::vector<std::size_t>& layer_sizes,
            const std::string& activation, int device)
      : device_(device) {
    const std::string where = "CudaSwarm";
    const Activation a = activation_arg(activation, where);
    guarded(where, [&] {
      require_cuda(where, device);
      net_ = std::make_unique<SwarmNet>(count_arg(n_agents, where, "n_agents"), layer_sizes, a,
                                        neural_backend_for({DeviceType::cuda, device}));
    });
  }

  void set_layer(std::int64_t index, const py::handle& w, const py::handle& b) {
    const std::string where = "CudaSwarm.set_layer";
    const auto& sizes = net_->layer_sizes();
    if (index < 0 || static_cast<std::size_t>(index) >= net_->n_layers()) {
      throw py::index_error(where + ": layer index out of range");
    }
    const auto i = static_cast<std::size_t>(index);
    const auto n = static_cast<py::ssize_t>(net_->n_agents());
    const auto n_in = static_cast<py::ssize_t>(sizes[i]);
    const auto n_out = static_cast<py::ssize_t>(sizes[i + 1]);
    const FloatArray W = exact_float32(w, {n, n_in, n_out}, where + ": W");
    const FloatArray B = exact_float32(b, {n, n_out}, where + ": b");
    guarded(where, [&] { net_->set_layer(i, {W.data(), B.data()}); });
  }

  py::tuple get_layer(std::int64_t index) const {
    const std::string where = "CudaSwarm.get_layer";
    if (index < 0 || static_cast<std::size_t>(index) >= net_->n_layers()) {
      throw py::index_error(where + ": layer index out of range");
    }
    const auto i = static_cast<std::size_t>(index);
    const auto& sizes = net_->layer_sizes();
    const auto n = static_cast<py::ssize_t>(net_->n_agents());
    FloatArray W({n, static_cast<py::ssize_t>(sizes[i]), static_cast<py::ssize_t>(sizes[i + 1])});
    FloatArray B({n, static_cast<py::ssize_t>(sizes[i + 1])});
    guarded(where, [&] { net_->get_layer(i, W.mutable_data(), B.mutable_data()); });
    return py::make_tuple(W, B);
  }

  // x [n_rows, n_features] (row stride ldx floats) and out [n_agents, n_rows] on the device.
  void forward_ptr(std::uintptr_t x, std::int64_t n_rows, std::int64_t ldx, std::uintptr_t out,
                   std::uintptr_t stream) const {
    const std::string where = "CudaSwarm.forward";
    guarded(where, [&] {
      check_device_pointer(pointer(x), device_, where, "x");
      check_device_pointer(pointer(out), device_, where, "out");
      Stream scope(stream);
      net_->forward(static_cast<const float*>(pointer(x)), count_arg(n_rows, where, "n_rows"),
                    count_arg(ldx, where, "ldx"), static_cast<float*>(pointer(out)));
    });
  }

  // Host convenience: x float32 [n_rows, n_features] C-contiguous -> [n_agents, n_rows].
  FloatArray forward(const py::handle& x_obj) const {
    const std::string where = "CudaSwarm.forward";
    const auto n_features = static_cast<py::ssize_t>(net_->n_features());
    if (!py::isinstance<py::array>(x_obj)) throw py::type_error(where + ": x must be a numpy.ndarray");
    auto arr = py::reinterpret_borrow<py::array>(x_obj);
    if (arr.ndim() != 2) throw py::value_error(where + ": x must be [n_rows, n_features]");
    const FloatArray x = exact_float32(arr, {arr.shape(0), n_features}, where + ": x");
    const auto n_rows = static_cast<std::size_t>(x.shape(0));
    FloatArray out({static_cast<py::ssize_t>(net_->n_agents()), static_cast<py::ssize_t>(n_rows)});
    if (n_rows == 0) return out;
#ifdef COLMENA_WITH_CUDA
    guarded(where, [&] {
      HostRun run{device_, {}};
      const std::size_t x_bytes = n_rows * net_->n_features() * sizeof(float);
      const std::size_t y_bytes = n_rows * net_->n_agents() * sizeof(float);
      void* dx = run.alloc(x_bytes);
      void* dy = run.alloc(y_bytes);
      Stream scope(0);
      run.blocks[0]->upload(x.data(), x_bytes);
      net_->forward(static_cast<const float*>(dx), n_rows, net_->n_features(),
                    static_cast<float*>(dy));
      run.blocks[1]->download(out.mutable_data(), y_bytes);
    });
#endif
    return out;
  }

  std::size_t n_agents() const { return net_->n_agents(); }
  std::vector<std::size_t> layer_sizes() const { return net_->layer_sizes(); }
  std::string activation() const { return activation_name(net_->activation()); }
  int device() const { return device_; }
  std::uintptr_t storage_address() const {
    return reinterpret_cast<std::uintptr_t>(net_->storage_address());
  }

 private:
  int device_;
  std::unique_ptr<SwarmNet> net_;
};

class CudaVaeEncoder {
 public:
  CudaVaeEncoder(const std::vector<std::size_t>& trunk_sizes, std::int64_t latent_size,
                 bool has_logvar, const std::string& activation, int device)
      : device_(device) {
    const std::string where = "CudaVAEEncoder";
    const Activation a = activation_arg(activation, where);
    guarded(where, [&] {
      require_cuda(where, device);
      net_ = std::make_unique<VaeEncoder>(trunk_sizes, count_arg(latent_size, where, "latent_size"),
                                          has_logvar, a,
                                          neural_backend_for({DeviceType::cuda, device}));
    });
  }

  // trunk: list of (W [n_in, n_out], b [n_out]) host float32; mu, logvar likewise.
  void set_weights(const py::list& trunk, const py::tuple& mu, const py::object& logvar) {
    const std::string where = "CudaVAEEncoder.set_weights";
    const auto& sizes = net_->trunk_sizes();
    if (trunk.size() != net_->n_trunk()) throw py::value_error(where + ": wrong number of layers");
    std::vector<FloatArray> keep;
    std::vector<LayerView> views;
    auto add = [&](const py::handle& pair, py::ssize_t n_in, py::ssize_t n_out,
                   const std::string& name) {
      const auto t = py::reinterpret_borrow<py::tuple>(pair);
      keep.push_back(exact_float32(t[0], {n_in, n_out}, where + ": " + name + " W"));
      keep.push_back(exact_float32(t[1], {n_out}, where + ": " + name + " b"));
      return LayerView{keep[keep.size() - 2].data(), keep.back().data()};
    };
    keep.reserve(2 * (trunk.size() + 2));
    for (std::size_t i = 0; i < trunk.size(); ++i) {
      views.push_back(add(trunk[i], static_cast<py::ssize_t>(sizes[i]),
                          static_cast<py::ssize_t>(sizes[i + 1]), "layers[" + std::to_string(i) + "]"));
    }
    const auto width = static_cast<py::ssize_t>(sizes.back());
    const auto latent = static_cast<py::ssize_t>(net_->latent_size());
    const LayerView mu_view = add(mu, width, latent, "mu");
    std::optional<LayerView> logvar_view;
    if (!logvar.is_none()) logvar_view = add(logvar, width, latent, "logvar");
    guarded(where, [&] { net_->set_weights(views, mu_view, logvar_view); });
  }

  void encode_ptr(std::uintptr_t x, std::int64_t n_rows, std::int64_t ldx, std::uintptr_t mu,
                  std::uintptr_t logvar, std::uintptr_t stream) const {
    const std::string where = "CudaVAEEncoder.encode";
    guarded(where, [&] {
      check_device_pointer(pointer(x), device_, where, "x");
      check_device_pointer(pointer(mu), device_, where, "mu");
      if (logvar != 0) check_device_pointer(pointer(logvar), device_, where, "logvar");
      Stream scope(stream);
      net_->encode(static_cast<const float*>(pointer(x)), count_arg(n_rows, where, "n_rows"),
                   count_arg(ldx, where, "ldx"), static_cast<float*>(pointer(mu)),
                   static_cast<float*>(pointer(logvar)));
    });
  }

  py::object encode(const py::handle& x_obj, bool return_logvar) const {
    const std::string where = "CudaVAEEncoder.encode";
    if (!py::isinstance<py::array>(x_obj)) throw py::type_error(where + ": x must be a numpy.ndarray");
    auto arr = py::reinterpret_borrow<py::array>(x_obj);
    if (arr.ndim() != 2) throw py::value_error(where + ": x must be [n_rows, n_features]");
    const auto n_features = static_cast<py::ssize_t>(net_->n_features());
    const FloatArray x = exact_float32(arr, {arr.shape(0), n_features}, where + ": x");
    if (return_logvar && !net_->has_logvar()) {
      throw py::value_error(where + ": the logvar output needs the logvar head");
    }
    const auto n_rows = static_cast<std::size_t>(x.shape(0));
    const auto latent = static_cast<py::ssize_t>(net_->latent_size());
    FloatArray mu({static_cast<py::ssize_t>(n_rows), latent});
    FloatArray logvar({static_cast<py::ssize_t>(return_logvar ? n_rows : 0), latent});
#ifdef COLMENA_WITH_CUDA
    if (n_rows > 0) {
      guarded(where, [&] {
        HostRun run{device_, {}};
        const std::size_t x_bytes = n_rows * net_->n_features() * sizeof(float);
        const std::size_t y_bytes = n_rows * net_->latent_size() * sizeof(float);
        void* dx = run.alloc(x_bytes);
        void* dmu = run.alloc(y_bytes);
        void* dlv = return_logvar ? run.alloc(y_bytes) : nullptr;
        Stream scope(0);
        run.blocks[0]->upload(x.data(), x_bytes);
        net_->encode(static_cast<const float*>(dx), n_rows, net_->n_features(),
                     static_cast<float*>(dmu), static_cast<float*>(dlv));
        run.blocks[1]->download(mu.mutable_data(), y_bytes);
        if (return_logvar) run.blocks[2]->download(logvar.mutable_data(), y_bytes);
      });
    }
#endif
    if (return_logvar) return py::make_tuple(mu, logvar);
    return std::move(mu);
  }

  std::vector<std::size_t> layer_sizes() const { return net_->trunk_sizes(); }
  std::size_t latent_size() const { return net_->latent_size(); }
  bool has_logvar() const { return net_->has_logvar(); }
  int device() const { return device_; }

 private:
  int device_;
  std::unique_ptr<VaeEncoder> net_;
};

// ---------------------------------------------------------------- a bare device buffer
// Device memory with copies from and to numpy arrays: colmena.model.device's own device array
// when neither CuPy nor torch is installed (and the GPU tests' way to place inputs).
class CudaBuffer {
 public:
  CudaBuffer(std::int64_t nbytes, int device) : device_(device) {
    const std::string where = "CudaBuffer";
    guarded(where, [&] {
      require_cuda(where, device);
#ifdef COLMENA_WITH_CUDA
      memory_ = std::make_unique<cuda::DeviceMemory>(count_arg(nbytes, where, "nbytes"), device);
#endif
      nbytes_ = static_cast<std::size_t>(nbytes);
    });
  }
  std::uintptr_t ptr() const {
#ifdef COLMENA_WITH_CUDA
    return reinterpret_cast<std::uintptr_t>(memory_->data());
#else
    return 0;
#endif
  }
  std::size_t nbytes() const { return nbytes_; }
  int device() const { return device_; }
  // Copies the bytes of a C-contiguous array in (synchronously, on the legacy default stream).
  void upload(const py::array& a) {
    if (!(a.flags() & py::array::c_style)) throw py::value_error("CudaBuffer.upload: not C-contiguous");
    const auto bytes = static_cast<std::size_t>(a.nbytes());
    if (bytes > nbytes_) throw py::value_error("CudaBuffer.upload: the array is larger than the buffer");
#ifdef COLMENA_WITH_CUDA
    guarded("CudaBuffer.upload", [&] { memory_->upload(a.data(), bytes); });
#endif
  }
  // Copies into a writable C-contiguous array after the work enqueued on `stream`.
  void download(py::array& a, std::uintptr_t stream) const {
    if (!(a.flags() & py::array::c_style) || !a.writeable()) {
      throw py::value_error("CudaBuffer.download: not a writable C-contiguous array");
    }
    const auto bytes = static_cast<std::size_t>(a.nbytes());
    if (bytes > nbytes_) throw py::value_error("CudaBuffer.download: the array is larger than the buffer");
#ifdef COLMENA_WITH_CUDA
    guarded("CudaBuffer.download", [&] {
      Stream scope(stream);
      memory_->download(a.mutable_data(), bytes);
    });
#else
    (void)stream;
#endif
  }

 private:
  int device_;
  std::size_t nbytes_ = 0;
#ifdef COLMENA_WITH_CUDA
  std::unique_ptr<cuda::DeviceMemory> memory_;
#endif
};

ConvolutionMethod method_arg(const std::string& name, const std::string& where) {
  if (name == "auto") return ConvolutionMethod::automatic;
  if (name == "direct") return ConvolutionMethod::direct;
  if (name == "fft") return ConvolutionMethod::fft;
  throw py::value_error(where + ": method must be 'auto', 'direct' or 'fft', got '" + name + "'");
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_built", &cuda_built, "True when this build has the CUDA backend (COLMENA_CUDA=ON).");
  m.def("cuda_has_cufft", [] {
#ifdef COLMENA_WITH_CUDA
    return cuda::has_cufft();
#else
    return false;
#endif
  }, "True when the CUDA backend links cuFFT (the FFT path of the GPU FracDiff).");
  m.def("cuda_fft_crossover", [] {
#ifdef COLMENA_WITH_CUDA
    return cuda::fft_crossover();
#else
    return std::size_t{0};
#endif
  });
  m.def(
      "cuda_synchronize",
      [](int device, std::uintptr_t stream) {
        guarded("cuda_synchronize", [&] {
          require_cuda("cuda_synchronize", device);
#ifdef COLMENA_WITH_CUDA
          Stream scope(stream);
          cuda::synchronize_stream();
#else
          (void)stream;
#endif
        });
      },
      py::arg("device") = 0, py::arg("stream") = 0,
      "Wait for the work enqueued on `stream` (0: the legacy default stream, which waits for "
      "every blocking stream).");
  m.def(
      "cuda_require",
      [](const std::string& what, int device) {
        guarded(what, [&] { require_cuda(what, device); });
      },
      py::arg("what"), py::arg("device") = 0,
      "RuntimeError naming what is missing unless CUDA device `device` can run.");

  py::class_<CudaBuffer>(m, "CudaBuffer", "Device memory (use colmena.model.device.to_device).")
      .def(py::init<std::int64_t, int>(), py::arg("nbytes"), py::arg("device") = 0)
      .def("upload", &CudaBuffer::upload, py::arg("array"))
      .def("download", &CudaBuffer::download, py::arg("array"), py::arg("stream") = 0)
      .def_property_readonly("ptr", &CudaBuffer::ptr)
      .def_property_readonly("nbytes", &CudaBuffer::nbytes)
      .def_property_readonly("device", &CudaBuffer::device);

  py::class_<CudaSwarm>(m, "CudaSwarm", "The swarm on the CUDA backend (use colmena.model.device).")
      .def(py::init<std::int64_t, const std::vector<std::size_t>&, const std::string&, int>(),
           py::arg("n_agents"), py::arg("layer_sizes"), py::arg("activation") = "tanh",
           py::arg("device") = 0)
      .def("set_layer", &CudaSwarm::set_layer, py::arg("index"), py::arg("W"), py::arg("b"))
      .def("get_layer", &CudaSwarm::get_layer, py::arg("index"))
      .def("forward_ptr", &CudaSwarm::forward_ptr, py::arg("x"), py::arg("n_rows"), py::arg("ldx"),
           py::arg("out"), py::arg("stream"))
      .def("forward", &CudaSwarm::forward, py::arg("x"))
      .def_property_readonly("n_agents", &CudaSwarm::n_agents)
      .def_property_readonly("layer_sizes", &CudaSwarm::layer_sizes)
      .def_property_readonly("activation", &CudaSwarm::activation)
      .def_property_readonly("device", &CudaSwarm::device)
      .def_property_readonly("storage_address", &CudaSwarm::storage_address);

  py::class_<CudaVaeEncoder>(m, "CudaVAEEncoder",
                             "The VAE encoder on the CUDA backend (use colmena.model.device).")
      .def(py::init<const std::vector<std::size_t>&, std::int64_t, bool, const std::string&, int>(),
           py::arg("layer_sizes"), py::arg("latent_size"), py::arg("has_logvar"),
           py::arg("activation") = "relu", py::arg("device") = 0)
      .def("set_weights", &CudaVaeEncoder::set_weights, py::arg("layers"), py::arg("mu"),
           py::arg("logvar") = py::none())
      .def("encode_ptr", &CudaVaeEncoder::encode_ptr, py::arg("x"), py::arg("n_rows"),
           py::arg("ldx"), py::arg("mu"), py::arg("logvar"), py::arg("stream"))
      .def("encode", &CudaVaeEncoder::encode, py::arg("x"), py::arg("return_logvar") = false)
      .def_property_readonly("layer_sizes", &CudaVaeEncoder::layer_sizes)
      .def_property_readonly("latent_size", &CudaVaeEncoder::latent_size)
      .def_property_readonly("has_logvar", &CudaVaeEncoder::has_logvar)
      .def_property_readonly("device", &CudaVaeEncoder::device);

  m.def(
      "cuda_fracdiff_ffd",
      [](std::uintptr_t x, std::int64_t n, const py::handle& w_obj, std::uintptr_t y,
         const std::string& method, int device, std::uintptr_t stream) {
        const std::string where = "fracdiff (cuda)";
        const DoubleArray w = require_1d_float64(w_obj, "fracdiff (cuda): weights");
        const ConvolutionMethod how = method_arg(method, where);
        guarded(where, [&] {
          Stream scope(stream);
          fracdiff_ffd({DeviceType::cuda, device}, static_cast<const double*>(pointer(x)),
                       count_arg(n, where, "n"), w.data(), static_cast<std::size_t>(w.size()),
                       static_cast<double*>(pointer(y)), how);
        });
      },
      py::arg("x"), py::arg("n"), py::arg("weights"), py::arg("y"), py::arg("method"),
      py::arg("device"), py::arg("stream"));
  m.def(
      "cuda_fracdiff_expanding",
      [](std::uintptr_t x, std::int64_t n, double d, double threshold, std::uintptr_t y,
         const std::string& method, int device, std::uintptr_t stream) {
        const std::string where = "fracdiff_expanding (cuda)";
        const ConvolutionMethod how = method_arg(method, where);
        guarded(where, [&] {
          Stream scope(stream);
          fracdiff_expanding({DeviceType::cuda, device}, static_cast<const double*>(pointer(x)),
                             count_arg(n, where, "n"), d, threshold,
                             static_cast<double*>(pointer(y)), how);
        });
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("threshold"), py::arg("y"),
      py::arg("method"), py::arg("device"), py::arg("stream"));
  m.def(
      "cuda_proxy_scores",
      [](std::uintptr_t signals, std::int64_t n_agents, std::int64_t n_steps,
         std::uintptr_t returns, std::uintptr_t tradable, double cost, bool long_only,
         double periods_per_year, std::uintptr_t scores, int device, std::uintptr_t stream) {
        const std::string where = "proxy_scores (cuda)";
        guarded(where, [&] {
          Stream scope(stream);
          proxy_scores({DeviceType::cuda, device}, static_cast<const float*>(pointer(signals)),
                       count_arg(n_agents, where, "n_agents"), count_arg(n_steps, where, "n_steps"),
                       static_cast<const double*>(pointer(returns)),
                       static_cast<const unsigned char*>(pointer(tradable)), cost, long_only,
                       periods_per_year, static_cast<double*>(pointer(scores)));
        });
      },
      py::arg("signals"), py::arg("n_agents"), py::arg("n_steps"), py::arg("returns"),
      py::arg("tradable"), py::arg("cost"), py::arg("long_only"), py::arg("periods_per_year"),
      py::arg("scores"), py::arg("device"), py::arg("stream"));
  m.def(
      "proxy_scores",
      [](const py::handle& signals_obj, const py::handle& returns_obj,
         const py::handle& tradable_obj, double cost, bool long_only, double periods_per_year) {
        const std::string where = "proxy_scores";
        if (!py::isinstance<py::array>(signals_obj)) {
          throw py::type_error(where + ": signals must be a numpy.ndarray of float32");
        }
        auto s = py::reinterpret_borrow<py::array>(signals_obj);
        if (s.ndim() != 2) throw py::value_error(where + ": signals must be [n_agents, n_steps]");
        const FloatArray signals = exact_float32(s, {s.shape(0), s.shape(1)}, where + ": signals");
        const DoubleArray returns = require_1d_float64(returns_obj, "proxy_scores: returns");
        auto t = py::array_t<std::uint8_t, py::array::c_style>::ensure(tradable_obj);
        if (!t || t.ndim() != 1) throw py::value_error(where + ": tradable must be 1-D");
        const auto n_steps = static_cast<std::size_t>(s.shape(1));
        if (static_cast<std::size_t>(returns.size()) != n_steps ||
            static_cast<std::size_t>(t.size()) != n_steps) {
          throw py::value_error(where + ": returns and tradable must have n_steps = " +
                                std::to_string(n_steps) + " values");
        }
        DoubleArray scores(s.shape(0));
        guarded(where, [&] {
          proxy_scores({DeviceType::cpu, 0}, signals.data(), static_cast<std::size_t>(s.shape(0)),
                       n_steps, returns.data(), t.data(), cost, long_only, periods_per_year,
                       scores.mutable_data());
        });
        return scores;
      },
      py::arg("signals"), py::arg("returns"), py::arg("tradable"), py::arg("cost"),
      py::arg("long_only"), py::arg("periods_per_year"),
      "CPU proxy fitness (device_ops.hpp): signals float32 [n_agents, n_steps] -> float64 "
      "[n_agents].");
}

}  // namespace colmena::bindings

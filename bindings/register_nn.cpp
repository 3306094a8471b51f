// Neural forward passes: Swarm (one MLP per agent, weights stacked), MLP and VAEEncoder. Array
// checks, error conversion, GIL release and a reader/writer lock (forward passes share it,
// weight replacement takes it alone); the arithmetic lives in cpp/ (mlp.hpp).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "colmena/consensus.hpp"
#include "colmena/mlp.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// Below this many multiply-adds a call keeps the GIL: releasing and retaking it costs more.
constexpr std::size_t kReleaseGilWork = 32 * 1024;

std::string type_name(const py::handle& obj) { return py::str(py::type::of(obj).attr("__name__")); }

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape(i));
  }
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// "(100, 64, n_out)": known sizes as numbers, unknown ones by name.
std::string expected_text(const std::vector<std::optional<std::size_t>>& sizes,
                          const std::vector<const char*>& names) {
  std::string s = "(";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i > 0) s += ", ";
    s += sizes[i] ? std::to_string(*sizes[i]) : std::string(names[i]);
  }
  return s + (sizes.size() == 1 ? ",)" : ")");
}

Activation activation_arg(const std::string& name, const std::string& where, const char* arg) {
  if (const auto a = parse_activation(name)) return *a;
  throw py::value_error(where + ": " + arg +
                        " must be 'tanh', 'relu', 'gelu' or 'identity', got '" + name + "'");
}

// The C-contiguous float32 array behind obj (a copy only when obj is not contiguous).
FloatArray float32_array(const py::handle& obj, const std::string& what) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(what + " must be a numpy.ndarray of float32, got " + type_name(obj));
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().equal(py::dtype::of<float>())) {
    throw py::type_error(what + " must have dtype float32, got " +
                         std::string(py::str(arr.dtype())) +
                         " (convert with .astype(numpy.float32))");
  }
  FloatArray out = FloatArray::ensure(arr);
  if (!out) throw py::error_already_set();
  return out;
}

// One (W, b) pair, checked against what is known of its shape.
struct LayerArrays {
  FloatArray w;
  FloatArray b;
  std::size_t n_nets = 1;
  std::size_t n_in = 0;
  std::size_t n_out = 0;
};

struct Expected {
  std::optional<std::size_t> n_nets;
  std::optional<std::size_t> n_in;
  std::optional<std::size_t> n_out;
};

// `stacked`: W [n_agents, n_in, n_out], b [n_agents, n_out]; otherwise W [n_in, n_out], b [n_out].
LayerArrays read_layer(const py::handle& item, const std::string& where, bool stacked,
                       const Expected& expected) {
  if (!py::isinstance<py::sequence>(item) || py::isinstance<py::str>(item) || py::len(item) != 2) {
    throw py::type_error(where + " must be a pair (W, b), got " + type_name(item));
  }
  const auto pair = py::reinterpret_borrow<py::sequence>(item);
  LayerArrays layer;
  layer.w = float32_array(pair[0], where + " W");
  const py::ssize_t axis = stacked ? 1 : 0;
  const std::vector<const char*> w_names =
      stacked ? std::vector<const char*>{"n_agents", "n_in", "n_out"}
              : std::vector<const char*>{"n_in", "n_out"};
  auto w_expected = [&] {
    std::vector<std::optional<std::size_t>> sizes;
    if (stacked) sizes.push_back(expected.n_nets);
    sizes.push_back(expected.n_in);
    sizes.push_back(expected.n_out);
    return expected_text(sizes, w_names);
  };
  if (layer.w.ndim() != axis + 2) {
    throw py::value_error(where + " W must be " + std::to_string(axis + 2) + "-D " + w_expected() +
                          ", got shape " + shape_text(layer.w));
  }
  layer.n_nets = stacked ? static_cast<std::size_t>(layer.w.shape(0)) : 1;
  layer.n_in = static_cast<std::size_t>(layer.w.shape(axis));
  layer.n_out = static_cast<std::size_t>(layer.w.shape(axis + 1));
  const bool mismatch = (expected.n_nets && layer.n_nets != *expected.n_nets) ||
                        (expected.n_in && layer.n_in != *expected.n_in) ||
                        (expected.n_out && layer.n_out != *expected.n_out);
  if (mismatch || layer.n_nets == 0 || layer.n_in == 0 || layer.n_out == 0) {
    throw py::value_error(where + " W must have shape " + w_expected() +
                          " with no zero size, got " + shape_text(layer.w));
  }
  layer.b = float32_array(pair[1], where + " b");
  std::vector<std::optional<std::size_t>> b_sizes;
  if (stacked) b_sizes.push_back(layer.n_nets);
  b_sizes.push_back(layer.n_out);
  const bool b_ok = layer.b.ndim() == axis + 1 &&
                    (!stacked || static_cast<std::size_t>(layer.b.shape(0)) == layer.n_nets) &&
                    static_cast<std::size_t>(layer.b.shape(axis)) == layer.n_out;
  if (!b_ok) {
    throw py::value_error(where + " b must have shape " + expected_text(b_sizes, {}) +
                          " to match W " + shape_text(layer.w) + ", got " + shape_text(layer.b));
  }
  return layer;
}

// Reads a non-empty sequence of (W, b) pairs whose widths chain: layer i's n_in is layer i-1's
// n_out. `sizes` (optional) pins every width, `n_nets` the agent axis.
std::vector<LayerArrays> read_layers(const py::handle& obj, const std::string& where,
                                     const char* arg, bool stacked,
                                     std::optional<std::size_t> n_nets,
                                     const std::vector<std::size_t>* sizes) {
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj)) {
    throw py::type_error(where + ": " + arg + " must be a list of (W, b) pairs, got " +
                         type_name(obj));
  }
  const auto seq = py::reinterpret_borrow<py::sequence>(obj);
  const std::size_t n = py::len(seq);
  if (n == 0) throw py::value_error(where + ": " + arg + " must hold at least one (W, b) pair");
  if (sizes && n + 1 != sizes->size()) {
    throw py::value_error(where + ": " + arg + " must hold " + std::to_string(sizes->size() - 1) +
                          " (W, b) pairs, got " + std::to_string(n));
  }
  std::vector<LayerArrays> layers;
  for (std::size_t i = 0; i < n; ++i) {
    Expected e;
    e.n_nets = n_nets;
    e.n_in = sizes ? std::optional<std::size_t>((*sizes)[i])
                   : (i > 0 ? std::optional<std::size_t>(layers.back().n_out) : std::nullopt);
    if (sizes) e.n_out = (*sizes)[i + 1];
    layers.push_back(
        read_layer(seq[i], where + ": " + arg + "[" + std::to_string(i) + "]", stacked, e));
    n_nets = layers.back().n_nets;
  }
  return layers;
}

// The rows of a forward pass's input: x [n_in] (one row) or x [n_rows, n_in], float32, the last
// axis contiguous, rows evenly spaced in increasing memory order. Not copied.
struct InputRows {
  py::array array;
  const float* data = nullptr;
  std::size_t n_rows = 0;
  std::size_t ldx = 0;
  bool single = false;
};

InputRows input_rows(const py::handle& obj, const std::string& where, std::size_t n_in,
                     const char* rows_name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(where + ": x must be a numpy.ndarray of float32, got " + type_name(obj));
  }
  InputRows in;
  in.array = py::reinterpret_borrow<py::array>(obj);
  const py::array& x = in.array;
  if (!x.dtype().equal(py::dtype::of<float>())) {
    throw py::type_error(where + ": x must have dtype float32, got " +
                         std::string(py::str(x.dtype())) +
                         " (convert with .astype(numpy.float32))");
  }
  const py::ssize_t nd = x.ndim();
  if (nd != 1 && nd != 2) {
    throw py::value_error(where + ": x must be [n_features] or [" + rows_name +
                          ", n_features], got shape " + shape_text(x));
  }
  if (static_cast<std::size_t>(x.shape(nd - 1)) != n_in) {
    throw py::value_error(where + ": x must have n_features = " + std::to_string(n_in) +
                          " values along its last axis, got shape " + shape_text(x));
  }
  if (x.size() == 0) {  // nothing is read; numpy gives empty arrays zero strides
    in.single = nd == 1;
    in.n_rows = in.single ? 1 : static_cast<std::size_t>(x.shape(0));
    in.ldx = n_in;
    in.data = static_cast<const float*>(x.data());
    return in;
  }
  if (n_in > 1 && x.strides(nd - 1) != static_cast<py::ssize_t>(sizeof(float))) {
    throw py::value_error(
        where + ": x must be contiguous along its last axis (use numpy.ascontiguousarray)");
  }
  in.single = nd == 1;
  in.n_rows = in.single ? 1 : static_cast<std::size_t>(x.shape(0));
  in.ldx = n_in;
  if (!in.single && in.n_rows > 1) {
    const py::ssize_t stride = x.strides(0);
    if (stride < 0 || stride % static_cast<py::ssize_t>(sizeof(float)) != 0) {
      throw py::value_error(where +
                            ": x rows must lie in increasing memory order at a whole number of "
                            "float32 apart (use numpy.ascontiguousarray)");
    }
    in.ldx = static_cast<std::size_t>(stride) / sizeof(float);
  }
  in.data = static_cast<const float*>(x.data());
  return in;
}

// The core stack plus a reader/writer lock; forward passes run without the GIL, so weight
// replacement from another thread must wait for them. The lock is never held while taking the
// GIL.
struct StackHandle {
  std::unique_ptr<MlpStack> stack;
  mutable std::shared_mutex mutex;

  void forward(const float* x, std::size_t n_rows, std::size_t ldx, float* const* outputs) const {
    const std::size_t work = n_rows * stack->n_nets() * stack->macs_per_row();
    std::optional<py::gil_scoped_release> release;
    if (work >= kReleaseGilWork) release.emplace();
    std::shared_lock lock(mutex);
    stack->forward(x, n_rows, ldx, outputs);
  }

  // Check every layer first, then write them all under the lock: all or nothing.
  void write(const std::string& where, const std::vector<std::size_t>& indices,
             const std::vector<LayerArrays>& layers, std::optional<std::size_t> net,
             const std::vector<std::string>& names) {
    try {
      for (std::size_t i = 0; i < layers.size(); ++i) {
        try {
          if (net) {
            stack->check_layer(indices[i], *net, layers[i].w.data(), layers[i].b.data());
          } else {
            stack->check_layer(indices[i], layers[i].w.data(), layers[i].b.data());
          }
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(names[i] + " " + e.what());
        }
      }
    } catch (const std::invalid_argument& e) {
      throw py::value_error(where + ": " + e.what());
    }
    py::gil_scoped_release release;
    std::unique_lock lock(mutex);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (net) {
        stack->set_layer(indices[i], *net, layers[i].w.data(), layers[i].b.data());
      } else {
        stack->set_layer(indices[i], layers[i].w.data(), layers[i].b.data());
      }
    }
  }

  // Layer `index` of every network ([n_nets, n_in, n_out], [n_nets, n_out]) or of one
  // network ([n_in, n_out], [n_out]), as fresh arrays.
  py::tuple read(std::size_t index, std::optional<std::size_t> net) const {
    const DenseLayout& layout = stack->layer(index);
    const auto n_nets = static_cast<py::ssize_t>(stack->n_nets());
    const auto n_in = static_cast<py::ssize_t>(layout.n_in);
    const auto n_out = static_cast<py::ssize_t>(layout.n_out);
    FloatArray w = net ? FloatArray({n_in, n_out}) : FloatArray({n_nets, n_in, n_out});
    FloatArray b = net ? FloatArray({n_out}) : FloatArray({n_nets, n_out});
    {
      std::shared_lock lock(mutex);
      if (net) {
        stack->get_layer(index, *net, w.mutable_data(), b.mutable_data());
      } else {
        stack->get_layer(index, w.mutable_data(), b.mutable_data());
      }
    }
    return py::make_tuple(w, b);
  }

  std::vector<std::size_t> sizes() const {
    std::vector<std::size_t> s{stack->n_inputs()};
    for (std::size_t l = 0; l < stack->n_layers(); ++l) s.push_back(stack->layer(l).n_out);
    return s;
  }

  std::size_t layer_index(py::ssize_t index, const std::string& where) const {
    const auto n = static_cast<py::ssize_t>(stack->n_layers());
    if (index < 0 || index >= n) {
      throw py::index_error(where + ": layer index " + std::to_string(index) + " is outside [0, " +
                            std::to_string(n) + ")");
    }
    return static_cast<std::size_t>(index);
  }

  std::size_t net_index(py::ssize_t index, const std::string& where, const char* what) const {
    const auto n = static_cast<py::ssize_t>(stack->n_nets());
    if (index < 0 || index >= n) {
      throw py::index_error(where + ": " + what + " index " + std::to_string(index) +
                            " is outside [0, " + std::to_string(n) + ")");
    }
    return static_cast<std::size_t>(index);
  }

  std::uintptr_t storage_address() const {
    return reinterpret_cast<std::uintptr_t>(stack->storage_address());
  }
};

std::vector<std::size_t> all_indices(std::size_t n) {
  std::vector<std::size_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

std::vector<std::string> layer_names(const char* arg, std::size_t n) {
  std::vector<std::string> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(std::string(arg) + "[" + std::to_string(i) + "]");
  return v;
}

// ---------------------------------------------------------------- Swarm
struct SwarmHandle : StackHandle {
  Activation activation = Activation::tanh;
};

SwarmHandle* make_swarm(const py::handle& layers_obj, const std::string& activation_text) {
  const std::string where = "Swarm";
  const Activation activation = activation_arg(activation_text, where, "activation");
  std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", true, std::nullopt, nullptr);
  if (layers.back().n_out != 1) {
    throw py::value_error(where + ": the output layer layers[" + std::to_string(layers.size() - 1) +
                          "] must have n_out = 1 (one signal per agent), got W shape " +
                          shape_text(layers.back().w));
  }
  std::vector<std::size_t> trunk{layers.front().n_in};
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) trunk.push_back(layers[i].n_out);
  auto handle = std::make_unique<SwarmHandle>();
  handle->activation = activation;
  handle->stack = std::make_unique<MlpStack>(layers.front().n_nets, trunk,
                                             std::vector<Activation>(layers.size() - 1, activation),
                                             std::vector<HeadSpec>{{1, Activation::tanh}});
  handle->write(where, all_indices(layers.size()), layers, std::nullopt,
                layer_names("layers", layers.size()));
  return handle.release();
}

py::array swarm_forward(const SwarmHandle& h, const py::handle& x_obj) {
  const InputRows in = input_rows(x_obj, "Swarm.forward", h.stack->n_inputs(), "n_steps");
  const auto n_agents = static_cast<py::ssize_t>(h.stack->n_nets());
  FloatArray out = in.single ? FloatArray({n_agents})
                             : FloatArray({n_agents, static_cast<py::ssize_t>(in.n_rows)});
  float* outputs[1] = {out.mutable_data()};
  h.forward(in.data, in.n_rows, in.ldx, outputs);
  return out;
}

// ---------------------------------------------------------------- MLP
struct MlpHandle : StackHandle {
  Activation activation = Activation::tanh;
  Activation output_activation = Activation::identity;
};

MlpHandle* make_mlp(const py::handle& layers_obj, const std::string& activation_text,
                    const std::string& output_text) {
  const std::string where = "MLP";
  const Activation activation = activation_arg(activation_text, where, "activation");
  const Activation output = activation_arg(output_text, where, "output_activation");
  std::vector<LayerArrays> layers = read_layers(layers_obj, where, "layers", false, 1, nullptr);
  std::vector<std::size_t> trunk{layers.front().n_in};
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) trunk.push_back(layers[i].n_out);
  auto handle = std::make_unique<MlpHandle>();
  handle->activation = activation;
  handle->output_activation = output;
  handle->stack =
      std::make_unique<MlpStack>(1, trunk, std::vector<Activation>(layers.size() - 1, activation),
                                 std::vector<HeadSpec>{{layers.back().n_out, output}});
  handle->write(where, all_indices(layers.size()), layers, 0, layer_names("layers", layers.size()));
  return handle.release();
}

py::array mlp_forward(const MlpHandle& h, const py::handle& x_obj) {
  const InputRows in = input_rows(x_obj, "MLP.forward", h.stack->n_inputs(), "n_rows");
  const auto n_out = static_cast<py::ssize_t>(h.stack->layer(h.stack->n_layers() - 1).n_out);
  FloatArray out =
      in.single ? FloatArray({n_out}) : FloatArray({static_cast<py::ssize_t>(in.n_rows), n_out});
  float* outputs[1] = {out.mutable_data()};
  h.forward(in.data, in.n_rows, in.ldx, outputs);
  return out;
}

// ---------------------------------------------------------------- VAE encoder
struct VaeHandle : StackHandle {
  Activation activation = Activation::relu;
  bool has_logvar = false;
  std::size_t latent_size = 0;
};

VaeHandle* make_vae(const py::handle& layers_obj, const py::handle& mu_obj,
                    const py::handle& logvar_obj, const std::string& activation_text) {
  const std::string where = "VAEEncoder";
  const Activation activation = activation_arg(activation_text, where, "activation");
  std::vector<LayerArrays> layers;
  if (!py::isinstance<py::sequence>(layers_obj) || py::isinstance<py::str>(layers_obj)) {
    throw py::type_error(where + ": layers must be a list of (W, b) pairs, got " +
                         type_name(layers_obj));
  }
  if (py::len(layers_obj) > 0) {
    layers = read_layers(layers_obj, where, "layers", false, 1, nullptr);
  }
  Expected head;
  head.n_nets = 1;
  if (!layers.empty()) head.n_in = layers.back().n_out;
  LayerArrays mu = read_layer(mu_obj, where + ": mu", false, head);
  head.n_in = mu.n_in;
  std::optional<LayerArrays> logvar;
  if (!logvar_obj.is_none()) {
    head.n_out = mu.n_out;
    logvar = read_layer(logvar_obj, where + ": logvar", false, head);
  }
  std::vector<std::size_t> trunk{layers.empty() ? mu.n_in : layers.front().n_in};
  for (const LayerArrays& l : layers) trunk.push_back(l.n_out);
  std::vector<HeadSpec> heads{{mu.n_out, Activation::identity}};
  if (logvar) heads.push_back({mu.n_out, Activation::identity});
  auto handle = std::make_unique<VaeHandle>();
  handle->activation = activation;
  handle->has_logvar = logvar.has_value();
  handle->latent_size = mu.n_out;
  handle->stack = std::make_unique<MlpStack>(
      1, trunk, std::vector<Activation>(layers.size(), activation), heads);
  std::vector<std::string> names = layer_names("layers", layers.size());
  names.emplace_back("mu");
  layers.push_back(std::move(mu));
  if (logvar) {
    names.emplace_back("logvar");
    layers.push_back(std::move(*logvar));
  }
  handle->write(where, all_indices(layers.size()), layers, 0, names);
  return handle.release();
}

py::object vae_encode(const VaeHandle& h, const py::handle& x_obj, bool return_logvar) {
  if (return_logvar && !h.has_logvar) {
    throw py::value_error(
        "VAEEncoder.encode: return_logvar=True needs the logvar head, which this encoder was "
        "built without");
  }
  const InputRows in = input_rows(x_obj, "VAEEncoder.encode", h.stack->n_inputs(), "batch");
  const auto latent = static_cast<py::ssize_t>(h.latent_size);
  const auto rows = static_cast<py::ssize_t>(in.n_rows);
  FloatArray mu = in.single ? FloatArray({latent}) : FloatArray({rows, latent});
  FloatArray logvar;
  float* outputs[2] = {mu.mutable_data(), nullptr};
  if (return_logvar) {
    logvar = in.single ? FloatArray({latent}) : FloatArray({rows, latent});
    outputs[1] = logvar.mutable_data();
  }
  h.forward(in.data, in.n_rows, in.ldx, outputs);
  if (return_logvar) return py::make_tuple(mu, logvar);
  return std::move(mu);
}

}  // namespace

void register_nn(py::module_& m) {
  m.def(
      "consensus",
      [](const py::handle& signals_obj, const py::handle& weights_obj,
         const py::object& sets_obj) {
        if (!py::isinstance<py::array>(signals_obj) ||
            !py::reinterpret_borrow<py::array>(signals_obj).dtype().is(py::dtype::of<float>()))
          throw py::type_error("signals must be a numpy.ndarray of float32");
        if (!py::isinstance<py::array>(weights_obj) ||
            !py::reinterpret_borrow<py::array>(weights_obj).dtype().is(py::dtype::of<double>()))
          throw py::type_error("weights must be a numpy.ndarray of float64");
        auto sig = py::reinterpret_borrow<py::array>(signals_obj);
        auto w = py::reinterpret_borrow<py::array>(weights_obj);
        if (sig.ndim() != 2 || !(sig.flags() & py::array::c_style))
          throw py::value_error("signals must be a C-contiguous 2-D array [n_agents, n_bars]");
        if (w.ndim() != 2 || !(w.flags() & py::array::c_style))
          throw py::value_error("weights must be a C-contiguous 2-D array [n_sets, n_agents]");
        const auto n_agents = static_cast<std::size_t>(sig.shape(0));
        const auto n_bars = static_cast<std::size_t>(sig.shape(1));
        if (static_cast<std::size_t>(w.shape(1)) != n_agents)
          throw py::value_error("weights have " + std::to_string(w.shape(1)) +
                                " agents, signals " + std::to_string(n_agents));
        py::array_t<std::int64_t, py::array::c_style> sets;
        const std::int64_t* set_ptr = nullptr;
        if (!sets_obj.is_none()) {
          if (!py::isinstance<py::array>(sets_obj) ||
              !py::reinterpret_borrow<py::array>(sets_obj).dtype().is(
                  py::dtype::of<std::int64_t>()))
            throw py::type_error("weight_set must be a numpy.ndarray of int64");
          sets = py::reinterpret_borrow<py::array_t<std::int64_t, py::array::c_style>>(sets_obj);
          if (sets.ndim() != 1 || static_cast<std::size_t>(sets.size()) != n_bars ||
              !(sets.flags() & py::array::c_style))
            throw py::value_error("weight_set must be C-contiguous 1-D [n_bars]");
          set_ptr = sets.data();
        }
        py::array_t<double> out(static_cast<py::ssize_t>(n_bars));
        {
          py::gil_scoped_release release;
          try {
            consensus(static_cast<const float*>(sig.data()), n_agents, n_bars,
                      static_cast<const double*>(w.data()), static_cast<std::size_t>(w.shape(0)),
                      set_ptr, out.mutable_data());
          } catch (const std::invalid_argument& e) {
            py::gil_scoped_acquire acquire;
            throw py::value_error(e.what());
          }
        }
        return out;
      },
      py::arg("signals"), py::arg("weights"), py::arg("weight_set") = py::none(),
      "Fixed-order weighted mean of agent signals: float32 [n_agents, n_bars], float64 "
      "[n_sets, n_agents], optional int64 [n_bars] -> float64 [n_bars].");
  py::class_<SwarmHandle>(m, "Swarm",
                          "N agent MLPs with stacked weights (core; use colmena.Swarm).")
      .def(py::init(&make_swarm), py::arg("layers"), py::arg("activation") = "tanh")
      .def("forward", &swarm_forward, py::arg("x"),
           "x float32 [n_features] -> [n_agents]; [n_steps, n_features] -> [n_agents, n_steps].")
      .def(
          "set_layer",
          [](SwarmHandle& h, py::ssize_t index, const py::handle& w, const py::handle& b) {
            const std::string where = "Swarm.set_layer";
            const std::size_t i = h.layer_index(index, where);
            const std::vector<std::size_t> sizes = h.sizes();
            Expected e{h.stack->n_nets(), sizes[i], sizes[i + 1]};
            const std::string name = "layers[" + std::to_string(i) + "]";
            std::vector<LayerArrays> layer{
                read_layer(py::make_tuple(w, b), where + ": " + name, true, e)};
            h.write(where, {i}, layer, std::nullopt, {name});
          },
          py::arg("index"), py::arg("W"), py::arg("b"))
      .def(
          "set_weights",
          [](SwarmHandle& h, const py::handle& layers_obj) {
            const std::string where = "Swarm.set_weights";
            const std::vector<std::size_t> sizes = h.sizes();
            std::vector<LayerArrays> layers =
                read_layers(layers_obj, where, "layers", true, h.stack->n_nets(), &sizes);
            h.write(where, all_indices(layers.size()), layers, std::nullopt,
                    layer_names("layers", layers.size()));
          },
          py::arg("layers"))
      .def(
          "set_agent",
          [](SwarmHandle& h, py::ssize_t agent, const py::handle& layers_obj) {
            const std::string where = "Swarm.set_agent";
            const std::size_t k = h.net_index(agent, where, "agent");
            const std::vector<std::size_t> sizes = h.sizes();
            std::vector<LayerArrays> layers =
                read_layers(layers_obj, where, "layers", false, 1, &sizes);
            h.write(where, all_indices(layers.size()), layers, k,
                    layer_names("layers", layers.size()));
          },
          py::arg("agent"), py::arg("layers"))
      .def("get_weights",
           [](const SwarmHandle& h) {
             py::list out;
             for (std::size_t l = 0; l < h.stack->n_layers(); ++l)
               out.append(h.read(l, std::nullopt));
             return out;
           })
      .def(
          "get_agent",
          [](const SwarmHandle& h, py::ssize_t agent) {
            const std::size_t k = h.net_index(agent, "Swarm.get_agent", "agent");
            py::list out;
            for (std::size_t l = 0; l < h.stack->n_layers(); ++l) out.append(h.read(l, k));
            return out;
          },
          py::arg("agent"))
      .def_property_readonly("n_agents", [](const SwarmHandle& h) { return h.stack->n_nets(); })
      .def_property_readonly("layer_sizes", [](const SwarmHandle& h) { return h.sizes(); })
      .def_property_readonly("activation",
                             [](const SwarmHandle& h) { return activation_name(h.activation); })
      .def_property_readonly("storage_address", &SwarmHandle::storage_address);

  py::class_<MlpHandle>(m, "MLP", "One dense network (core; use colmena.MLP).")
      .def(py::init(&make_mlp), py::arg("layers"), py::arg("activation") = "tanh",
           py::arg("output_activation") = "identity")
      .def("forward", &mlp_forward, py::arg("x"),
           "x float32 [n_features] -> [n_out]; [n_rows, n_features] -> [n_rows, n_out].")
      .def(
          "set_layer",
          [](MlpHandle& h, py::ssize_t index, const py::handle& w, const py::handle& b) {
            const std::string where = "MLP.set_layer";
            const std::size_t i = h.layer_index(index, where);
            const std::vector<std::size_t> sizes = h.sizes();
            Expected e{1, sizes[i], sizes[i + 1]};
            const std::string name = "layers[" + std::to_string(i) + "]";
            std::vector<LayerArrays> layer{
                read_layer(py::make_tuple(w, b), where + ": " + name, false, e)};
            h.write(where, {i}, layer, 0, {name});
          },
          py::arg("index"), py::arg("W"), py::arg("b"))
      .def(
          "set_weights",
          [](MlpHandle& h, const py::handle& layers_obj) {
            const std::string where = "MLP.set_weights";
            const std::vector<std::size_t> sizes = h.sizes();
            std::vector<LayerArrays> layers =
                read_layers(layers_obj, where, "layers", false, 1, &sizes);
            h.write(where, all_indices(layers.size()), layers, 0,
                    layer_names("layers", layers.size()));
          },
          py::arg("layers"))
      .def("get_weights",
           [](const MlpHandle& h) {
             py::list out;
             for (std::size_t l = 0; l < h.stack->n_layers(); ++l) out.append(h.read(l, 0));
             return out;
           })
      .def_property_readonly("layer_sizes", [](const MlpHandle& h) { return h.sizes(); })
      .def_property_readonly("activation",
                             [](const MlpHandle& h) { return activation_name(h.activation); })
      .def_property_readonly(
          "output_activation",
          [](const MlpHandle& h) { return activation_name(h.output_activation); })
      .def_property_readonly("storage_address", &MlpHandle::storage_address);

  py::class_<VaeHandle>(m, "VAEEncoder", "VAE encoder forward pass (core; use colmena.VAEEncoder).")
      .def(py::init(&make_vae), py::arg("layers"), py::arg("mu"), py::arg("logvar") = py::none(),
           py::arg("activation") = "relu")
      .def("encode", &vae_encode, py::arg("x"), py::arg("return_logvar") = false,
           "x float32 [n_features] -> mu [latent]; [batch, n_features] -> mu [batch, latent]; "
           "(mu, logvar) with return_logvar=True.")
      .def_property_readonly("layer_sizes",
                             [](const VaeHandle& h) {
                               std::vector<std::size_t> s = h.sizes();
                               s.resize(h.stack->n_trunk() + 1);  // the trunk; heads apart
                               return s;
                             })
      .def_property_readonly("latent_size", [](const VaeHandle& h) { return h.latent_size; })
      .def_property_readonly("has_logvar", [](const VaeHandle& h) { return h.has_logvar; })
      .def_property_readonly("activation",
                             [](const VaeHandle& h) { return activation_name(h.activation); })
      .def_property_readonly("storage_address", &VaeHandle::storage_address);
}

}  // namespace colmena::bindings

// Neural forward passes: Swarm, MLP and VAEEncoder over the C++ facades SwarmNet, MlpNet and
// VaeEncoder (cpp/include/colmena/networks.hpp), and the consensus. Only array and argument
// checks, error conversion and GIL release live here: model structure, weight checks and the
// thread-safety contract (a lock inside each facade) belong to the core.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "colmena/consensus.hpp"
#include "colmena/mlp.hpp"
#include "colmena/networks.hpp"
#include "array_checks.hpp"
#include "core_call.hpp"
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
  // A non-contiguous array (a slice, a zero-stride broadcast) is copied before its shape is
  // checked: refuse a copy no network could use before allocating it.
  constexpr py::ssize_t kMaxCopiedElements = py::ssize_t{1} << 31;
  if (!(arr.flags() & py::array::c_style) && arr.size() > kMaxCopiedElements) {
    throw py::value_error(what + " has " + std::to_string(arr.size()) +
                          " elements, more than any layer may hold (2**31)");
  }
  FloatArray out = FloatArray::ensure(arr);
  if (!out) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_MemoryError, (what + ": cannot allocate its float32 copy").c_str());
    }
    throw py::error_already_set();
  }
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

// Runs fn, turning the facade's errors into Python's, prefixed with `where`:
// std::invalid_argument -> ValueError, std::out_of_range -> IndexError.
template <class Fn>
decltype(auto) translate(const std::string& where, Fn&& fn) {
  try {
    return fn();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(where + ": " + e.what());
  } catch (const std::out_of_range& e) {
    throw py::index_error(where + ": " + e.what());
  }
}

// A Python index into [0, n), or IndexError naming `what`.
std::size_t index_arg(const py::handle& obj, std::size_t n, const std::string& where,
                      const char* what) {
  const std::string name = where + ": " + what;
  const std::int64_t index = int_arg(obj, name.c_str());  // an int, never a bool
  if (index < 0 || static_cast<std::size_t>(index) >= n) {
    throw py::index_error(where + ": " + what + " index " + std::to_string(index) +
                          " is outside [0, " + std::to_string(n) + ")");
  }
  return static_cast<std::size_t>(index);
}

std::vector<LayerView> views(const std::vector<LayerArrays>& layers) {
  std::vector<LayerView> out;
  for (const LayerArrays& l : layers) out.push_back({l.w.data(), l.b.data()});
  return out;
}

// Widths (n_in of the first layer, then every n_out).
std::vector<std::size_t> chain_sizes(const std::vector<LayerArrays>& layers) {
  std::vector<std::size_t> sizes{layers.front().n_in};
  for (const LayerArrays& l : layers) sizes.push_back(l.n_out);
  return sizes;
}

// Runs a forward pass without the GIL when the work repays releasing it.
template <class Fn>
void run_forward(std::size_t work, Fn&& fn) {
  std::optional<CoreCall> call;
  if (work >= kReleaseGilWork) call.emplace();
  fn();
}

// Fresh arrays for every layer (of every network, or of one network when `one`), and where the
// core should copy each layer out to.
struct LayerCopies {
  py::list pairs;
  std::vector<LayerOut> out;
};

LayerCopies layer_copies(std::size_t n_nets, const std::vector<std::size_t>& sizes, bool one) {
  LayerCopies c;
  const auto nets = static_cast<py::ssize_t>(n_nets);
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    const auto rows = static_cast<py::ssize_t>(sizes[l]);
    const auto cols = static_cast<py::ssize_t>(sizes[l + 1]);
    FloatArray w = one ? FloatArray({rows, cols}) : FloatArray({nets, rows, cols});
    FloatArray b = one ? FloatArray({cols}) : FloatArray({nets, cols});
    c.out.push_back({w.mutable_data(), b.mutable_data()});
    c.pairs.append(py::make_tuple(w, b));
  }
  return c;
}

// ---------------------------------------------------------------- Swarm
std::unique_ptr<SwarmNet> make_swarm(const py::handle& layers_obj,
                                     const std::string& activation_text) {
  const std::string where = "Swarm";
  const Activation activation = activation_arg(activation_text, where, "activation");
  const std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", true, std::nullopt, nullptr);
  return allocating(where + ": cannot allocate the weights of " +
                        std::to_string(layers.front().n_nets) + " agents",
                    [&] {
    return translate(where, [&] {
    auto net = std::make_unique<SwarmNet>(layers.front().n_nets, chain_sizes(layers), activation);
    const std::vector<LayerView> v = views(layers);
    CoreCall call;
    net->set_weights(v);
    return net;
  });
  });
}

py::array swarm_forward(const SwarmNet& net, const py::handle& x_obj) {
  const InputRows in = input_rows(x_obj, "Swarm.forward", net.n_features(), "n_steps");
  const auto n_agents = static_cast<py::ssize_t>(net.n_agents());
  FloatArray out = in.single ? FloatArray({n_agents})
                             : FloatArray({n_agents, static_cast<py::ssize_t>(in.n_rows)});
  float* y = out.mutable_data();
  run_forward(in.n_rows * net.macs_per_row(), [&] { net.forward(in.data, in.n_rows, in.ldx, y); });
  return out;
}

void swarm_set_layer(SwarmNet& net, const py::handle& index, const py::handle& w, const py::handle& b) {
  const std::string where = "Swarm.set_layer";
  const std::size_t i = index_arg(index, net.n_layers(), where, "layer");
  const std::vector<std::size_t>& sizes = net.layer_sizes();
  const std::string name = "layers[" + std::to_string(i) + "]";
  const LayerArrays layer = read_layer(py::make_tuple(w, b), where + ": " + name, true,
                                       {net.n_agents(), sizes[i], sizes[i + 1]});
  translate(where, [&] {
    CoreCall call;
    net.set_layer(i, {layer.w.data(), layer.b.data()});
  });
}

void swarm_set_weights(SwarmNet& net, const py::handle& layers_obj) {
  const std::string where = "Swarm.set_weights";
  const std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", true, net.n_agents(), &net.layer_sizes());
  const std::vector<LayerView> v = views(layers);
  translate(where, [&] {
    CoreCall call;
    net.set_weights(v);
  });
}

void swarm_set_agent(SwarmNet& net, const py::handle& agent, const py::handle& layers_obj) {
  const std::string where = "Swarm.set_agent";
  const std::size_t k = index_arg(agent, net.n_agents(), where, "agent");
  const std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", false, 1, &net.layer_sizes());
  const std::vector<LayerView> v = views(layers);
  translate(where, [&] {
    CoreCall call;
    net.set_agent(k, v);
  });
}

// Every layer as (W, b) arrays, copied under one lock (never torn by a concurrent set_*).
py::list swarm_layers(const SwarmNet& net, std::optional<std::size_t> agent) {
  LayerCopies c = layer_copies(net.n_agents(), net.layer_sizes(), agent.has_value());
  if (agent) {
    net.get_agent(*agent, c.out);
  } else {
    net.get_weights(c.out);
  }
  return c.pairs;
}

// ---------------------------------------------------------------- MLP
std::unique_ptr<MlpNet> make_mlp(const py::handle& layers_obj, const std::string& activation_text,
                                 const std::string& output_text) {
  const std::string where = "MLP";
  const Activation activation = activation_arg(activation_text, where, "activation");
  const Activation output = activation_arg(output_text, where, "output_activation");
  const std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", false, 1, nullptr);
  return allocating(where + ": cannot allocate the weights", [&] {
    return translate(where, [&] {
    auto net = std::make_unique<MlpNet>(chain_sizes(layers), activation, output);
    const std::vector<LayerView> v = views(layers);
    CoreCall call;
    net->set_weights(v);
    return net;
  });
  });
}

py::array mlp_forward(const MlpNet& net, const py::handle& x_obj) {
  const InputRows in = input_rows(x_obj, "MLP.forward", net.n_features(), "n_rows");
  const auto n_out = static_cast<py::ssize_t>(net.n_outputs());
  FloatArray out =
      in.single ? FloatArray({n_out}) : FloatArray({static_cast<py::ssize_t>(in.n_rows), n_out});
  float* y = out.mutable_data();
  run_forward(in.n_rows * net.macs_per_row(), [&] { net.forward(in.data, in.n_rows, in.ldx, y); });
  return out;
}

void mlp_set_layer(MlpNet& net, const py::handle& index, const py::handle& w, const py::handle& b) {
  const std::string where = "MLP.set_layer";
  const std::size_t i = index_arg(index, net.n_layers(), where, "layer");
  const std::vector<std::size_t>& sizes = net.layer_sizes();
  const std::string name = "layers[" + std::to_string(i) + "]";
  const LayerArrays layer =
      read_layer(py::make_tuple(w, b), where + ": " + name, false, {1, sizes[i], sizes[i + 1]});
  translate(where, [&] {
    CoreCall call;
    net.set_layer(i, {layer.w.data(), layer.b.data()});
  });
}

void mlp_set_weights(MlpNet& net, const py::handle& layers_obj) {
  const std::string where = "MLP.set_weights";
  const std::vector<LayerArrays> layers =
      read_layers(layers_obj, where, "layers", false, 1, &net.layer_sizes());
  const std::vector<LayerView> v = views(layers);
  translate(where, [&] {
    CoreCall call;
    net.set_weights(v);
  });
}

py::list mlp_layers(const MlpNet& net) {
  LayerCopies c = layer_copies(1, net.layer_sizes(), true);
  net.get_weights(c.out);
  return c.pairs;
}

// ---------------------------------------------------------------- VAE encoder
std::unique_ptr<VaeEncoder> make_vae(const py::handle& layers_obj, const py::handle& mu_obj,
                                     const py::handle& logvar_obj,
                                     const std::string& activation_text) {
  const std::string where = "VAEEncoder";
  const Activation activation = activation_arg(activation_text, where, "activation");
  if (!py::isinstance<py::sequence>(layers_obj) || py::isinstance<py::str>(layers_obj)) {
    throw py::type_error(where + ": layers must be a list of (W, b) pairs, got " +
                         type_name(layers_obj));
  }
  std::vector<LayerArrays> layers;
  if (py::len(layers_obj) > 0) {
    layers = read_layers(layers_obj, where, "layers", false, 1, nullptr);
  }
  Expected head;
  head.n_nets = 1;
  if (!layers.empty()) head.n_in = layers.back().n_out;
  const LayerArrays mu = read_layer(mu_obj, where + ": mu", false, head);
  std::optional<LayerArrays> logvar;
  if (!logvar_obj.is_none()) {
    head.n_in = mu.n_in;
    head.n_out = mu.n_out;
    logvar = read_layer(logvar_obj, where + ": logvar", false, head);
  }
  std::vector<std::size_t> trunk =
      layers.empty() ? std::vector<std::size_t>{mu.n_in} : chain_sizes(layers);
  return allocating(where + ": cannot allocate the weights", [&] {
    return translate(where, [&] {
    auto net = std::make_unique<VaeEncoder>(trunk, mu.n_out, logvar.has_value(), activation);
    const std::vector<LayerView> v = views(layers);
    std::optional<LayerView> logvar_view;
    if (logvar) logvar_view = LayerView{logvar->w.data(), logvar->b.data()};
    CoreCall call;
    net->set_weights(v, {mu.w.data(), mu.b.data()}, logvar_view);
    return net;
  });
  });
}

py::object vae_encode(const VaeEncoder& net, const py::handle& x_obj, bool return_logvar) {
  if (return_logvar && !net.has_logvar()) {
    throw py::value_error(
        "VAEEncoder.encode: return_logvar=True needs the logvar head, which this encoder was "
        "built without");
  }
  const InputRows in = input_rows(x_obj, "VAEEncoder.encode", net.n_features(), "batch");
  const auto latent = static_cast<py::ssize_t>(net.latent_size());
  const auto rows = static_cast<py::ssize_t>(in.n_rows);
  FloatArray mu = in.single ? FloatArray({latent}) : FloatArray({rows, latent});
  FloatArray logvar;
  if (return_logvar) logvar = in.single ? FloatArray({latent}) : FloatArray({rows, latent});
  float* mu_out = mu.mutable_data();
  float* logvar_out = return_logvar ? logvar.mutable_data() : nullptr;
  run_forward(in.n_rows * net.macs_per_row(),
              [&] { net.encode(in.data, in.n_rows, in.ldx, mu_out, logvar_out); });
  if (return_logvar) return py::make_tuple(mu, logvar);
  return std::move(mu);
}

std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace

void register_nn(py::module_& m) {
  m.def(
      "consensus",
      [](const py::handle& signals_obj, const py::handle& weights_obj, const py::object& sets_obj) {
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
          throw py::value_error("weights have " + std::to_string(w.shape(1)) + " agents, signals " +
                                std::to_string(n_agents));
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
        try {
          CoreCall call;  // dropped (GIL retaken) before the catch below
          consensus(static_cast<const float*>(sig.data()), n_agents, n_bars,
                    static_cast<const double*>(w.data()), static_cast<std::size_t>(w.shape(0)),
                    set_ptr, out.mutable_data());
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        return out;
      },
      py::arg("signals"), py::arg("weights"), py::arg("weight_set") = py::none(),
      "Fixed-order weighted mean of agent signals: float32 [n_agents, n_bars], float64 "
      "[n_sets, n_agents], optional int64 [n_bars] -> float64 [n_bars].");

  py::class_<SwarmNet>(m, "Swarm", "N agent MLPs with stacked weights (core; use colmena.Swarm).")
      .def(py::init(&make_swarm), py::arg("layers"), py::arg("activation") = "tanh")
      .def("forward", &swarm_forward, py::arg("x"),
           "x float32 [n_features] -> [n_agents]; [n_steps, n_features] -> [n_agents, n_steps].")
      .def("set_layer", &swarm_set_layer, py::arg("index"), py::arg("W"), py::arg("b"))
      .def("set_weights", &swarm_set_weights, py::arg("layers"))
      .def("set_agent", &swarm_set_agent, py::arg("agent"), py::arg("layers"))
      .def("get_weights", [](const SwarmNet& net) { return swarm_layers(net, std::nullopt); })
      .def(
          "get_agent",
          [](const SwarmNet& net, const py::handle& agent) {
            return swarm_layers(net, index_arg(agent, net.n_agents(), "Swarm.get_agent", "agent"));
          },
          py::arg("agent"))
      .def_property_readonly("n_agents", &SwarmNet::n_agents)
      .def_property_readonly("layer_sizes", &SwarmNet::layer_sizes)
      .def_property_readonly("activation",
                             [](const SwarmNet& net) { return activation_name(net.activation()); })
      .def_property_readonly("backend", [](const SwarmNet& net) { return net.backend().name(); })
      .def_property_readonly("storage_address",
                             [](const SwarmNet& net) { return address(net.storage_address()); });

  py::class_<MlpNet>(m, "MLP", "One dense network (core; use colmena.MLP).")
      .def(py::init(&make_mlp), py::arg("layers"), py::arg("activation") = "tanh",
           py::arg("output_activation") = "identity")
      .def("forward", &mlp_forward, py::arg("x"),
           "x float32 [n_features] -> [n_out]; [n_rows, n_features] -> [n_rows, n_out].")
      .def("set_layer", &mlp_set_layer, py::arg("index"), py::arg("W"), py::arg("b"))
      .def("set_weights", &mlp_set_weights, py::arg("layers"))
      .def("get_weights", &mlp_layers)
      .def_property_readonly("layer_sizes", &MlpNet::layer_sizes)
      .def_property_readonly("activation",
                             [](const MlpNet& net) { return activation_name(net.activation()); })
      .def_property_readonly(
          "output_activation",
          [](const MlpNet& net) { return activation_name(net.output_activation()); })
      .def_property_readonly("backend", [](const MlpNet& net) { return net.backend().name(); })
      .def_property_readonly("storage_address",
                             [](const MlpNet& net) { return address(net.storage_address()); });

  py::class_<VaeEncoder>(m, "VAEEncoder",
                         "VAE encoder forward pass (core; use colmena.VAEEncoder).")
      .def(py::init(&make_vae), py::arg("layers"), py::arg("mu"), py::arg("logvar") = py::none(),
           py::arg("activation") = "relu")
      .def("encode", &vae_encode, py::arg("x"), py::arg("return_logvar") = false,
           "x float32 [n_features] -> mu [latent]; [batch, n_features] -> mu [batch, latent]; "
           "(mu, logvar) with return_logvar=True.")
      .def_property_readonly("layer_sizes", &VaeEncoder::trunk_sizes)
      .def_property_readonly("latent_size", &VaeEncoder::latent_size)
      .def_property_readonly("has_logvar", &VaeEncoder::has_logvar)
      .def_property_readonly(
          "activation", [](const VaeEncoder& net) { return activation_name(net.activation()); })
      .def_property_readonly("backend", [](const VaeEncoder& net) { return net.backend().name(); })
      .def_property_readonly("storage_address",
                             [](const VaeEncoder& net) { return address(net.storage_address()); });
}

}  // namespace colmena::bindings

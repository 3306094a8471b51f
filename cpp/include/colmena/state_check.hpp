#pragma once
/// Checks of a snapshot before a restore (RiskManager, PaperExecutor, RiskStage, ExecutionStage):
/// each failure throws std::invalid_argument "<where>: <field> <what>", where `field` is the
/// snapshot's own field name (the same in C++ and in the Python snapshot Structs), prefixed with
/// the path of the part it belongs to ("risk_manager.peak_equity").
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "colmena/ohlcv_validation.hpp"
#include "colmena/time_range.hpp"

namespace colmena {

class StateCheck {
 public:
  /// `where`: the call ("RiskStage.restore"); `path`: prefix of every field name ("shadow.").
  StateCheck(std::string where, std::string path)
      : where_(std::move(where)), path_(std::move(path)) {}

  /// The same call, fields under `part` ("risk_manager" -> "risk_manager.").
  StateCheck sub(const std::string& part) const { return StateCheck(where_, path_ + part + "."); }

  [[noreturn]] void refuse(const std::string& field, const std::string& what) const {
    throw std::invalid_argument(where_ + ": " + path_ + field + " " + what);
  }
  void require(bool ok, const std::string& field, const std::string& what) const {
    if (!ok) refuse(field, what);
  }
  void finite(double value, const std::string& field) const {
    require(std::isfinite(value), field, "must be finite, got " + format_double(value));
  }
  void non_negative(double value, const std::string& field) const {
    require(std::isfinite(value) && value >= 0.0, field,
            "must be finite and >= 0, got " + format_double(value));
  }
  void not_nan(double value, const std::string& field) const {
    require(!std::isnan(value), field, "must not be NaN");
  }
  void timestamp(std::int64_t ts, const std::string& field,
                 std::int64_t latest = kMaxTimestampNs) const {
    require(timestamp_in_range(ts, latest), field,
            "must lie in [1970-01-01T00:00:00Z, " + format_timestamp_ns(latest) + "], got " +
                std::to_string(ts));
  }
  /// "name[i]", the field name of an element.
  static std::string at(const char* name, std::size_t i) {
    std::string out(name);
    out += '[';
    out += std::to_string(i);
    out += ']';
    return out;
  }
  /// A configuration value of the snapshot against the object's own.
  template <class T>
  void same_config(const T& snapshot, const T& own, const std::string& field) const {
    if (!(snapshot == own)) {
      refuse(field, "differs: the snapshot was taken under " + text(snapshot) +
                        ", this object runs with " + text(own));
    }
  }

 private:
  static std::string text(double v) { return format_double(v); }
  static std::string text(bool v) { return v ? "true" : "false"; }
  template <class T>
  static std::string text(const T& v) {
    return std::to_string(v);
  }

  std::string where_;
  std::string path_;
};

}  // namespace colmena

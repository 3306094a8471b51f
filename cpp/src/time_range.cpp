#include "colmena/time_range.hpp"

#include <stdexcept>
#include <string>

#include "colmena/ohlcv_validation.hpp"

namespace colmena {
namespace {

// "2200-01-01T00:00:00Z" from format_timestamp_ns's "7258118400000000000 (2200-01-01T00:00:00Z)".
std::string date_only(std::int64_t ts) {
  const std::string text = format_timestamp_ns(ts);
  const std::size_t open = text.find('(');
  return open == std::string::npos ? text : text.substr(open + 1, text.size() - open - 2);
}

}  // namespace

void check_timestamp(std::int64_t ts, const char* where, const char* what, std::int64_t latest) {
  if (timestamp_in_range(ts, latest)) return;
  throw std::invalid_argument(std::string(where) + ": " + what + " " + format_timestamp_ns(ts) +
                              " is outside the supported time range [" +
                              date_only(kMinTimestampNs) + ", " + date_only(latest) + "]");
}

void check_duration(std::int64_t ns, const char* where, const char* name, bool allow_zero) {
  if ((allow_zero ? ns >= 0 : ns > 0) && ns <= kMaxDurationNs) return;
  throw std::invalid_argument(std::string(where) + ": " + name + " must be in " +
                              (allow_zero ? "[0, " : "(0, ") + std::to_string(kMaxDurationNs) +
                              "] ns (10 years), got " + std::to_string(ns));
}

}  // namespace colmena

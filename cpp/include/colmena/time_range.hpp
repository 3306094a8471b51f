#pragma once
/// The time range and the durations the trading core accepts, and overflow-free time arithmetic.
///
/// Units: timestamps are int64 nanoseconds since the Unix epoch (UTC); durations are int64
/// nanoseconds.
///
///  - Bar (open) times must lie in [kMinTimestampNs, kMaxTimestampNs] = [1970-01-01T00:00:00Z,
///    2200-01-01T00:00:00Z]; risk observations, made at bar closes, in [kMinTimestampNs,
///    kMaxObservationNs] (one duration later).
///  - Durations (the bar length, the kill switch's window, the ladder's pauses, the stale-data
///    limit) must lie in [0, kMaxDurationNs] = [0, 3650 days] ("10 years").
///
/// Within these bounds every `ts + duration`, `ts - duration` and `ts - ts` the core computes
/// fits in int64 with room to spare (2200-01-01 plus two maximal durations is still 42 years
/// before the end of int64 nanoseconds in 2262): the boundaries (the constructors, validate(),
/// RiskManager::observe, the stages' open, run_backtest, simulate_targets) check them and throw
/// std::invalid_argument (ValueError in Python). The saturating helpers below keep the arithmetic
/// defined (clamped at the int64 limits, never wrapping) even where a value was not checked.
#include <cstdint>
#include <limits>

namespace colmena {

/// Earliest accepted timestamp: 1970-01-01T00:00:00Z.
inline constexpr std::int64_t kMinTimestampNs = 0;
/// Latest accepted timestamp: 2200-01-01T00:00:00Z.
inline constexpr std::int64_t kMaxTimestampNs = 7'258'118'400'000'000'000;
/// Longest accepted duration: 3650 days (10 years of 365 days), in nanoseconds.
inline constexpr std::int64_t kMaxDurationNs = 3650LL * 86'400LL * 1'000'000'000LL;
/// Latest accepted time of a risk observation: a bar's close (its open time plus the bar
/// length) may lie up to one duration after the latest open time.
inline constexpr std::int64_t kMaxObservationNs = kMaxTimestampNs + kMaxDurationNs;

static_assert(kMaxObservationNs <= std::numeric_limits<std::int64_t>::max() - kMaxDurationNs,
              "the latest observation time plus a duration must fit in int64");

/// a + b, clamped to the int64 range instead of overflowing.
constexpr std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  if (b > 0 && a > hi - b) return hi;
  if (b < 0 && a < lo - b) return lo;
  return a + b;
}

/// a - b, clamped to the int64 range instead of overflowing.
constexpr std::int64_t saturating_sub(std::int64_t a, std::int64_t b) noexcept {
  constexpr std::int64_t hi = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t lo = std::numeric_limits<std::int64_t>::min();
  if (b < 0 && a > hi + b) return hi;
  if (b > 0 && a < lo + b) return lo;
  return a - b;
}

/// True when `ts` lies in [kMinTimestampNs, latest].
constexpr bool timestamp_in_range(std::int64_t ts,
                                  std::int64_t latest = kMaxTimestampNs) noexcept {
  return ts >= kMinTimestampNs && ts <= latest;
}

/// Throws std::invalid_argument "<where>: <what> <ts (date)> is outside the supported time range
/// [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z]" (the latest time as given) unless
/// timestamp_in_range(ts, latest).
void check_timestamp(std::int64_t ts, const char* where, const char* what = "timestamp",
                     std::int64_t latest = kMaxTimestampNs);

/// Throws std::invalid_argument "<where>: <name> must be in (0, 315360000000000000] ns (10 years),
/// got <ns>" unless 0 < ns <= kMaxDurationNs (0 allowed when `allow_zero`).
void check_duration(std::int64_t ns, const char* where, const char* name, bool allow_zero);

}  // namespace colmena

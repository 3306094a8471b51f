#include "colmena/risk.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace colmena {
namespace {

void check_confidence(double confidence) {
  if (!(confidence > 0.0 && confidence < 1.0)) {
    throw std::invalid_argument("confidence must be in (0, 1), got " + std::to_string(confidence));
  }
}

std::vector<double> finite_sorted(const double* returns, std::size_t n) {
  std::vector<double> v;
  v.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(returns[i])) v.push_back(returns[i]);
  }
  if (v.size() < 2) {
    throw std::invalid_argument("need at least 2 finite returns, got " + std::to_string(v.size()));
  }
  std::sort(v.begin(), v.end());
  return v;
}

// Empirical quantile with linear interpolation (NumPy "linear", Hyndman & Fan type 7) and the
// mean of the values up to it, on sorted data.
TailRisk tail_of_sorted(const std::vector<double>& sorted, double confidence) {
  const double alpha = 1.0 - confidence;
  const double h = alpha * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double q = sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
  double sum = 0.0;
  std::size_t count = 0;
  for (double v : sorted) {
    if (v > q) break;
    sum += v;
    ++count;
  }
  const double es = count > 0 ? -sum / static_cast<double>(count) : -q;
  return TailRisk{-q, es};
}

double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * std::numbers::pi); }

// xoshiro256** (Blackman & Vigna 2018), seeded through splitmix64.
class Xoshiro256 {
 public:
  explicit Xoshiro256(std::uint64_t seed) {
    for (auto& word : s_) {
      seed += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
  }
  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  /// Uniform integer in [0, bound) (Lemire's nearly divisionless method, unbiased).
  std::uint64_t below(std::uint64_t bound) noexcept {
    __uint128_t m = static_cast<__uint128_t>(next()) * bound;
    auto low = static_cast<std::uint64_t>(m);
    if (low < bound) {
      const std::uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next()) * bound;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

}  // namespace

double normal_quantile(double p) {
  if (!(p > 0.0 && p < 1.0)) {
    throw std::invalid_argument("normal_quantile: p must be in (0, 1), got " + std::to_string(p));
  }
  // Wichura (1988), Algorithm AS 241, PPND16.
  const double q = p - 0.5;
  if (std::abs(q) <= 0.425) {
    const double r = 0.180625 - q * q;
    return q *
           (((((((2509.0809287301226727 * r + 33430.575583588128105) * r + 67265.770927008700853) *
                    r +
                45921.953931549871457) *
                   r +
               13731.693765509461125) *
                  r +
              1971.5909503065514427) *
                 r +
             133.14166789178437745) *
                r +
            3.387132872796366608) /
           (((((((5226.495278852545925 * r + 28729.085735721942674) * r + 39307.89580009271061) *
                    r +
                21213.794301586595867) *
                   r +
               5394.1960214247511077) *
                  r +
              687.1870074920579083) *
                 r +
             42.313330701600911252) *
                r +
            1.0);
  }
  double r = q < 0.0 ? p : 1.0 - p;
  r = std::sqrt(-std::log(r));
  double value;
  if (r <= 5.0) {
    r -= 1.6;
    value = (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r +
                  0.24178072517745061177) *
                     r +
                 1.27045825245236838258) *
                    r +
                3.64784832476320460504) *
                   r +
               5.7694972214606914055) *
                  r +
              4.6303378461565452959) *
                 r +
             1.42343711074968357734) /
            (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r +
                  0.0151986665636164571966) *
                     r +
                 0.14810397642748007459) *
                    r +
                0.68976733498510000455) *
                   r +
               1.6763848301838038494) *
                  r +
              2.05319162663775882187) *
                 r +
             1.0);
  } else {
    r -= 5.0;
    value = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r +
                  0.0012426609473880784386) *
                     r +
                 0.026532189526576123093) *
                    r +
                0.29656057182850489123) *
                   r +
               1.7848265399172913358) *
                  r +
              5.4637849111641143699) *
                 r +
             6.6579046435011037772) /
            (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r +
                  1.8463183175100546818e-5) *
                     r +
                 7.868691311456132591e-4) *
                    r +
                0.0148753612908506148525) *
                   r +
               0.13692988092273580531) *
                  r +
              0.59983220655588793769) *
                 r +
             1.0);
  }
  return q < 0.0 ? -value : value;
}

SampleMoments sample_moments(const double* returns, std::size_t n) {
  SampleMoments m;
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(returns[i])) {
      sum += returns[i];
      ++m.count;
    }
  }
  if (m.count < 2) {
    throw std::invalid_argument("need at least 2 finite returns, got " + std::to_string(m.count));
  }
  const double count = static_cast<double>(m.count);
  m.mean = sum / count;
  double m2 = 0.0, m3 = 0.0, m4 = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(returns[i])) continue;
    const double d = returns[i] - m.mean;
    const double d2 = d * d;
    m2 += d2;
    m3 += d2 * d;
    m4 += d2 * d2;
  }
  m.std = std::sqrt(m2 / (count - 1.0));
  const double var_biased = m2 / count;
  if (var_biased > 0.0) {
    m.skewness = (m3 / count) / std::pow(var_biased, 1.5);
    m.excess_kurtosis = (m4 / count) / (var_biased * var_biased) - 3.0;
  }
  return m;
}

TailRisk historical_tail_risk(const double* returns, std::size_t n, double confidence) {
  check_confidence(confidence);
  return tail_of_sorted(finite_sorted(returns, n), confidence);
}

TailRisk gaussian_tail_risk(const double* returns, std::size_t n, double confidence) {
  check_confidence(confidence);
  const SampleMoments m = sample_moments(returns, n);
  const double alpha = 1.0 - confidence;
  const double z = normal_quantile(alpha);
  return TailRisk{-(m.mean + m.std * z), m.std * normal_pdf(z) / alpha - m.mean};
}

TailRisk cornish_fisher_tail_risk(const double* returns, std::size_t n, double confidence) {
  check_confidence(confidence);
  const SampleMoments m = sample_moments(returns, n);
  const double s = m.skewness, k = m.excess_kurtosis;
  auto cf = [&](double z) {
    return z + (z * z - 1.0) * s / 6.0 + (z * z * z - 3.0 * z) * k / 24.0 -
           (2.0 * z * z * z - 5.0 * z) * s * s / 36.0;
  };
  const double alpha = 1.0 - confidence;
  const double var = -(m.mean + m.std * cf(normal_quantile(alpha)));
  // ES = -(1/alpha) * integral_0^alpha (mu + sigma * cf(Phi^{-1}(u))) du, midpoint rule in u.
  constexpr int kSteps = 2000;
  double integral = 0.0;
  for (int i = 0; i < kSteps; ++i) {
    const double u = alpha * (static_cast<double>(i) + 0.5) / kSteps;
    integral += m.mean + m.std * cf(normal_quantile(u));
  }
  return TailRisk{var, -integral / kSteps};
}

TailRisk monte_carlo_tail_risk(const double* returns, std::size_t n, double confidence,
                               std::size_t horizon, std::size_t paths, std::uint64_t seed) {
  check_confidence(confidence);
  if (horizon == 0 || paths < 2) {
    throw std::invalid_argument("monte_carlo_tail_risk: need horizon >= 1 and paths >= 2");
  }
  if (horizon > kMaxMonteCarloHorizon) {
    throw std::invalid_argument("monte_carlo_tail_risk: horizon must be at most " +
                                std::to_string(kMaxMonteCarloHorizon) + " bars, got " +
                                std::to_string(horizon));
  }
  if (paths > kMaxMonteCarloPaths) {
    throw std::invalid_argument("monte_carlo_tail_risk: paths must be at most " +
                                std::to_string(kMaxMonteCarloPaths) + ", got " +
                                std::to_string(paths));
  }
  if (horizon * paths > kMaxMonteCarloDraws) {  // both bounded above: no overflow
    throw std::invalid_argument("monte_carlo_tail_risk: horizon * paths must be at most " +
                                std::to_string(kMaxMonteCarloDraws) + " draws, got " +
                                std::to_string(horizon) + " * " + std::to_string(paths));
  }
  std::vector<double> sample;
  sample.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isfinite(returns[i])) sample.push_back(returns[i]);
  }
  if (sample.size() < 2) {
    throw std::invalid_argument("need at least 2 finite returns, got " +
                                std::to_string(sample.size()));
  }
  Xoshiro256 rng(seed);
  std::vector<double> simulated(paths);
  for (auto& total : simulated) {
    double sum = 0.0;
    for (std::size_t h = 0; h < horizon; ++h) sum += sample[rng.below(sample.size())];
    total = sum;
  }
  std::sort(simulated.begin(), simulated.end());
  return tail_of_sorted(simulated, confidence);
}

}  // namespace colmena

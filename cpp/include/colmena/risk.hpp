#pragma once
/// Risk statistics on a sample of returns: Value at Risk and expected shortfall (CVaR).
///
/// Conventions: `returns` are simple or log returns of one unit of exposure over the horizon
/// (a fraction, e.g. -0.02 = -2%); VaR and expected shortfall are reported as positive loss
/// fractions at confidence level `confidence` in (0, 1) (e.g. 0.99 = the 1% tail).
/// Sources: Jorion, "Value at Risk", 3rd ed. (2006), ch. 5 and 12; Hull, "Risk Management and
/// Financial Institutions", 5th ed., ch. 12-13; Cornish & Fisher (1938); Acerbi & Tasche (2002)
/// for expected shortfall.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace colmena {

struct TailRisk {
  double var = 0.0;                 ///< loss fraction not exceeded with probability `confidence`
  double expected_shortfall = 0.0;  ///< mean loss beyond the VaR (CVaR)
};

/// Historical simulation: VaR is minus the (1 - confidence) empirical quantile (linear
/// interpolation between order statistics, NumPy's default "linear" method), ES is minus the
/// mean of the returns at or below that quantile. Non-finite returns are skipped.
/// Throws std::invalid_argument with fewer than 2 finite returns or a bad confidence.
TailRisk historical_tail_risk(const double* returns, std::size_t n, double confidence);

/// Gaussian (variance-covariance) VaR: -(mu + sigma * z) with z = Phi^{-1}(1 - confidence);
/// ES = sigma * phi(z) / (1 - confidence) - mu. mu and sigma are the sample mean and standard
/// deviation (ddof = 1).
TailRisk gaussian_tail_risk(const double* returns, std::size_t n, double confidence);

/// Cornish-Fisher VaR: the Gaussian quantile corrected for sample skewness S and excess kurtosis
/// K: z_cf = z + (z^2 - 1) S / 6 + (z^3 - 3 z) K / 24 - (2 z^3 - 5 z) S^2 / 36. ES is the mean of
/// the Cornish-Fisher quantile function over the tail (integrated numerically).
TailRisk cornish_fisher_tail_risk(const double* returns, std::size_t n, double confidence);

/// Longest Monte Carlo horizon, bars (about two years of one-minute bars).
inline constexpr std::size_t kMaxMonteCarloHorizon = 1'000'000;
/// Most Monte Carlo paths (80 MB of simulated returns).
inline constexpr std::size_t kMaxMonteCarloPaths = 10'000'000;
/// Most draws, horizon * paths: a few seconds of work.
inline constexpr std::size_t kMaxMonteCarloDraws = 1'000'000'000;

/// Monte Carlo: `paths` horizon returns, each the sum of `horizon` bar returns drawn with
/// replacement from the sample (i.i.d. bootstrap, Efron 1979), seeded; VaR and ES as in
/// historical simulation over the simulated horizon returns. Deterministic for a seed on every
/// platform (xoshiro256** generator, no standard-library distributions). Bounds, so that a call
/// always ends in seconds and memory stays small: horizon in [1, kMaxMonteCarloHorizon], paths
/// in [2, kMaxMonteCarloPaths], horizon * paths <= kMaxMonteCarloDraws; std::invalid_argument
/// otherwise.
TailRisk monte_carlo_tail_risk(const double* returns, std::size_t n, double confidence,
                               std::size_t horizon, std::size_t paths, std::uint64_t seed);

/// Standard normal quantile Phi^{-1}(p), p in (0, 1) (Wichura, AS 241, 1988; |rel err| < 1e-15).
double normal_quantile(double p);

/// Sample moments used above: mean, standard deviation (ddof = 1), skewness and excess kurtosis
/// (biased estimators, as scipy.stats.skew / kurtosis with bias=True).
struct SampleMoments {
  double mean = 0.0, std = 0.0, skewness = 0.0, excess_kurtosis = 0.0;
  std::size_t count = 0;
};
SampleMoments sample_moments(const double* returns, std::size_t n);

}  // namespace colmena

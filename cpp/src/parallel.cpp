#include "colmena/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

namespace colmena {
namespace {

// Workers that finish a loop keep polling for the next one this long before they sleep on the
// condition variable, and the caller polls this long for the workers to finish: waking a
// sleeping thread costs tens of microseconds, as much as a whole small loop.
constexpr auto kSpin = std::chrono::microseconds(100);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls pred() for up to kSpin; true as soon as it holds.
template <typename Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 1;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

std::size_t default_threads() noexcept {
  std::size_t n = std::max(1u, std::thread::hardware_concurrency());
  if (const char* env = std::getenv("COLMENA_NUM_THREADS")) {
    const long v = std::strtol(env, nullptr, 10);
    if (v >= 1) n = std::min<std::size_t>(n, static_cast<std::size_t>(v));
  }
  return n;
}

std::atomic<std::size_t> g_thread_cap{0};

class Pool {
 public:
  static Pool& instance() {
    // Leaked on purpose: joining workers from a static destructor at interpreter exit can hang.
    static Pool* pool = new Pool(default_threads());
    return *pool;
  }

  std::size_t size() const noexcept { return workers_.size() + 1; }

  void run(std::size_t n, std::size_t threads, const std::function<void(std::size_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || tls_inside_) {  // nested or concurrent call: run serially
      for (std::size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      active_workers_ = std::min(threads, size()) - 1;
      pending_.store(active_workers_);
      error_ = nullptr;
      epoch_.store(epoch_.load() + 1, std::memory_order_release);  // publishes the fields above
    }
    wake_.notify_all();
    work();
    auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(finished)) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, finished);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  explicit Pool(std::size_t threads) {
    for (std::size_t t = 1; t < threads; ++t) {
      workers_.emplace_back([this, t] { loop(t); });
      workers_.back().detach();
    }
  }

  void work() {
    tls_inside_ = true;
    for (;;) {
      const std::size_t i = next_.fetch_add(1);
      if (i >= n_) break;
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);
      }
    }
    tls_inside_ = false;
  }

  void loop(std::size_t id) {
    std::size_t seen = 0;
    auto started = [&] { return epoch_.load(std::memory_order_acquire) != seen; };
    for (;;) {
      if (!spin_until(started)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, started);
      }
      // A new loop cannot start before every worker it enlisted has finished this one, so no
      // epoch is missed by a worker that takes part in it.
      seen = epoch_.load(std::memory_order_acquire);
      if (id > active_workers_) continue;
      work();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // orders the notify after the caller's check
        done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(std::size_t)>* fn_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  std::size_t active_workers_ = 0;
  std::atomic<std::size_t> pending_{0};
  std::atomic<std::size_t> epoch_{0};
  std::exception_ptr error_;
  static thread_local bool tls_inside_;
};

thread_local bool Pool::tls_inside_ = false;

}  // namespace

std::size_t max_threads() noexcept {
  const std::size_t cap = g_thread_cap.load();
  const std::size_t pool = Pool::instance().size();
  return cap == 0 ? pool : std::min(cap, pool);
}

void set_max_threads(std::size_t n) noexcept { g_thread_cap.store(n); }

void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  const std::size_t threads = std::min(n, max_threads());
  if (threads <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Pool::instance().run(n, threads, fn);
}

}  // namespace colmena

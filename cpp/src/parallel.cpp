#include "colmena/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
#define COLMENA_HAVE_ATFORK 1
#endif

namespace colmena {
namespace {

// Workers that finish a loop keep polling for the next one this long before they sleep on the
// condition variable, and the caller polls this long for the workers inside the loop to finish:
// waking a sleeping thread costs tens of microseconds, as much as a whole small loop.
constexpr auto kSpin = std::chrono::microseconds(50);

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

// The pool, built on first use. Leaked on purpose: joining workers from a static destructor at
// interpreter exit can hang, and a forked child drops its copy without touching it (see
// parallel.hpp, "Fork"). g_pool_create is held while one is built and across a fork.
class Pool;
std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_create;

class Pool {
 public:
  static Pool& instance() {
    Pool* pool = g_pool.load(std::memory_order_acquire);
    if (pool != nullptr) return *pool;
    std::lock_guard<std::mutex> lock(g_pool_create);
    pool = g_pool.load(std::memory_order_acquire);
    if (pool == nullptr) {
      pool = new Pool(default_threads());
      g_pool.store(pool, std::memory_order_release);
    }
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
      active_workers_.store(std::min(threads, size()) - 1, std::memory_order_relaxed);
      error_ = nullptr;
      const std::size_t epoch = epoch_.load() + 1;
      // Publishes the fields above: a worker reads them only after joining through state_.
      state_.store(epoch_bits(epoch) | kOpen, std::memory_order_release);
      epoch_.store(epoch, std::memory_order_release);
    }
    wake_.notify_all();
    work();
    // Every index is handed out. Close the loop so that late workers stay out, then wait only
    // for the workers that joined: a worker the OS has not scheduled yet (a busy machine) no
    // longer holds the caller up.
    const std::uint64_t before = state_.fetch_and(~kOpen, std::memory_order_acq_rel);
    if ((before & kCountMask) != 0) {
      auto finished = [&] { return (state_.load(std::memory_order_acquire) & kCountMask) == 0; };
      if (!spin_until(finished)) {
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, finished);
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // state_: the loop's epoch (low 32 bits) in the high word, kOpen while workers may join, and
  // the number of workers inside the loop in the low bits.
  static constexpr std::uint64_t kOpen = std::uint64_t{1} << 31;
  static constexpr std::uint64_t kCountMask = kOpen - 1;
  static std::uint64_t epoch_bits(std::size_t epoch) noexcept {
    return static_cast<std::uint64_t>(epoch & 0xffffffffu) << 32;
  }

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

  // Enter loop `epoch` if it is still open; false once it has closed or moved on.
  bool join(std::size_t epoch) noexcept {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((s & ~(kOpen | kCountMask)) != epoch_bits(epoch) || (s & kOpen) == 0) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        return true;
      }
    }
  }

  void loop(std::size_t id) {
    tls_slot_ = id;
    std::size_t seen = 0;
    auto started = [&] { return epoch_.load(std::memory_order_acquire) != seen; };
    for (;;) {
      if (!spin_until(started)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, started);
      }
      seen = epoch_.load(std::memory_order_acquire);
      if (id > active_workers_.load(std::memory_order_relaxed) || !join(seen)) continue;
      work();
      const std::uint64_t before = state_.fetch_sub(1, std::memory_order_acq_rel);
      if ((before & kCountMask) == 1 && (before & kOpen) == 0) {
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
  std::atomic<std::size_t> active_workers_{0};
  std::atomic<std::size_t> epoch_{0};
  std::atomic<std::uint64_t> state_{0};
  std::exception_ptr error_;
  static thread_local bool tls_inside_;

 public:
  static thread_local std::size_t tls_slot_;
};

thread_local bool Pool::tls_inside_ = false;
thread_local std::size_t Pool::tls_slot_ = 0;

// ------------------------------------------------------------------ core calls (parallel.hpp)
// g_guard: shared by each core call's work, exclusive across a fork. g_in_flight: calls admitted
// and not done. g_stopped: core_calls_stop() ran. g_abandoned: it gave up waiting.
// g_guard is a leaked pointer because the child replaces it rather than unlocking it: glibc's
// rwlock remembers its writer by thread id, which a forked child's thread no longer has, so an
// unlock there would be taken for a reader's and leave the lock held.
std::shared_mutex* g_guard = new std::shared_mutex();
std::atomic<std::size_t> g_in_flight{0};
std::atomic<bool> g_stopped{false};
std::atomic<bool> g_abandoned{false};

#if defined(COLMENA_HAVE_ATFORK)
void prepare_fork() noexcept {
  g_guard->lock();        // waits for the core calls inside their work
  g_pool_create.lock();   // no pool half-built at the fork
}
void after_fork_parent() noexcept {
  g_pool_create.unlock();
  g_guard->unlock();
}
void after_fork_child() noexcept {
  // Only the forking thread exists here. The pool's workers are gone, and one may have held the
  // pool's mutex at the fork: forget it (leaked) so that the next loop builds a fresh one.
  g_pool.store(nullptr, std::memory_order_release);
  g_in_flight.store(0);
  g_pool_create.unlock();
  g_guard = new std::shared_mutex();  // the old one stays locked, leaked (see above)
}

// Installs the handlers when the library is loaded, before any core call can run.
const bool g_fork_handlers_installed = [] {
  return pthread_atfork(&prepare_fork, &after_fork_parent, &after_fork_child) == 0;
}();
#endif

}  // namespace

void core_call_admit() {
  g_in_flight.fetch_add(1);  // sequentially consistent: pairs with core_calls_stop
  if (g_stopped.load()) {
    g_in_flight.fetch_sub(1);
    throw CoreStoppedError(
        "colmena: the core accepts no new calls: the interpreter is shutting down");
  }
}

void core_call_lock() noexcept { g_guard->lock_shared(); }

void core_call_unlock() noexcept { g_guard->unlock_shared(); }

void core_call_done() noexcept {
  g_in_flight.fetch_sub(1, std::memory_order_acq_rel);
  if (g_abandoned.load(std::memory_order_acquire)) {
    // The exit hook stopped waiting and the interpreter is finalizing: retaking the GIL would
    // end this thread with pthread_exit through a noexcept frame (std::terminate). Park it.
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
}

std::size_t core_calls_in_flight() noexcept { return g_in_flight.load(std::memory_order_acquire); }

bool core_calls_stop(std::chrono::milliseconds timeout) noexcept {
  // Admission increments before it reads g_stopped, and this stores before it reads the count
  // (both sequentially consistent): a call either sees the stop or is counted here.
  g_stopped.store(true);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (g_in_flight.load() != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      g_abandoned.store(true);
      // A call that finished between the last look and the store above may already be on its
      // way back to the GIL; none is lost to the count.
      return g_in_flight.load() == 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

bool core_calls_stopped() noexcept { return g_stopped.load(std::memory_order_acquire); }

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

std::size_t current_thread_slot() noexcept { return Pool::tls_slot_; }

}  // namespace colmena

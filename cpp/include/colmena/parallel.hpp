#pragma once
/// A small persistent worker pool for data-parallel loops in the core, and the guard that makes
/// the core safe across fork() and interpreter exit.
///
/// parallel_for(n, fn) calls fn(i) for every i in [0, n) on the pool's threads and the calling
/// thread, handing out indices through an atomic counter, and returns when all calls are done.
/// The first exception thrown by fn is rethrown in the caller after the loop drains. Threads:
/// std::thread::hardware_concurrency(), capped by the environment variable COLMENA_NUM_THREADS.
/// Calls from inside a running loop (nesting) or from several threads at once run serially in
/// the calling thread instead of deadlocking.
///
/// Core calls. Every binding that releases the GIL runs its work as a "core call":
/// core_call_admit() with the GIL held (refuses once core_calls_stop() ran: CoreStoppedError,
/// and counts the call as in flight), then the GIL is released, then core_call_lock() takes the
/// global guard shared, the work runs, core_call_unlock() drops the guard, and core_call_done()
/// uncounts it, and only then is the GIL retaken (bindings/core_call.hpp does all of it in one
/// RAII object). A call never holds the guard while it waits for the GIL.
///
/// Fork. pthread_atfork handlers (installed when this library is loaded):
/// - prepare takes the guard exclusive: it waits until no core call is inside its work. A
///   thread blocked here holds no lock any core call needs (the forking thread holds the GIL,
///   but no core call takes the GIL while it holds the guard), so the wait always ends. Then it
///   takes the pool's creation lock, so that no pool is half-built at the fork.
/// - parent releases both.
/// - child: the pool's worker threads do not exist in the child, and a worker may have held the
///   pool's internal mutex at the fork; so the child forgets the pool (leaked, never touched
///   again) and builds a fresh one, with fresh threads, on its first parallel loop. The
///   in-flight count is reset to 0 (the only counted threads were blocked before their work and
///   do not exist in the child) and both locks are released.
/// Calls that keep the GIL are never in flight at a fork from Python (the forking thread holds
/// the GIL), so they need no guard. MarketBuffer's own handlers (market_buffer.cpp) give the
/// child private copies of mirrored buffers.
///
/// Interpreter exit. A daemon thread still inside a core call when the interpreter finalizes
/// would abort the process when it retakes the GIL (CPython ends such a thread with
/// pthread_exit, whose forced unwinding cannot cross the binding's noexcept GIL guard). The
/// module registers an atexit hook that calls core_calls_stop(timeout): new core calls raise
/// CoreStoppedError (RuntimeError in Python) and the hook waits, up to the timeout, for the calls
/// in flight to finish. If some are still running when it gives up, each of them, when it
/// finishes, parks its thread for good instead of retaking the GIL (the process is exiting).
#include <chrono>
#include <cstddef>
#include <functional>
#include <stdexcept>

namespace colmena {

/// Number of threads a parallel loop may use (>= 1).
std::size_t max_threads() noexcept;
/// Cap the number of threads (1 = serial); 0 restores the default.
void set_max_threads(std::size_t n) noexcept;

void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

/// Slot of the calling thread: 0 for any thread outside the pool (the caller of parallel_for),
/// 1 .. pool size - 1 for the pool's workers. Lets a loop give the same part of the work to the
/// same thread on every call, so that its data stay in that core's cache.
std::size_t current_thread_slot() noexcept;

/// Thrown by core_call_admit once core_calls_stop() has run.
class CoreStoppedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Count one core call in flight; throws CoreStoppedError after core_calls_stop(). Call with the
/// GIL held, before releasing it.
void core_call_admit();
/// Take the guard shared (after releasing the GIL; may wait while a fork is being prepared).
void core_call_lock() noexcept;
/// Drop the guard (before retaking the GIL).
void core_call_unlock() noexcept;
/// Uncount the call; if core_calls_stop() gave up waiting, never returns (parks the thread).
void core_call_done() noexcept;
/// Core calls counted in flight now (a test's synchronisation point: > 0 once a thread has
/// entered a core call).
std::size_t core_calls_in_flight() noexcept;
/// Refuse new core calls from now on and wait up to `timeout` for those in flight; true when
/// none is left. Call without the GIL.
bool core_calls_stop(std::chrono::milliseconds timeout) noexcept;
/// Whether core_calls_stop() has run.
bool core_calls_stopped() noexcept;

}  // namespace colmena

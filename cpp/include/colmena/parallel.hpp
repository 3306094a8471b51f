#pragma once
/// A small persistent worker pool for data-parallel loops in the core.
///
/// parallel_for(n, fn) calls fn(i) for every i in [0, n) on the pool's threads and the calling
/// thread, handing out indices through an atomic counter, and returns when all calls are done.
/// The first exception thrown by fn is rethrown in the caller after the loop drains. Threads:
/// std::thread::hardware_concurrency(), capped by the environment variable COLMENA_NUM_THREADS.
/// Calls from inside a running loop (nesting) or from several threads at once run serially in
/// the calling thread instead of deadlocking.
#include <cstddef>
#include <functional>

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

}  // namespace colmena

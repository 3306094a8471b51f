#pragma once
/// Uninitialised, 64-byte aligned float64 scratch memory (one cache line, one AVX-512 vector).
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace colmena {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t count) { resize(count); }

  /// Grow to at least `count` doubles; contents are not preserved when it grows.
  void resize(std::size_t count) {
    if (count <= capacity_) return;
    const std::size_t bytes = ((count * sizeof(double) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(static_cast<double*>(p));
    capacity_ = count;
  }

  double* data() noexcept { return data_.get(); }
  const double* data() const noexcept { return data_.get(); }

 private:
  struct Free {
    void operator()(double* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<double, Free> data_;
  std::size_t capacity_ = 0;
};

}  // namespace colmena

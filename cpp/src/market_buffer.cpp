#include "colmena/market_buffer.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#define COLMENA_HAVE_MIRRORED_RING 1
#endif

namespace colmena {

namespace {
constexpr std::size_t kElementBytes = 8;  // int64 and float64 alike
constexpr std::align_val_t kAlignment{64};
static_assert(sizeof(std::int64_t) == kElementBytes && sizeof(double) == kElementBytes);
}  // namespace

const char* ring_storage_name(RingStorage storage) noexcept {
  return storage == RingStorage::mirrored ? "mirrored" : "double_write";
}

// Live mirrored buffers, so that a forked child can give each one a private copy. The mapping is
// MAP_SHARED (that is what makes the two views alias), and a shared mapping stays shared across
// fork(): without this a child's writes would show in the parent's windows and vice versa.
struct MarketBufferForkRegistry {
#if defined(COLMENA_HAVE_MIRRORED_RING)
  static MarketBufferForkRegistry& instance() {
    // Leaked on purpose: buffers may outlive static destruction at interpreter exit.
    static MarketBufferForkRegistry* registry = [] {
      auto* r = new MarketBufferForkRegistry();
      pthread_atfork(&prepare, &parent, &child);
      return r;
    }();
    return *registry;
  }

  void add(MarketBuffer* buffer) {
    std::lock_guard<std::mutex> lock(mutex);
    buffers.push_back(buffer);
  }

  void remove(MarketBuffer* buffer) noexcept {
    std::lock_guard<std::mutex> lock(mutex);
    buffers.erase(std::remove(buffers.begin(), buffers.end(), buffer), buffers.end());
  }

  static void prepare() noexcept { instance().mutex.lock(); }
  static void parent() noexcept { instance().mutex.unlock(); }
  static void child() noexcept {
    MarketBufferForkRegistry& r = instance();
    for (MarketBuffer* buffer : r.buffers) buffer->remap_private_copy();
    r.mutex.unlock();
  }

  std::mutex mutex;
  std::vector<MarketBuffer*> buffers;
#endif
};

namespace {

// std::length_error when `capacity` candles of `bytes_per_candle` committed bytes exceed this
// machine's physical memory, naming the capacity, the bytes and the largest capacity that fits.
void refuse_beyond_physical_memory(std::size_t capacity, std::size_t bytes_per_candle,
                                   const char* storage) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return;
  const double physical = static_cast<double>(pages) * static_cast<double>(page_size);
  const double needed = static_cast<double>(capacity) * static_cast<double>(bytes_per_candle);
  if (needed > physical) {
    const auto largest = static_cast<unsigned long long>(physical / bytes_per_candle);
    throw std::length_error(
        "MarketBuffer: capacity " + std::to_string(capacity) + " needs " +
        std::to_string(static_cast<unsigned long long>(needed)) + " bytes of " + storage +
        " storage (" + std::to_string(bytes_per_candle) +
        " per candle), more than this machine's memory (" +
        std::to_string(static_cast<unsigned long long>(physical)) +
        " bytes physical); the largest capacity that fits is " + std::to_string(largest));
  }
#else
  (void)capacity;
  (void)bytes_per_candle;
  (void)storage;
#endif
}

}  // namespace

MarketBuffer::MarketBuffer(std::size_t capacity, RingStoragePreference preference)
    : capacity_(capacity) {
  if (capacity == 0) {
    throw std::invalid_argument("MarketBuffer: capacity must be >= 1, got 0");
  }
  // Largest capacity whose storage (kFields x 2 x P slots, P rounded up to a page) fits size_t.
  const std::size_t limit =
      std::numeric_limits<std::size_t>::max() / (kFields * 2 * kElementBytes) - (1u << 20);
  if (capacity > limit) {
    throw std::length_error("MarketBuffer: capacity " + std::to_string(capacity) +
                            " is too large to address");
  }
  // Storage is committed up front, so a capacity beyond physical memory would not fail cleanly
  // later: it would get the process killed while pre-faulting. Refuse it here, for the storage
  // about to be committed: mirrored holds each slot once, double_write twice.
  if (preference != RingStoragePreference::double_write) {
    refuse_beyond_physical_memory(capacity, kFields * kElementBytes, "mirrored");
  }
  if (preference != RingStoragePreference::double_write && try_map_mirrored()) {
    storage_ = RingStorage::mirrored;
#if defined(COLMENA_HAVE_MIRRORED_RING)
    MarketBufferForkRegistry::instance().add(this);
#endif
    return;
  }
  if (preference == RingStoragePreference::mirrored) {
    throw std::runtime_error(
        "MarketBuffer: mirrored storage is unavailable here (needs Linux memfd_create and mmap); "
        "use storage='auto' or 'double_write'");
  }
  refuse_beyond_physical_memory(capacity, 2 * kFields * kElementBytes, "double_write");
  allocate_double_write();
}

MarketBuffer::~MarketBuffer() {
#if defined(COLMENA_HAVE_MIRRORED_RING)
  if (mapped_bytes_ != 0) {
    MarketBufferForkRegistry::instance().remove(this);
    munmap(base_, mapped_bytes_);
    return;
  }
#endif
  ::operator delete(base_, kAlignment);
}

bool MarketBuffer::try_map_mirrored() noexcept {
#if defined(COLMENA_HAVE_MIRRORED_RING)
  const long page_size = sysconf(_SC_PAGESIZE);
  if (page_size <= 0 || static_cast<std::size_t>(page_size) % kElementBytes != 0) return false;
  const std::size_t per_page = static_cast<std::size_t>(page_size) / kElementBytes;
  const std::size_t slots = (capacity_ + per_page - 1) / per_page * per_page;
  const std::size_t section = slots * kElementBytes;
  const std::size_t reserved = kFields * 2 * section;

  const int fd = memfd_create("colmena-market-buffer", MFD_CLOEXEC);
  if (fd < 0) return false;
  if (ftruncate(fd, static_cast<off_t>(kFields * section)) != 0) {
    close(fd);
    return false;
  }
  // Reserve the whole range first so that the fixed mappings below cannot clobber anything.
  void* reservation =
      mmap(nullptr, reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reservation == MAP_FAILED) {
    close(fd);
    return false;
  }
  auto* base = static_cast<unsigned char*>(reservation);
  bool ok = true;
  for (std::size_t f = 0; f < kFields && ok; ++f) {
    for (std::size_t half = 0; half < 2 && ok; ++half) {
      void* want = base + (2 * f + half) * section;
      void* got = mmap(want, section, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE,
                       fd, static_cast<off_t>(f * section));
      ok = got == want;
    }
  }
  close(fd);  // the mappings keep the file alive
  if (ok) {
    // Make sure the two views really alias (some sandboxes emulate mmap imperfectly).
    volatile auto* first = reinterpret_cast<volatile std::int64_t*>(base);
    volatile auto* mirror = reinterpret_cast<volatile std::int64_t*>(base + section);
    first[0] = 0x636f6c6d656e61;
    ok = mirror[0] == 0x636f6c6d656e61;
    first[0] = 0;
  }
  if (!ok) {
    munmap(base, reserved);
    return false;
  }
  base_ = base;
  mapped_bytes_ = reserved;
  slots_ = slots;
  section_bytes_ = section;
  return true;
#else
  return false;
#endif
}

void MarketBuffer::allocate_double_write() {
  slots_ = capacity_;
  section_bytes_ = slots_ * kElementBytes;
  const std::size_t bytes = kFields * 2 * section_bytes_;
  base_ = static_cast<unsigned char*>(::operator new(bytes, kAlignment));
  std::memset(base_, 0, bytes);  // commit every page now, so that push never faults
  storage_ = RingStorage::double_write;
}

void MarketBuffer::remap_private_copy() noexcept {
#if defined(COLMENA_HAVE_MIRRORED_RING)
  // Runs in a forked child with only the forking thread alive: copy the parent's data into a new
  // memfd and map it over the same addresses, so that windows already handed out stay valid.
  if (storage_ != RingStorage::mirrored) return;  // already private (an earlier fork fell back)
  const std::size_t section = section_bytes_;
  const int fd = memfd_create("colmena-market-buffer", MFD_CLOEXEC);
  bool ok = fd >= 0 && ftruncate(fd, static_cast<off_t>(kFields * section)) == 0;
  for (std::size_t f = 0; f < kFields && ok; ++f) {
    const unsigned char* src = base_ + 2 * f * section;
    std::size_t done = 0;
    while (ok && done < section) {
      const ssize_t n =
          pwrite(fd, src + done, section - done, static_cast<off_t>(f * section + done));
      ok = n > 0;
      if (ok) done += static_cast<std::size_t>(n);
    }
  }
  for (std::size_t f = 0; f < kFields && ok; ++f) {
    for (std::size_t half = 0; half < 2 && ok; ++half) {
      void* want = base_ + (2 * f + half) * section;
      ok = mmap(want, section, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd,
                static_cast<off_t>(f * section)) == want;
    }
  }
  if (fd >= 0) close(fd);
  if (ok) return;
  // No memfd in the child: turn the ring into a private double-write ring at the same addresses.
  auto* saved = static_cast<unsigned char*>(std::malloc(kFields * section));
  if (saved != nullptr) {
    for (std::size_t f = 0; f < kFields; ++f) {
      std::memcpy(saved + f * section, base_ + 2 * f * section, section);
    }
    if (mmap(base_, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == base_) {
      for (std::size_t f = 0; f < kFields; ++f) {
        std::memcpy(base_ + 2 * f * section, saved + f * section, section);
        std::memcpy(base_ + (2 * f + 1) * section, saved + f * section, section);
      }
      storage_ = RingStorage::double_write;
      std::free(saved);
      return;
    }
  }
  std::fputs("colmena: cannot give a forked child a private MarketBuffer copy\n", stderr);
  std::abort();
#endif
}

void MarketBuffer::push(const Candle& candle) {
  if (auto violation = find_invalid_candle(candle, newest_timestamp())) {
    throw OhlcvValidationError("MarketBuffer.push", *violation, false);
  }
  const std::size_t h = head_;
  field<std::int64_t>(0)[h] = candle.ts;
  field<double>(1)[h] = candle.open;
  field<double>(2)[h] = candle.high;
  field<double>(3)[h] = candle.low;
  field<double>(4)[h] = candle.close;
  field<double>(5)[h] = candle.volume;
  if (storage_ == RingStorage::double_write) {
    const std::size_t m = h + slots_;
    field<std::int64_t>(0)[m] = candle.ts;
    field<double>(1)[m] = candle.open;
    field<double>(2)[m] = candle.high;
    field<double>(3)[m] = candle.low;
    field<double>(4)[m] = candle.close;
    field<double>(5)[m] = candle.volume;
  }
  head_ = h + 1 == slots_ ? 0 : h + 1;
  size_ += size_ < capacity_ ? 1 : 0;
  newest_ts_ = candle.ts;
}

void MarketBuffer::write_rows(const OhlcvColumns& columns, std::size_t first, std::size_t count,
                              std::size_t offset) noexcept {
  const void* sources[kFields] = {columns.ts + first,    columns.open + first,
                                  columns.high + first,  columns.low + first,
                                  columns.close + first, columns.volume + first};
  const std::size_t h = (head_ + offset) % slots_;
  for (std::size_t f = 0; f < kFields; ++f) {
    auto* dst = field<unsigned char>(f);
    const auto* src = static_cast<const unsigned char*>(sources[f]);
    if (storage_ == RingStorage::mirrored) {
      // head < P and count <= capacity <= P: the run ends before 2P and wraps through the mirror.
      std::memcpy(dst + h * kElementBytes, src, count * kElementBytes);
      continue;
    }
    const std::size_t before_end = std::min(count, slots_ - h);
    const std::size_t wrapped = count - before_end;
    for (std::size_t copy = 0; copy < 2; ++copy) {
      unsigned char* half = dst + copy * section_bytes_;
      std::memcpy(half + h * kElementBytes, src, before_end * kElementBytes);
      if (wrapped != 0) {
        std::memcpy(half, src + before_end * kElementBytes, wrapped * kElementBytes);
      }
    }
  }
}

void MarketBuffer::extend(const OhlcvColumns& columns, const char* caller) {
  const std::size_t n = columns.size;
  if (n == 0) return;
  const std::size_t count = std::min(n, capacity_);
  const std::size_t first = n - count;
  if (storage_ == RingStorage::mirrored && count <= slots_ - size_ && !overlaps_any(columns)) {
    extend_fused(columns, caller, first, count);
    return;
  }
  if (auto violation = find_invalid_ohlcv(columns, newest_timestamp())) {
    throw OhlcvValidationError(caller, *violation, true);
  }
  if (overlaps_any(columns)) {
    // The source is (partly) this ring, e.g. a window taken before clear(): stage it first.
    std::vector<std::int64_t> ts(columns.ts + first, columns.ts + n);
    std::vector<double> staged[5];
    const double* values[5] = {columns.open, columns.high, columns.low, columns.close,
                               columns.volume};
    for (std::size_t f = 0; f < 5; ++f) staged[f].assign(values[f] + first, values[f] + n);
    const OhlcvColumns copy{ts.data(),
                            staged[0].data(),
                            staged[1].data(),
                            staged[2].data(),
                            staged[3].data(),
                            staged[4].data(),
                            count};
    write_rows(copy, 0, count);
  } else {
    write_rows(columns, first, count);
  }
  head_ = (head_ + count) % slots_;
  size_ = std::min(capacity_, size_ + count);
  newest_ts_ = columns.ts[n - 1];
}

bool MarketBuffer::overlaps_any(const OhlcvColumns& columns) const noexcept {
  const void* sources[kFields] = {columns.ts,  columns.open,  columns.high,
                                  columns.low, columns.close, columns.volume};
  bool aliased = false;
  for (const void* src : sources) {
    aliased |= overlaps(src, static_cast<const unsigned char*>(src) + columns.size * kElementBytes);
  }
  return aliased;
}

void MarketBuffer::extend_fused(const OhlcvColumns& columns, const char* caller, std::size_t first,
                                std::size_t count) {
  // The rows land in free slots (count <= slots - size), so copying a block before the rows after
  // it are checked cannot touch stored candles: a bad row throws before head/size move and the
  // buffer is unchanged. Each block is validated while it is in cache and copied from there, so
  // the data is read from memory once instead of twice.
  constexpr std::size_t kBlock = 8192;
  const std::size_t n = columns.size;
  std::optional<std::int64_t> previous = newest_timestamp();
  for (std::size_t start = 0; start < n; start += kBlock) {
    const std::size_t len = std::min(kBlock, n - start);
    const OhlcvColumns block{columns.ts + start,
                             columns.open + start,
                             columns.high + start,
                             columns.low + start,
                             columns.close + start,
                             columns.volume + start,
                             len};
    if (auto violation = find_invalid_ohlcv(block, previous)) {
      violation->row += start;
      throw OhlcvValidationError(caller, *violation, true);
    }
    previous = columns.ts[start + len - 1];
    const std::size_t copy_from = std::max(start, first);
    if (copy_from < start + len) {
      write_rows(columns, copy_from, start + len - copy_from, copy_from - first);
    }
  }
  head_ = (head_ + count) % slots_;
  size_ = std::min(capacity_, size_ + count);
  newest_ts_ = columns.ts[n - 1];
}

OhlcvColumns MarketBuffer::last(std::size_t n) const noexcept {
  // Every window ends at head + P (the mirror of the next write slot), so windows of different
  // lengths taken between writes share their end address, and overlap visibly in memory.
  const std::size_t m = std::min(n, size_);
  const std::size_t start = head_ + slots_ - m;
  return OhlcvColumns{field<std::int64_t>(0) + start,
                      field<double>(1) + start,
                      field<double>(2) + start,
                      field<double>(3) + start,
                      field<double>(4) + start,
                      field<double>(5) + start,
                      m};
}

void MarketBuffer::clear() noexcept {
  size_ = 0;
  newest_ts_ = 0;
}

bool MarketBuffer::overlaps(const void* begin, const void* end) const noexcept {
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  const auto e = reinterpret_cast<std::uintptr_t>(end);
  const auto lo = reinterpret_cast<std::uintptr_t>(base_);
  const auto hi = lo + kFields * 2 * section_bytes_;
  return b < hi && lo < e;
}

}  // namespace colmena

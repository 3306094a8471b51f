#pragma once
/// MarketBuffer: a fixed-capacity ring of OHLCV candles, stored column-wise, whose newest-n window
/// is always one contiguous array per field.
///
/// Layout. Each field (ts, open, high, low, close, volume) has a ring of P slots, P >= capacity.
/// Slot j of a field is visible at two addresses, j and j + P, so any run of up to P consecutive
/// slots, wrapped or not, is contiguous in memory. Two ways to get that:
///
///   - mirrored (Linux): one memfd_create file holds a P-slot section per field; each section is
///     mapped twice, back to back, into a reserved 2P-slot address range ("magic ring buffer").
///     P is capacity rounded up so that a section is a whole number of pages. A push writes each
///     field once; a bulk extend is one memcpy per field.
///   - double_write (portable fallback): a plain 2P-slot array per field with P == capacity; every
///     slot is written at j and at j + P. A push writes each field twice.
///
/// The logical capacity is exactly what was asked; P only sizes the storage. All memory is
/// committed (pre-faulted) at construction, so push is O(1) with no allocation, no page faults
/// and no compaction. Windows returned by last() stay valid for the buffer's lifetime, but later
/// writes overwrite what they show once the ring wraps past them.
///
/// Fork: a forked child gets its own private copy of every mirrored buffer (remapped at the same
/// addresses in the child), so writes in one process never show in the other.
///
/// Thread safety: none inside. Concurrent calls that write must be serialised by the caller: the
/// Python binding holds a per-buffer mutex around every call (extend holds it without the GIL,
/// push and last with it, never creating Python objects under it), so a buffer may be shared
/// between Python threads; each extend lands whole, in an unspecified order, and a window
/// (last(n) without copy) read while another thread writes can show rows being overwritten.
///
/// Capacity: storage is committed at construction, so a capacity whose committed bytes exceed
/// the machine's physical memory is refused with std::length_error before anything is
/// allocated: 48 bytes a candle for mirrored, 96 for double_write (every slot stored twice).
#include <cstddef>
#include <cstdint>
#include <optional>

#include "colmena/ohlcv_validation.hpp"

namespace colmena {

/// How the contiguous window is implemented (see the file comment).
enum class RingStorage : std::uint8_t { mirrored, double_write };

/// What the constructor should use: `automatic` tries `mirrored` and falls back to
/// `double_write` when memfd_create/mmap are unavailable or fail.
enum class RingStoragePreference : std::uint8_t { automatic, mirrored, double_write };

/// "mirrored" or "double_write".
const char* ring_storage_name(RingStorage storage) noexcept;

class MarketBuffer {
 public:
  /// Number of fields per candle (ts, open, high, low, close, volume).
  static constexpr std::size_t kFields = 6;

  /// A buffer holding up to `capacity` candles (>= 1).
  ///
  /// Throws std::invalid_argument when capacity is 0, std::length_error when the storage size
  /// overflows or exceeds the machine's physical memory, std::runtime_error when `mirrored` is
  /// demanded but cannot be set up, and std::bad_alloc when memory runs out.
  explicit MarketBuffer(std::size_t capacity,
                        RingStoragePreference preference = RingStoragePreference::automatic);
  ~MarketBuffer();
  MarketBuffer(const MarketBuffer&) = delete;
  MarketBuffer& operator=(const MarketBuffer&) = delete;
  MarketBuffer(MarketBuffer&&) = delete;
  MarketBuffer& operator=(MarketBuffer&&) = delete;

  /// Most candles held (as asked at construction).
  std::size_t capacity() const noexcept { return capacity_; }
  /// Candles held now (<= capacity).
  std::size_t size() const noexcept { return size_; }
  /// True when size() == capacity(): the next push drops the oldest candle.
  bool full() const noexcept { return size_ == capacity_; }
  /// Physical ring length P per field (>= capacity).
  std::size_t slots() const noexcept { return slots_; }
  /// The storage in use.
  RingStorage storage() const noexcept { return storage_; }
  /// ts of the newest candle (ns since epoch UTC); nullopt when empty.
  std::optional<std::int64_t> newest_timestamp() const noexcept {
    return size_ == 0 ? std::nullopt : std::optional<std::int64_t>(newest_ts_);
  }

  /// Append one candle, dropping the oldest when full. O(1): validates (rules in
  /// ohlcv_validation.hpp, ts after newest_timestamp()) and writes each field once (mirrored)
  /// or twice (double_write). Throws OhlcvValidationError and changes nothing on a bad candle.
  void push(const Candle& candle);

  /// Append n_rows candles (oldest first). All-or-nothing: every row is validated before
  /// anything is written; on a bad row OhlcvValidationError is thrown and nothing changes. Only
  /// the newest min(n_rows, capacity) rows are copied (one memcpy per field when mirrored).
  /// Source columns may alias this buffer's own memory (they are staged through a copy).
  /// `caller` names the operation in error messages.
  void extend(const OhlcvColumns& columns, const char* caller = "MarketBuffer.extend");

  /// The newest min(n, size()) candles, oldest first, as contiguous borrowed columns. No copy:
  /// the pointers address the ring and stay valid for the buffer's lifetime; later writes
  /// overwrite them once the ring wraps past them.
  OhlcvColumns last(std::size_t n) const noexcept;

  /// Forget every candle (O(1); the memory is kept and not cleared).
  void clear() noexcept;

  /// True when [begin, end) overlaps this buffer's storage.
  bool overlaps(const void* begin, const void* end) const noexcept;

 private:
  friend struct MarketBufferForkRegistry;

  bool try_map_mirrored() noexcept;
  void allocate_double_write();
  void remap_private_copy() noexcept;  // in a forked child: give it its own memfd
  /// True when any column of `columns` lies (partly) inside this ring's memory.
  bool overlaps_any(const OhlcvColumns& columns) const noexcept;
  /// Validate-and-copy block by block into free slots (see extend).
  void extend_fused(const OhlcvColumns& columns, const char* caller, std::size_t first,
                    std::size_t count);
  /// Copy rows [first, first + count) of `columns` to ring slots head + offset onwards (the head
  /// itself does not move).
  void write_rows(const OhlcvColumns& columns, std::size_t first, std::size_t count,
                  std::size_t offset = 0) noexcept;

  template <typename T>
  T* field(std::size_t f) const noexcept {
    return reinterpret_cast<T*>(base_ + f * 2 * section_bytes_);
  }

  std::size_t capacity_ = 0;
  std::size_t slots_ = 0;          // P
  std::size_t section_bytes_ = 0;  // P * 8
  std::size_t head_ = 0;           // slot the next candle goes to, in [0, P)
  std::size_t size_ = 0;
  std::int64_t newest_ts_ = 0;
  RingStorage storage_ = RingStorage::double_write;
  unsigned char* base_ = nullptr;  // kFields consecutive 2P-slot ranges
  std::size_t mapped_bytes_ = 0;   // mirrored: bytes of the reserved range
};

}  // namespace colmena

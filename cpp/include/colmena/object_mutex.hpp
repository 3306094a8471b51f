#pragma once
/// ObjectMutex: the lock of one stateful object of the core. A copied or moved object gets a
/// fresh, unlocked mutex: the lock guards an object's state, it is not part of its value (so the
/// classes that hold one stay copyable and movable).
#include <mutex>

namespace colmena {

class ObjectMutex {
 public:
  ObjectMutex() = default;
  ObjectMutex(const ObjectMutex&) noexcept {}
  ObjectMutex& operator=(const ObjectMutex&) noexcept { return *this; }

  void lock() { mutex_.lock(); }
  bool try_lock() { return mutex_.try_lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

}  // namespace colmena

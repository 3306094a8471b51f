#pragma once
// CoreCall: the GIL release of every binding whose work runs without the GIL, wrapped in the
// core-call protocol of parallel.hpp (fork safety, clean interpreter exit). Use it instead of
// py::gil_scoped_release:
//
//   {
//     CoreCall call;   // GIL held: admitted (CoreStoppedError -> RuntimeError after exit began),
//                      // then GIL released, then the guard taken shared
//     ... work touching no Python object; may throw C++ exceptions ...
//   }                  // guard dropped, call uncounted, then GIL retaken
//
// The guard is never held while the thread waits for the GIL, and nothing inside may take the
// GIL (no py::gil_scoped_acquire): a fork prepared by a thread holding the GIL waits for the
// guard, so a call that held the guard while waiting for the GIL would deadlock it. Translate
// exceptions outside the scope instead.
#include <pybind11/pybind11.h>

#include "colmena/parallel.hpp"

namespace colmena::bindings {

class CoreCall {
 public:
  CoreCall() {
    core_call_admit();
    state_ = PyEval_SaveThread();
    core_call_lock();
  }
  ~CoreCall() {
    core_call_unlock();
    core_call_done();
    PyEval_RestoreThread(state_);
  }
  CoreCall(const CoreCall&) = delete;
  CoreCall& operator=(const CoreCall&) = delete;

 private:
  PyThreadState* state_ = nullptr;
};

}  // namespace colmena::bindings

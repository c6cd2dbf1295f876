// The MGRIT engine's messages between processes: non-blocking sends and
// receives of one state through the Comm. States on a device go through a
// host copy unless the Comm accepts device memory: a send downloads at once
// and keeps the copy until it completes, a receive lands in a host copy that
// complete() uploads. Which values travel, and when, is decided by the callers
// (the F-sweep, the restriction and the forward substitution; the rule is in
// mgrit.cpp's header).
#include "layerparallel/mgrit.h"

#include <utility>
#include <vector>

namespace layerparallel {

int Mgrit::post_send(const double* src, int dest, int tag) {
  if (sp_.host()) return comm_->isend(src, ss_, dest, tag);
  if (comm_->accepts_device_memory()) {
    sp_.synchronize();  // the value must be written before the Comm reads it
    return comm_->isend(src, ss_, dest, tag);
  }
  Staged st{-1, std::vector<double>(ss_), nullptr};
  sp_.download(st.host.data(), src, ss_);
  st.req = comm_->isend(st.host.data(), ss_, dest, tag);
  staged_.push_back(std::move(st));  // moving the vector keeps its buffer where the Comm sends from
  return staged_.back().req;
}

int Mgrit::post_recv(double* dst, int source, int tag) {
  if (sp_.host()) return comm_->irecv(dst, ss_, source, tag);
  if (comm_->accepts_device_memory()) {
    sp_.synchronize();  // kernels still queued may read the buffer the Comm is about to overwrite
    return comm_->irecv(dst, ss_, source, tag);
  }
  Staged st{-1, std::vector<double>(ss_), dst};
  st.req = comm_->irecv(st.host.data(), ss_, source, tag);
  staged_.push_back(std::move(st));
  return staged_.back().req;
}

void Mgrit::complete(int req) {
  comm_->wait(req);
  for (auto it = staged_.begin(); it != staged_.end(); ++it)
    if (it->req == req) {
      // Out of the list before the upload: a failing upload must not leave a stale entry.
      Staged done = std::move(*it);
      staged_.erase(it);
      if (done.dst) sp_.upload(done.dst, done.host.data(), ss_);
      return;
    }
}

}  // namespace layerparallel

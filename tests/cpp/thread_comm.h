// An in-process communicator for the C++ tests: P "processes" are P threads of
// one test, exchanging messages through a shared mailbox with MPI's matching
// rules (source, tag, order). Lets the distributed engine be checked against
// the serial one without MPI. Every wait is bounded (a test that would hang
// throws instead).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "layerparallel/comm.h"

namespace lptest {

class ThreadWorld {
 public:
  explicit ThreadWorld(int size) : size_(size), contrib_(static_cast<std::size_t>(size)) {}
  int size() const { return size_; }

  void post(int src, int dst, int tag, const double* d, std::size_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    box_[std::make_tuple(src, dst, tag)].emplace_back(d, d + n);
    ++messages;
    cv_.notify_all();
  }
  void take(int src, int dst, int tag, double* d, std::size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    auto key = std::make_tuple(src, dst, tag);
    if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return !box_[key].empty(); }))
      throw std::runtime_error("ThreadWorld: receive from " + std::to_string(src) + " tag " + std::to_string(tag) +
                               " timed out");
    std::vector<double> m = std::move(box_[key].front());
    box_[key].pop_front();
    if (m.size() != n) throw std::runtime_error("ThreadWorld: message size mismatch");
    std::memcpy(d, m.data(), n * sizeof(double));
  }
  // Collective: every rank contributes a vector; all receive f(contributions in rank order).
  void collective(int rank, double* d, std::size_t n,
                  const std::function<void(const std::vector<std::vector<double>>&, double*)>& f) {
    std::unique_lock<std::mutex> lk(mu_);
    const long gen = gen_;
    contrib_[rank].assign(d, d + n);
    if (++arrived_ == size_) {
      result_.assign(n, 0.0);
      f(contrib_, result_.data());
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return gen_ != gen; })) {
      throw std::runtime_error("ThreadWorld: collective timed out");
    }
    std::memcpy(d, result_.data(), n * sizeof(double));
    // Nobody may start the next collective before everyone copied this result.
    if (++left_ == size_) {
      left_ = 0;
      ++gen2_;
      cv_.notify_all();
    } else {
      const long g2 = gen2_;
      if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return gen2_ != g2; }))
        throw std::runtime_error("ThreadWorld: collective exit timed out");
    }
  }
  long messages = 0;

 private:
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<double>>> box_;
  std::vector<std::vector<double>> contrib_;
  std::vector<double> result_;
  int arrived_ = 0, left_ = 0;
  long gen_ = 0, gen2_ = 0;
};

class ThreadComm final : public layerparallel::Comm {
 public:
  ThreadComm(ThreadWorld& w, int rank, bool device_aware = false) : w_(w), rank_(rank), device_aware_(device_aware) {}
  bool accepts_device_memory() const override { return device_aware_; }
  int rank() const override { return rank_; }
  int size() const override { return w_.size(); }
  void allreduce_sum(double* d, std::size_t n) override {
    w_.collective(rank_, d, n, [n](const std::vector<std::vector<double>>& c, double* out) {
      for (const auto& v : c)
        for (std::size_t k = 0; k < n; ++k) out[k] += v[k];
    });
  }
  void barrier() override {
    double x = 0;
    allreduce_sum(&x, 1);
  }
  void bcast(double* d, std::size_t n, int root) override {
    w_.collective(rank_, d, n, [n, root](const std::vector<std::vector<double>>& c, double* out) {
      std::memcpy(out, c[root].data(), n * sizeof(double));
    });
  }
  int isend(const double* d, std::size_t n, int dest, int tag) override {
    w_.post(rank_, dest, tag, d, n);  // buffered: complete at once
    reqs_.push_back({nullptr, 0, -1, -1});
    return static_cast<int>(reqs_.size()) - 1;
  }
  int irecv(double* d, std::size_t n, int src, int tag) override {
    reqs_.push_back({d, n, src, tag});
    return static_cast<int>(reqs_.size()) - 1;
  }
  void wait(int r) override {
    Req& q = reqs_.at(static_cast<std::size_t>(r));
    if (q.src >= 0) w_.take(q.src, rank_, q.tag, q.data, q.n);
    q.src = -1;
  }

 private:
  struct Req {
    double* data;
    std::size_t n;
    int src, tag;
  };
  ThreadWorld& w_;
  int rank_;
  bool device_aware_ = false;
  std::vector<Req> reqs_;
};

/// Runs body(rank) on `size` threads and rethrows the first exception.
inline void run_ranks(int size, const std::function<void(int)>& body) {
  std::vector<std::thread> ts;
  std::vector<std::exception_ptr> errs(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r)
    ts.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errs[r] = std::current_exception();
      }
    });
  for (auto& t : ts) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);
}

}  // namespace lptest

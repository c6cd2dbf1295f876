// Thread counts are checked before any parallel region asks OpenMP for them:
// libgomp aborts near 40000 threads and crashes beyond (issue 16).
#include <gtest/gtest.h>

#include <stdexcept>

#include "layerparallel/mgrit.h"
#include "layerparallel/threading.h"

using namespace layerparallel;

TEST(ThreadLimits, SetNumThreadsRefusesWhatCannotRun) {
  const int limit = thread_limit();
  EXPECT_GE(limit, 1);
  EXPECT_LE(limit, 64 * max_threads());
  const int before = num_threads();
  EXPECT_THROW(set_num_threads(-1), std::invalid_argument);
  EXPECT_THROW(set_num_threads(limit + 1), std::invalid_argument);
  EXPECT_THROW(set_num_threads(100000), std::invalid_argument);
  EXPECT_EQ(num_threads(), before);  // a refused call changes nothing
}

TEST(ThreadLimits, MgritOptionsRefuseIntervalThreadsBeyondTheLimit) {
  MgritOptions o;
  o.threads = thread_limit();
  EXPECT_NO_THROW(o.validate());
  o.threads = thread_limit() + 1;
  EXPECT_THROW(o.validate(), std::invalid_argument);
  o.threads = -1;
  EXPECT_THROW(o.validate(), std::invalid_argument);
}

#include "server/library_log.h"

#include <cstdint>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace rosetta::server {
namespace {

TEST(LogRateLimiter, AdmitsABurstThenOnePerInterval) {
  LogRateLimiter limiter(3, absl::Seconds(2));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  int64_t suppressed = -1;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Admit(t0, &suppressed)) << i;
    EXPECT_EQ(suppressed, 0);
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Admit(t0 + absl::Milliseconds(i), &suppressed));
  // 1 s later: half a token, still refused.
  EXPECT_FALSE(limiter.Admit(t0 + absl::Seconds(1), &suppressed));
  // 2 s later: one token; the admitted message learns of the 6 refused before it.
  ASSERT_TRUE(limiter.Admit(t0 + absl::Seconds(2), &suppressed));
  EXPECT_EQ(suppressed, 6);
  EXPECT_FALSE(limiter.Admit(t0 + absl::Seconds(2), &suppressed));
  // After a long quiet spell the bucket is full again, never fuller than the burst.
  const absl::Time later = t0 + absl::Hours(1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Admit(later, &suppressed)) << i;
    EXPECT_EQ(suppressed, i == 0 ? 1 : 0);
  }
  EXPECT_FALSE(limiter.Admit(later, &suppressed));
}

TEST(LogRateLimiter, ClockGoingBackwardsAddsNoTokens) {
  LogRateLimiter limiter(1, absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  int64_t suppressed = 0;
  ASSERT_TRUE(limiter.Admit(t0, &suppressed));
  EXPECT_FALSE(limiter.Admit(t0 - absl::Seconds(10), &suppressed));
  EXPECT_FALSE(limiter.Admit(t0 + absl::Milliseconds(500), &suppressed));
  EXPECT_TRUE(limiter.Admit(t0 + absl::Seconds(1), &suppressed));
  EXPECT_EQ(suppressed, 2);
}

}  // namespace
}  // namespace rosetta::server

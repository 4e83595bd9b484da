// Tests of engine/decoder_cache.h: page accounting, slot reuse and row addressing.
#include "engine/decoder_cache.h"

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace rosetta {
namespace {

constexpr int kLayers = 2;
constexpr int kDModel = 8;
constexpr int kPageSteps = 4;
constexpr int kPages = 10;

DecoderCache::Options SmallOptions() {
  DecoderCache::Options options;
  options.num_layers = kLayers;
  options.d_model = kDModel;
  options.page_steps = kPageSteps;
  options.num_pages = kPages;
  return options;
}

// Bytes of one page: keys and values of page_steps rows in every layer.
constexpr int64_t kPageBytes = int64_t{kPageSteps} * kDModel * kLayers * 2 * sizeof(float);
// Floats in each layer's key (or value) buffer.
constexpr int64_t kLayerFloats = int64_t{kPages} * kPageSteps * kDModel;

TEST(DecoderCacheTest, PagesForStepsRoundsUp) {
  DecoderCache cache(SmallOptions());
  EXPECT_EQ(cache.PagesForSteps(0), 0);
  EXPECT_EQ(cache.PagesForSteps(1), 1);
  EXPECT_EQ(cache.PagesForSteps(3), 1);
  EXPECT_EQ(cache.PagesForSteps(4), 1);
  EXPECT_EQ(cache.PagesForSteps(5), 2);
  EXPECT_EQ(cache.PagesForSteps(8), 2);
  EXPECT_EQ(cache.PagesForSteps(9), 3);
  EXPECT_EQ(cache.PagesForSteps(40), 10);
  EXPECT_EQ(cache.PagesForSteps(41), 11);

  DecoderCache::Options options = SmallOptions();
  options.page_steps = 16;
  DecoderCache default_pages(options);
  EXPECT_EQ(default_pages.PagesForSteps(16), 1);
  EXPECT_EQ(default_pages.PagesForSteps(17), 2);
  EXPECT_EQ(default_pages.PagesForSteps(256), 16);
}

TEST(DecoderCacheTest, Capacity) {
  DecoderCache cache(SmallOptions());
  EXPECT_EQ(cache.bytes_capacity(), kPages * kPageBytes);
  EXPECT_EQ(cache.bytes_in_use(), 0);
  EXPECT_EQ(cache.free_pages(), kPages);
}

TEST(DecoderCacheTest, AcquireReservesPagesAndFailsWhenThePoolIsShort) {
  DecoderCache cache(SmallOptions());
  const std::optional<int> a = cache.AcquireSlot(9);  // 3 pages
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(cache.free_pages(), 7);
  // Reserving is not using.
  EXPECT_EQ(cache.bytes_in_use(), 0);

  // 8 pages: one more than what is left. The failure reserves nothing.
  EXPECT_FALSE(cache.AcquireSlot(29).has_value());
  EXPECT_EQ(cache.free_pages(), 7);

  const std::optional<int> b = cache.AcquireSlot(28);  // exactly the 7 pages left
  ASSERT_TRUE(b.has_value());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(cache.free_pages(), 0);
  EXPECT_FALSE(cache.AcquireSlot(1).has_value());
  EXPECT_EQ(cache.free_pages(), 0);

  // A slot of more steps than the whole pool can never be acquired.
  cache.ReleaseSlot(*a);
  cache.ReleaseSlot(*b);
  EXPECT_FALSE(cache.AcquireSlot(kPages * kPageSteps + 1).has_value());
  EXPECT_TRUE(cache.AcquireSlot(kPages * kPageSteps).has_value());
}

TEST(DecoderCacheTest, ReleaseReturnsCapacity) {
  DecoderCache cache(SmallOptions());
  const std::optional<int> a = cache.AcquireSlot(20);  // 5 pages
  const std::optional<int> b = cache.AcquireSlot(20);  // 5 pages
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_FALSE(cache.AcquireSlot(1).has_value());
  for (int step = 0; step < 7; ++step) cache.PrepareStep(*a, step);  // 2 pages in use
  cache.ReleaseSlot(*a);
  EXPECT_EQ(cache.free_pages(), 5);
  EXPECT_EQ(cache.bytes_in_use(), 0);
  EXPECT_FALSE(cache.AcquireSlot(21).has_value());
  const std::optional<int> c = cache.AcquireSlot(20);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(cache.free_pages(), 0);
  // The new slot can use all its pages even though the released slot had taken some.
  for (int step = 0; step < 20; ++step) cache.PrepareStep(*c, step);
  for (int step = 0; step < 20; ++step) cache.PrepareStep(*b, step);
  EXPECT_EQ(cache.bytes_in_use(), cache.bytes_capacity());
}

TEST(DecoderCacheTest, BytesInUseGrowsPageByPage) {
  DecoderCache cache(SmallOptions());
  const std::optional<int> slot = cache.AcquireSlot(4 * kPageSteps);
  ASSERT_TRUE(slot.has_value());
  EXPECT_EQ(cache.bytes_in_use(), 0);
  for (int step = 0; step < 4 * kPageSteps; ++step) {
    cache.PrepareStep(*slot, step);
    EXPECT_EQ(cache.bytes_in_use(), (step / kPageSteps + 1) * kPageBytes) << "step " << step;
    // Preparing a step again takes nothing more.
    cache.PrepareStep(*slot, step);
    EXPECT_EQ(cache.bytes_in_use(), (step / kPageSteps + 1) * kPageBytes) << "step " << step;
  }
  // Using pages does not change the reservation.
  EXPECT_EQ(cache.free_pages(), kPages - 4);
  cache.ReleaseSlot(*slot);
  EXPECT_EQ(cache.bytes_in_use(), 0);
  EXPECT_EQ(cache.free_pages(), kPages);
}

TEST(DecoderCacheTest, SlotIdsAreReused) {
  DecoderCache cache(SmallOptions());
  const int a = cache.AcquireSlot(4).value();
  const int b = cache.AcquireSlot(4).value();
  const int c = cache.AcquireSlot(4).value();
  EXPECT_EQ(std::set<int>({a, b, c}).size(), 3u);
  cache.ReleaseSlot(b);
  EXPECT_EQ(cache.AcquireSlot(4).value(), b);

  // Churn on two of the three slots: the ids handed out are always the two free ones, never the
  // busy one, so ids stay bounded by the number of concurrent slots.
  int x = a, y = c;
  for (int round = 0; round < 50; ++round) {
    cache.ReleaseSlot(x);
    cache.ReleaseSlot(y);
    const int new_x = cache.AcquireSlot(8).value();
    const int new_y = cache.AcquireSlot(8).value();
    EXPECT_EQ(std::set<int>({new_x, new_y}), std::set<int>({a, c})) << "round " << round;
    x = new_x;
    y = new_y;
  }
}

TEST(DecoderCacheTest, ReleasedIdsComeBackAsTheSameSet) {
  DecoderCache cache(SmallOptions());
  std::set<int> first;
  for (int i = 0; i < 5; ++i) first.insert(cache.AcquireSlot(8).value());
  ASSERT_EQ(first.size(), 5u);
  for (int round = 0; round < 20; ++round) {
    for (int id : first) cache.ReleaseSlot(id);
    std::set<int> again;
    for (int i = 0; i < 5; ++i) again.insert(cache.AcquireSlot(8).value());
    EXPECT_EQ(again, first) << "round " << round;
  }
}

TEST(DecoderCacheTest, RowOffsetsAreDistinctAndInBounds) {
  DecoderCache cache(SmallOptions());
  // Three slots growing in an interleaved way, so that their pages interleave in the pool.
  std::vector<int> slots;
  slots.push_back(cache.AcquireSlot(13).value());  // 4 pages
  slots.push_back(cache.AcquireSlot(9).value());   // 3 pages
  slots.push_back(cache.AcquireSlot(12).value());  // 3 pages
  const std::vector<int> lengths = {13, 9, 12};
  for (int step = 0; step < 13; ++step) {
    for (size_t s = 0; s < slots.size(); ++s) {
      if (step < lengths[s]) cache.PrepareStep(slots[s], step);
    }
  }
  EXPECT_EQ(cache.bytes_in_use(), kPages * kPageBytes);
  std::map<int64_t, std::pair<int, int>> owner;
  for (size_t s = 0; s < slots.size(); ++s) {
    for (int step = 0; step < lengths[s]; ++step) {
      const int64_t offset = cache.RowOffset(slots[s], step);
      EXPECT_GE(offset, 0);
      EXPECT_EQ(offset % kDModel, 0) << "rows are d_model floats";
      EXPECT_LE(offset + kDModel, kLayerFloats) << "slot " << slots[s] << " step " << step;
      const auto [it, inserted] = owner.emplace(offset, std::make_pair(slots[s], step));
      EXPECT_TRUE(inserted) << "slot " << slots[s] << " step " << step
                            << " shares its row with slot " << it->second.first << " step "
                            << it->second.second;
      // A page holds consecutive steps.
      if (step % kPageSteps != 0) {
        EXPECT_EQ(offset, cache.RowOffset(slots[s], step - 1) + kDModel);
      }
    }
  }
}

TEST(DecoderCacheTest, SlotsDoNotOverwriteEachOther) {
  DecoderCache cache(SmallOptions());
  const std::vector<int> lengths = {10, 7, 15, 6};  // 3 + 2 + 4 + 2 = 11 pages > 10
  std::vector<int> slots;
  for (int i = 0; i < 3; ++i) slots.push_back(cache.AcquireSlot(lengths[i]).value());
  EXPECT_FALSE(cache.AcquireSlot(lengths[3]).has_value());

  // A distinct value for every (layer, keys/values, slot, step, column).
  auto value = [](int layer, int kv, int slot_index, int step, int col) {
    return static_cast<float>(((layer * 2 + kv) * 16 + slot_index) * 1000 + step * 10 + col);
  };
  auto write = [&](int slot_index, int step) {
    const int64_t offset = cache.RowOffset(slots[slot_index], step);
    for (int layer = 0; layer < kLayers; ++layer) {
      for (int col = 0; col < kDModel; ++col) {
        cache.Keys(layer)[offset + col] = value(layer, 0, slot_index, step, col);
        cache.Values(layer)[offset + col] = value(layer, 1, slot_index, step, col);
      }
    }
  };
  auto check = [&](int slot_index, int step) {
    const int64_t offset = cache.RowOffset(slots[slot_index], step);
    for (int layer = 0; layer < kLayers; ++layer) {
      for (int col = 0; col < kDModel; ++col) {
        ASSERT_EQ(cache.Keys(layer)[offset + col], value(layer, 0, slot_index, step, col))
            << "keys of slot #" << slot_index << " step " << step << " layer " << layer;
        ASSERT_EQ(cache.Values(layer)[offset + col], value(layer, 1, slot_index, step, col))
            << "values of slot #" << slot_index << " step " << step << " layer " << layer;
      }
    }
  };
  // Decode step by step, all slots together, as beams do.
  for (int step = 0; step < 15; ++step) {
    for (int s = 0; s < 3; ++s) {
      if (step >= lengths[s]) continue;
      cache.PrepareStep(slots[s], step);
      write(s, step);
    }
  }
  for (int s = 0; s < 3; ++s) {
    for (int step = 0; step < lengths[s]; ++step) check(s, step);
  }

  // Slot #1 finishes; a new slot takes its place (and maybe its pages) and is written all over.
  cache.ReleaseSlot(slots[1]);
  slots[1] = cache.AcquireSlot(lengths[3]).value();
  for (int step = 0; step < lengths[3]; ++step) {
    cache.PrepareStep(slots[1], step);
    const int64_t offset = cache.RowOffset(slots[1], step);
    for (int layer = 0; layer < kLayers; ++layer) {
      for (int col = 0; col < kDModel; ++col) {
        cache.Keys(layer)[offset + col] = -1.0f;
        cache.Values(layer)[offset + col] = -2.0f;
      }
    }
  }
  for (int s : {0, 2}) {
    for (int step = 0; step < lengths[s]; ++step) check(s, step);
  }
}

TEST(DecoderCacheTest, RandomisedAccounting) {
  // Random acquire / grow / release; invariants checked after every operation.
  DecoderCache::Options options;
  options.num_layers = 1;
  options.d_model = 2;
  options.page_steps = 3;
  options.num_pages = 40;
  DecoderCache cache(options);
  const int64_t page_bytes = int64_t{3} * 2 * 1 * 2 * sizeof(float);
  struct Active {
    int max_steps;
    int length;  // steps prepared
  };
  std::map<int, Active> active;
  std::mt19937 rng(42);
  for (int iteration = 0; iteration < 2000; ++iteration) {
    const int action = std::uniform_int_distribution<int>(0, 9)(rng);
    if (action < 3) {
      const int max_steps = std::uniform_int_distribution<int>(1, 30)(rng);
      int reserved = 0;
      for (const auto& [id, a] : active) reserved += cache.PagesForSteps(a.max_steps);
      const std::optional<int> id = cache.AcquireSlot(max_steps);
      const bool fits = reserved + cache.PagesForSteps(max_steps) <= options.num_pages;
      ASSERT_EQ(id.has_value(), fits) << "iteration " << iteration;
      if (id) {
        ASSERT_EQ(active.count(*id), 0u) << "slot " << *id << " handed out twice";
        active[*id] = {max_steps, 0};
      }
    } else if (action < 5 && !active.empty()) {
      auto it = active.begin();
      std::advance(it, std::uniform_int_distribution<int>(0, active.size() - 1)(rng));
      cache.ReleaseSlot(it->first);
      active.erase(it);
    } else if (!active.empty()) {
      auto it = active.begin();
      std::advance(it, std::uniform_int_distribution<int>(0, active.size() - 1)(rng));
      if (it->second.length < it->second.max_steps) {
        cache.PrepareStep(it->first, it->second.length++);
      }
    }
    int reserved = 0, used = 0;
    std::set<int64_t> offsets;
    for (const auto& [id, a] : active) {
      reserved += cache.PagesForSteps(a.max_steps);
      used += cache.PagesForSteps(a.length);
      for (int step = 0; step < a.length; ++step) {
        const int64_t offset = cache.RowOffset(id, step);
        ASSERT_GE(offset, 0);
        ASSERT_LE(offset + options.d_model,
                  int64_t{options.num_pages} * options.page_steps * options.d_model);
        ASSERT_TRUE(offsets.insert(offset).second)
            << "iteration " << iteration << ": slot " << id << " step " << step << " shares a row";
      }
    }
    ASSERT_EQ(cache.free_pages(), options.num_pages - reserved) << "iteration " << iteration;
    ASSERT_EQ(cache.bytes_in_use(), used * page_bytes) << "iteration " << iteration;
  }
}

}  // namespace
}  // namespace rosetta

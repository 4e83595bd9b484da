#include "engine/decoder_cache.h"

#include <cassert>

namespace rosetta {

DecoderCache::DecoderCache(const Options& options) : options_(options) {
  const size_t floats_per_layer =
      static_cast<size_t>(options.num_pages) * options.page_steps * options.d_model;
  keys_.resize(options.num_layers);
  values_.resize(options.num_layers);
  for (int layer = 0; layer < options.num_layers; ++layer) {
    keys_[layer].resize(floats_per_layer);
    values_[layer].resize(floats_per_layer);
  }
  free_page_ids_.reserve(options.num_pages);
  for (int page = options.num_pages - 1; page >= 0; --page) free_page_ids_.push_back(page);
  unreserved_pages_ = options.num_pages;
}

int DecoderCache::PagesForSteps(int max_steps) const {
  return (max_steps + options_.page_steps - 1) / options_.page_steps;
}

std::optional<int> DecoderCache::AcquireSlot(int max_steps) {
  const int pages = PagesForSteps(max_steps);
  if (pages > unreserved_pages_) return std::nullopt;
  unreserved_pages_ -= pages;
  int id;
  if (!free_slot_ids_.empty()) {
    id = free_slot_ids_.back();
    free_slot_ids_.pop_back();
  } else {
    id = static_cast<int>(slots_.size());
    slots_.emplace_back();
  }
  Slot& slot = slots_[id];
  slot.active = true;
  slot.reserved_pages = pages;
  slot.pages.clear();
  slot.pages.reserve(pages);
  return id;
}

void DecoderCache::ReleaseSlot(int id) {
  Slot& slot = slots_[id];
  assert(slot.active);
  for (int page : slot.pages) free_page_ids_.push_back(page);
  unreserved_pages_ += slot.reserved_pages;
  slot.pages.clear();
  slot.reserved_pages = 0;
  slot.active = false;
  free_slot_ids_.push_back(id);
}

void DecoderCache::PrepareStep(int id, int step) {
  Slot& slot = slots_[id];
  const size_t page_index = step / options_.page_steps;
  assert(static_cast<int>(page_index) < slot.reserved_pages);
  while (slot.pages.size() <= page_index) {
    // Reserved at AcquireSlot, so the free list cannot be empty here.
    slot.pages.push_back(free_page_ids_.back());
    free_page_ids_.pop_back();
  }
}

int64_t DecoderCache::RowOffset(int id, int step) const {
  const Slot& slot = slots_[id];
  const int page = slot.pages[step / options_.page_steps];
  const int64_t row = static_cast<int64_t>(page) * options_.page_steps + step % options_.page_steps;
  return row * options_.d_model;
}

int64_t DecoderCache::bytes_in_use() const {
  const int64_t pages_in_use = options_.num_pages - static_cast<int64_t>(free_page_ids_.size());
  return pages_in_use * options_.page_steps * options_.d_model * options_.num_layers * 2 *
         static_cast<int64_t>(sizeof(float));
}

int64_t DecoderCache::bytes_capacity() const {
  return static_cast<int64_t>(options_.num_pages) * options_.page_steps * options_.d_model *
         options_.num_layers * 2 * static_cast<int64_t>(sizeof(float));
}

}  // namespace rosetta

// DecoderCache: the decoder self-attention keys and values of every past step of every active beam.
//
// Memory is allocated once, up front, as a pool of pages; a page holds `page_steps` consecutive
// steps of one beam lane ("slot") for every layer. A slot reserves the pages for its maximum length
// when it is acquired (so a running sequence can never run out) and takes them from the pool as it
// grows; nothing is reallocated or concatenated per step. Beams address the rows of their history
// by offset (RowOffset), so reordering beams moves indices, never tensors.
//
// Not thread-safe: owned by one worker.
#ifndef ROSETTA_ENGINE_DECODER_CACHE_H_
#define ROSETTA_ENGINE_DECODER_CACHE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "engine/aligned_vector.h"

namespace rosetta {

class DecoderCache {
 public:
  struct Options {
    int num_layers = 0;
    int d_model = 0;
    int page_steps = 16;  // steps per page: small enough to waste little, large for locality
    int num_pages = 0;    // the capacity of the pool
  };

  explicit DecoderCache(const Options& options);
  DecoderCache(const DecoderCache&) = delete;
  DecoderCache& operator=(const DecoderCache&) = delete;

  // Pages needed by one slot that decodes up to `max_steps` steps.
  int PagesForSteps(int max_steps) const;

  // Reserves capacity for a slot of up to `max_steps` steps. Returns the slot id, or nullopt when
  // the pool cannot guarantee that many pages.
  std::optional<int> AcquireSlot(int max_steps);
  // Returns the slot's pages to the pool. REQUIRES: `slot` was acquired and not yet released.
  void ReleaseSlot(int slot);

  // Makes row `step` of `slot` addressable. REQUIRES: step < the slot's max_steps.
  void PrepareStep(int slot, int step);

  // Offset, in floats, of the row of (`slot`, `step`) inside Keys(layer) and Values(layer).
  // REQUIRES: PrepareStep(slot, step) was called.
  int64_t RowOffset(int slot, int step) const;

  float* Keys(int layer) { return keys_[layer].data(); }
  float* Values(int layer) { return values_[layer].data(); }

  int64_t bytes_in_use() const;
  int64_t bytes_capacity() const;
  int free_pages() const { return unreserved_pages_; }

 private:
  struct Slot {
    bool active = false;
    int reserved_pages = 0;
    std::vector<int> pages;
  };

  Options options_;
  std::vector<AlignedVector<float>> keys_;    // per layer: [num_pages * page_steps x d_model]
  std::vector<AlignedVector<float>> values_;  // same layout
  std::vector<int> free_page_ids_;
  int unreserved_pages_ = 0;
  std::vector<Slot> slots_;
  std::vector<int> free_slot_ids_;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_DECODER_CACHE_H_

// Loads Hugging Face BERT encoders (model_type "bert") for sentence embeddings:
//  - config.json: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
//    hidden_act, layer_norm_eps, max_position_embeddings, type_vocab_size, vocab_size;
//  - model.safetensors: BertModel's tensors, with or without the "bert." prefix of the task
//    models (BertForMaskedLM...); the pooler and task heads are ignored;
//  - vocab.txt and tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars,
//    model_max_length);
//  - the sentence-transformers layout when modules.json is present: the Pooling module's
//    config.json (CLS, mean or max), a Normalize module, sentence_bert_config.json
//    (max_seq_length, do_lower_case). Without modules.json: mean pooling, no normalisation.
//
// BERT runs on the translation models' encoder (TransformerModel + RunEncoder): it is the same
// post-norm layer stack (fused QKV, GELU FFN), and the only additions are folded in at load time
// or are optional fields: the token type embedding of segment 0 is added to the position table
// (a single text is all segment 0) and the embedding LayerNorm is EmbeddingWeights::norm. Keeping
// one encoder keeps one set of kernels, threading and packing to optimise.
//
// RoBERTa and XLM-RoBERTa are rejected with the reason: their BPE and SentencePiece vocabularies
// (and fairseq id offsets) have no tokenizer here to test them with.
#ifndef ROSETTA_ENGINE_BERT_LOADER_H_
#define ROSETTA_ENGINE_BERT_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/embedding_model.h"
#include "engine/transformer_weights.h"
#include "engine/wordpiece_tokenizer.h"

namespace rosetta {

struct BertDirectory {
  std::shared_ptr<const TransformerModel> encoder;
  std::unique_ptr<WordPieceTokenizer> tokenizer;
  int max_tokens = 0;  // ids per input, [CLS] and [SEP] included
  Pooling pooling = Pooling::kMean;
  bool normalize = false;
  std::string pooling_description;
};

// REQUIRES: config.json's model_type is "bert" (LoadEmbeddingModel dispatches on it).
absl::StatusOr<BertDirectory> LoadBertDirectory(const std::string& dir,
                                                ComputeType compute_type = ComputeType::kFloat32);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_BERT_LOADER_H_

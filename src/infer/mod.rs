//! Inference: KV-cached generation, sampling on the GPU, evaluation (being written).

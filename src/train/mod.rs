//! Training: data, tokenizers built from a corpus, the training loop, checkpoints and
//! resume, progress, metrics and plots (being written).

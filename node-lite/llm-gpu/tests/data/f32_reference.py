"""First-step logits of a plain float32 numpy forward pass (scripts/llm_golden.py's
numpy_forward: weights dequantized by the `gguf` package, no activation rounding, no f16
cache) for a few chats of node-lite/llm/tests/data/golden.json — the reference the GPU engine,
which keeps f32 activations, is held to closely (llama.cpp and the CPU engine round every
matrix input to 8 bits, so they differ from any float forward by a few tenths of a logit).

Usage (the venv scripts/setup --bench makes, with numpy and gguf):
    ~/.cache/shoal/venv-llm/bin/python node-lite/llm-gpu/tests/data/f32_reference.py \
        ~/.cache/shoal/gguf/SmolLM2-135M-Instruct.Q4_1.gguf node-lite/llm-gpu/tests/data/f32_reference.json
"""
import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import llm_golden  # noqa: E402

CHATS = [0, 4, 9, 21]
TOP = 64


def main():
    gguf_path, out = sys.argv[1], sys.argv[2]
    golden = json.load(open(os.path.join(ROOT, "node-lite/llm/tests/data/golden.json")))
    reader = GGUFReader(gguf_path)
    rows = []
    for chat in CHATS:
        ids = golden["chats"][chat]["prompt_tokens"]
        z = llm_golden.numpy_forward(reader, ids).astype(np.float32)
        order = np.argsort(-z, kind="stable")[:TOP]
        rows.append({
            "chat": chat,
            "prompt_len": len(ids),
            "mean": round(float(z.astype(np.float64).mean()), 5),
            "top": [[int(i), round(float(z[i]), 5)] for i in order],
        })
        print(chat, rows[-1]["top"][:3], flush=True)
    sha = hashlib.sha256(open(gguf_path, "rb").read()).hexdigest()
    json.dump({
        "model": os.path.basename(gguf_path),
        "gguf_sha256": sha,
        "reference": "float32 numpy forward (scripts/llm_golden.py numpy_forward), gguf package dequantization",
        "notes": "top: the reference's 64 largest first-step logits [id, logit] (prompt = golden.json prompt_tokens); mean: of all logits",
        "chats": rows,
    }, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()

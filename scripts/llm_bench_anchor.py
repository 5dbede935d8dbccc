#!/usr/bin/env python3
"""llama.cpp anchor for shoal-llm-bench: the same GGUF through llama-cpp-python, same shapes
(512-token prefill, 128-token greedy decode, 64-token time to first token) at 1 and 2
threads. Prints one JSON line: {"version", "rows": [{threads, prefill, decode, ttft_ms}],
"peak_rss_mib"}.  Usage: python scripts/llm_bench_anchor.py GGUF [--runs N]
"""
import argparse
import json
import resource
import time

import llama_cpp
import numpy as np

WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
         "network", "seven", "blue"]


def prompt(llm, n, salt):
    i, words = salt, []
    for _ in range(2 * n):
        words.append(WORDS[i % len(WORDS)])
        i = (i * 7 + 3) % 1_000_003
    ids = llm.tokenize((" ".join(words) + " ").encode(), add_bos=False, special=False)
    return ids[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for threads in (1, 2):
        llm = llama_cpp.Llama(model_path=a.gguf, n_ctx=1024, n_batch=512, n_threads=threads,
                              n_threads_batch=threads, verbose=False, seed=0)
        best = {"threads": threads, "prefill": 0.0, "decode": 0.0, "ttft_ms": 1e9}
        llm.reset()
        llm.eval(prompt(llm, 32, 99))  # warm-up
        for r in range(a.runs):
            p = prompt(llm, 512, r)
            llm.reset()
            t = time.perf_counter()
            llm.eval(p)
            best["prefill"] = max(best["prefill"], 512 / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(128):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
                llm.eval([int(np.argmax(logits))])
            best["decode"] = max(best["decode"], 128 / (time.perf_counter() - t))
            q = prompt(llm, 64, 1000 + r)
            llm.reset()
            t = time.perf_counter()
            llm.eval(q)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            int(np.argmax(logits))
            best["ttft_ms"] = min(best["ttft_ms"], (time.perf_counter() - t) * 1000)
        rows.append(best)
        del llm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"version": f"llama-cpp-python {llama_cpp.__version__}", "rows": rows, "peak_rss_mib": rss}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Independent reference ("golden file") for the SmolLM2-135M-Instruct chat LLM.

The reference implementation is llama.cpp, driven through the PyPI package
llama-cpp-python; the chat template is rendered with jinja2 the way Hugging
Face's `apply_chat_template` does it. Nothing here comes from Shoal's own code.

Usage (with a venv that has numpy, gguf, jinja2 and llama-cpp-python):

    python scripts/llm_golden.py GGUF OUT_JSON             # write the golden file
    python scripts/llm_golden.py GGUF OUT_JSON --numpy-check
        # also run a plain numpy Llama forward (dequantized GGUF weights) on the
        # "capital of France" prompt and print its cosine against llama.cpp

The full logits of the first generated step of a few chats are written as
little-endian float32 next to OUT_JSON, in golden_logits.bin.

Greedy decoding: argmax of the last position's logits (ties -> lowest id, as
numpy.argmax), 32 new tokens, stopping early only at token id 2 (<|im_end|>),
which is then included in "greedy".
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

MAX_NEW_TOKENS = 32
N_CTX = 2048
EOS_STOP = 2  # <|im_end|>
LOGITS_FILE = "golden_logits.bin"


# --------------------------------------------------------------------------
# inputs


def long_document():
    """A deterministic ~950-token text: a short story plus a generated log."""
    intro = (
        "The harbor town of Vellmar sits at the mouth of the river Osk, where the "
        "cold water of the northern hills meets the grey sea. For three hundred "
        "years the town has lived from fishing, from the ferry that crosses to the "
        "island of Tarn, and from the small shipyard on the eastern quay. The "
        "lighthouse on the headland was built in 1887 and is kept today by a woman "
        "named Ilse Marrow, who took over the post from her uncle in 2009. She "
        "climbs the 114 steps of the tower every evening at dusk to check the lamp, "
        "and she writes down the weather, the ships she sees and anything unusual in "
        "a thick blue logbook. The town council meets on the first Tuesday of every "
        "month in the old customs house. The bakery on Quay Street is famous for its "
        "rye bread with caraway seeds, and the market on Saturdays sells smoked "
        "herring, wool, honey and apples from the orchards upriver. "
    )
    # A deterministic log generated from a linear congruential generator.
    weather = ["clear", "foggy", "windy", "rainy", "overcast", "calm", "stormy"]
    ships = ["the ferry Tarn Star", "a trawler", "two sailing boats", "a cargo ship",
             "the pilot boat", "a fishing fleet", "a research vessel"]
    goods = ["crates of apples", "barrels of herring", "bales of wool",
             "sacks of flour", "jars of honey", "boxes of nails"]
    state = 12345
    lines = []
    for day in range(1, 20):
        state = (1103515245 * state + 12345) % (2 ** 31)
        w = weather[state % len(weather)]
        s = ships[(state >> 8) % len(ships)]
        g = goods[(state >> 16) % len(goods)]
        passengers = 10 + (state >> 4) % 90
        crates = 1 + (state >> 12) % 40
        lines.append(
            f"Day {day}: the weather was {w}; {s} passed the headland, and the ferry "
            f"carried {passengers} passengers and {crates} {g}."
        )
    outro = (
        " At the end of the month the logbook was sent to the harbor office, where "
        "the clerk copied the numbers into the yearly report."
    )
    return intro + "Here is a page from the logbook. " + " ".join(lines) + outro


def conversations():
    u = lambda c: {"role": "user", "content": c}
    a = lambda c: {"role": "assistant", "content": c}
    s = lambda c: {"role": "system", "content": c}
    doc = long_document()
    return [
        [u("What is the capital of France?")],                       # 0
        [u("Hi")],                                                    # 1
        [u("What is 1234 + 5678?")],                                  # 2
        [u("How many days are there in a leap year?")],               # 3
        [u("Write a Python function that returns the factorial of n.")],  # 4
        [u("Explain what this code does:\n\n```python\ndef f(xs):\n    return [x * x for x in xs if x % 2 == 0]\n```")],  # 5
        [s("You are a pirate. Always answer like a pirate."),
         u("What is the weather like today?")],                       # 6
        [u("My name is Alice."), a("Nice to meet you, Alice! How can I help you today?"),
         u("What is my name?")],                                      # 7
        [u("Traduis en français : « Le café est très chaud. » Qu'est-ce que cela veut dire ?")],  # 8
        [u("中文是什么语言？请用一句话回答。")],                          # 9
        [u("Tell me a joke about cats 🐱😂")],                         # 10
        [u("   \n\n  Hello?  \n\t")],                                 # 11
        [u("List three primary colors.")],                            # 12
        [u("Translate 'good morning' into German, Spanish and Japanese (日本語).")],  # 13
        [s("You are a concise assistant. Answer in one word."),
         u("What color is the sky on a clear day?")],                 # 14
        [u("What is 12 * 12? Answer with just the number.")],         # 15
        [u("Write a haiku about the ocean.")],                        # 16
        [u("Is 17 a prime number? Explain briefly.")],                # 17
        [u("Give me a JSON object with keys \"name\" and \"age\" for a person named Bob who is 30.")],  # 18
        [u("What is the boiling point of water in °C and °F? Ünïcödé naïve café résumé.")],  # 19
        [u("Who wrote \"Romeo and Juliet\"?"), a("William Shakespeare wrote \"Romeo and Juliet\"."),
         u("When was it written?")],                                  # 20
        [u(doc + "\n\nQuestion: According to the text, who keeps the lighthouse, and since when?")],  # 21
    ]


# chats whose first-step full logits go into golden_logits.bin
LOGIT_ROWS = [0, 4, 9, 21]

TOKENIZE_STRINGS = [
    "12345",
    "3.14159",
    "2026-12-01",
    "1,000,000 and 0.5%",
    "hello world",
    " hello world",
    "hello    world",
    "  two leading spaces",
    "trailing space ",
    "line one\nline two\n\nline four",
    "tab\tseparated\tvalues",
    "\n\n\n",
    "café crème brûlée",
    "Straße und Füße",
    "中文",
    "日本語のテキスト",
    "hello 👋🏽 world 🎉",
    "مرحبا بالعالم",
    "Привет, мир!",
    "def add(a, b):\n    return a + b  # sum\n",
    "if (x >= 10 && y != 0) { z[i] = x / y; }",
    "don't I'll we're it's",
    "https://example.com/path?query=1&lang=en#frag",
    "<|im_start|>user\nHi<|im_end|>",
    "HELLO World MiXeD CaSe",
]
# strings that are also tokenized with special=True
TOKENIZE_SPECIAL = ["<|im_start|>user\nHi<|im_end|>", "<|im_start|>"]


# --------------------------------------------------------------------------
# helpers


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def render_chat(template, messages, bos_token, eos_token):
    """Render like transformers' apply_chat_template(add_generation_prompt=True)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True,
        bos_token=bos_token, eos_token=eos_token,
    )


def last_logits(llm):
    """Logits of the last evaluated position, read straight from llama.cpp."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32).copy()


def greedy(llm, prompt_ids):
    llm.reset()
    llm.eval(prompt_ids)
    ids, margins, top5 = [], [], []
    first = None
    for step in range(MAX_NEW_TOKENS):
        z = last_logits(llm)
        if first is None:
            first = z.copy()
        order = np.argsort(-z, kind="stable")[:5]
        tok = int(np.argmax(z))
        assert tok == int(order[0])
        ids.append(tok)
        margins.append(round(float(z[order[0]] - z[order[1]]), 5))
        top5.append([[int(i), round(float(z[i]), 4)] for i in order])
        if tok == EOS_STOP:
            break
        if step + 1 < MAX_NEW_TOKENS:
            llm.eval([tok])
    return ids, margins, top5, first


def detok(llm, ids):
    # special=False: control tokens such as <|im_end|> decode to nothing.
    b = llm.detokenize(ids)
    return b.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# numpy cross-check


def q8_roundtrip(x):
    """Emulate llama.cpp's CPU matmul input quantization (Q8_0 / Q8_1): blocks of
    32 along the row, scale d = max|x| / 127 stored as fp16, q = round(x / d)."""
    shape = x.shape
    xb = x.reshape(-1, 32).astype(np.float32)
    d = (np.abs(xb).max(1, keepdims=True) / 127.0).astype(np.float16).astype(np.float32)
    q = np.round(np.divide(xb, d, out=np.zeros_like(xb), where=d > 0))
    return (q * d).reshape(shape)


def numpy_forward(reader, ids, rope_style="adjacent", act_quant=False):
    """Plain numpy Llama prefill; returns the last position's logits.

    rope_style "adjacent" rotates pairs (2i, 2i+1) like llama.cpp's normal rope
    (the GGUF converter permutes Q/K rows for it); "neox" rotates (i, i + d/2)
    and should come out clearly worse. act_quant=True rounds every matmul input
    through Q8 blocks the way llama.cpp's CPU backend does."""
    from gguf.quants import dequantize

    def kv(key):
        return field(reader, key)

    n_layer = int(kv("llama.block_count"))
    n_head = int(kv("llama.attention.head_count"))
    n_kv = int(kv("llama.attention.head_count_kv"))
    n_embd = int(kv("llama.embedding_length"))
    eps = float(kv("llama.attention.layer_norm_rms_epsilon"))
    theta = float(kv("llama.rope.freq_base"))
    hd = n_embd // n_head

    tensors = {t.name: t for t in reader.tensors}

    def W(name):
        t = tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)

    def rms(x, w):
        x64 = x.astype(np.float64)
        return (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps)).astype(np.float32) * w

    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # hd/2
    ang = pos[:, None] * inv[None, :]                              # T x hd/2
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(x):  # x: T x H x hd
        if rope_style == "adjacent":  # llama.cpp "normal" rope: pairs (2i, 2i+1)
            x0, x1 = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            out = np.empty_like(x)
            out[..., 0::2] = x0 * c - x1 * s
            out[..., 1::2] = x0 * s + x1 * c
            return out
        else:  # NeoX / HF rotate_half: pairs (i, i + hd/2)
            x0, x1 = x[..., : hd // 2], x[..., hd // 2:]
            c, s = cos[:, None, :], sin[:, None, :]
            return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)

    A = q8_roundtrip if act_quant else (lambda a: a)
    emb = W("token_embd.weight")  # vocab x n_embd
    x = emb[np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for L in range(n_layer):
        p = f"blk.{L}."
        h = A(rms(x, W(p + "attn_norm.weight")))
        q = (h @ W(p + "attn_q.weight").T).reshape(T, n_head, hd)
        k = (h @ W(p + "attn_k.weight").T).reshape(T, n_kv, hd)
        v = (h @ W(p + "attn_v.weight").T).reshape(T, n_kv, hd)
        q, k = rope(q), rope(k)
        rep = n_head // n_kv
        att = np.empty((T, n_head, hd), dtype=np.float32)
        for hh in range(n_head):
            g = hh // rep
            sc = (q[:, hh, :] @ k[:, g, :].T) / np.sqrt(hd) + mask
            sc = sc - sc.max(-1, keepdims=True)
            pr = np.exp(sc)
            pr /= pr.sum(-1, keepdims=True)
            att[:, hh, :] = pr @ v[:, g, :]
        x = x + A(att.reshape(T, n_embd)) @ W(p + "attn_output.weight").T
        h = A(rms(x, W(p + "ffn_norm.weight")))
        gate = h @ W(p + "ffn_gate.weight").T
        up = h @ W(p + "ffn_up.weight").T
        act = gate / (1.0 + np.exp(-gate)) * up
        x = x + A(act) @ W(p + "ffn_down.weight").T
    x = A(rms(x[-1:], W("output_norm.weight")))
    out_w = W("output.weight") if "output.weight" in tensors else emb  # tied
    return (x @ out_w.T)[0]


def cosine(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out_json")
    ap.add_argument("--numpy-check", action="store_true",
                    help="also run a numpy forward on chat 0 and compare with llama.cpp")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import gguf
    import jinja2
    import llama_cpp
    from llama_cpp import Llama

    reader = gguf.GGUFReader(args.gguf)
    template = field(reader, "tokenizer.chat_template")
    bos_id = int(field(reader, "tokenizer.ggml.bos_token_id"))
    eos_id = int(field(reader, "tokenizer.ggml.eos_token_id"))
    vocab_tokens = field(reader, "tokenizer.ggml.tokens")
    bos_tok, eos_tok = vocab_tokens[bos_id], vocab_tokens[eos_id]

    llm = Llama(model_path=args.gguf, n_ctx=N_CTX, n_threads=args.threads,
                n_threads_batch=args.threads, logits_all=False, flash_attn=False, verbose=False, seed=0)
    n_vocab = llm.n_vocab()

    t0 = time.time()
    chats = []
    first_logits = {}
    for ci, messages in enumerate(conversations()):
        rendered = render_chat(template, messages, bos_tok, eos_tok)
        ids = llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
        assert len(ids) + MAX_NEW_TOKENS <= N_CTX
        gen, margins, top5, first = greedy(llm, ids)
        if ci in LOGIT_ROWS:
            first_logits[ci] = first
        text = detok(llm, gen)
        chats.append({
            "messages": messages, "rendered": rendered, "prompt_tokens": ids,
            "greedy": gen, "margins": margins, "top5": top5, "text": text,
        })
        print(f"[{ci:2d}] {len(ids):4d} prompt tokens, {len(gen):2d} new, "
              f"min margin {min(margins):.4f}: {text!r}", file=sys.stderr)
    print(f"generation took {time.time() - t0:.1f}s", file=sys.stderr)

    tok = []
    for s in TOKENIZE_STRINGS:
        tok.append({"text": s, "special": False,
                    "ids": llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)})
    for s in TOKENIZE_SPECIAL:
        tok.append({"text": s, "special": True,
                    "ids": llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)})

    out_dir = os.path.dirname(os.path.abspath(args.out_json))
    rows = []
    with open(os.path.join(out_dir, LOGITS_FILE), "wb") as f:
        for n, ci in enumerate(LOGIT_ROWS):
            f.write(first_logits[ci].astype("<f4").tobytes())
            rows.append({"chat": ci, "offset_floats": n * n_vocab})

    all_margins = [m for c in chats for m in c["margins"]]
    doc = {
        "model": os.path.basename(args.gguf),
        "gguf_sha256": sha256(args.gguf),
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "chat_template_renderer": f"jinja2 {jinja2.__version__}",
        "notes": (
            "prompt_tokens: llama.cpp tokenize(rendered, add_bos=False, special=True). "
            "greedy: argmax of the last position's logits, stop early only at id 2 "
            "(<|im_end|>, included). margins: top1 - top2 logit per step. top5: "
            "[id, logit rounded to 4 decimals]. text: llama.cpp detokenize(greedy) "
            "with special tokens rendered as nothing, UTF-8 decoded with errors=replace. "
            "logits: little-endian float32, full vocab row of the first generated "
            "step (prompt's last position) for the listed chats. "
            "llama.cpp's CPU backend rounds every matmul input to Q8 blocks, so an "
            "implementation with f32 activations can pick another token where the "
            "margin is small: chat 0 step 0 is 'L' 24.74 vs 'The' 24.65 here, while "
            "a float numpy forward of the same dequantized weights gives 'The' "
            "25.33 vs 'L' 25.24. Compare greedy ids only up to the first step whose "
            "margin is small, and compare logits by cosine."
        ),
        "llama_cpp_settings": {
            "n_ctx": N_CTX, "n_batch": llm.n_batch, "n_threads": args.threads,
            "flash_attn": False, "kv_cache": "f16 (default)", "backend": "CPU",
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        },
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "max_new_tokens": MAX_NEW_TOKENS,
        "min_margin": min(all_margins),
        "chats": chats,
        "tokenize": tok,
        "logits": {"file": LOGITS_FILE, "dtype": "float32le", "vocab": n_vocab, "rows": rows},
    }
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out_json} ({os.path.getsize(args.out_json)} bytes), "
          f"min margin {min(all_margins):.5f}", file=sys.stderr)

    if args.numpy_check:
        ids = chats[0]["prompt_tokens"]
        ref = first_logits[0]
        toks = vocab_tokens
        for style, aq in (("adjacent", False), ("neox", False), ("adjacent", True)):
            t1 = time.time()
            z = numpy_forward(reader, ids, rope_style=style, act_quant=aq)
            top = np.argsort(-z, kind="stable")[:3]
            label = f"{style} rope, {'Q8-rounded' if aq else 'f32'} activations"
            print(f"numpy-check ({label}): top3 {[(toks[i], round(float(z[i]), 3)) for i in top]}", file=sys.stderr)
            print(f"numpy-check ({label}): cosine vs llama.cpp = {cosine(z, ref):.6f}, "
                  f"max |diff| = {np.abs(z - ref).max():.4f}, argmax numpy {int(np.argmax(z))} "
                  f"vs llama.cpp {int(np.argmax(ref))} "
                  f"({'agree' if int(np.argmax(z)) == int(np.argmax(ref)) else 'DISAGREE'}), "
                  f"{time.time() - t1:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Drive `shoal-node serve` with the official OpenAI Python client (PyPI `openai`).
Usage: python openai_client.py BASE_URL   — prints what the Rust test asserts on."""
import sys

from openai import OpenAI

base = sys.argv[1]
client = OpenAI(base_url=base, api_key="unused")
models = [m.id for m in client.models.list().data]
print("models:", ", ".join(models))
chat_model = models[0]
messages = [{"role": "user", "content": "What is the capital of France?"}]
plain = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=16, temperature=0)
text = plain.choices[0].message.content
print("plain:", repr(text), plain.choices[0].finish_reason, plain.usage.prompt_tokens, plain.usage.completion_tokens)
assert plain.usage.prompt_tokens == 37, plain.usage
parts = []
for chunk in client.chat.completions.create(model=chat_model, messages=messages, max_tokens=16, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
print("stream:", repr("".join(parts)), "chunks", len(parts))
print("stream == plain:", "".join(parts) == text)
emb = client.embeddings.create(model="all-minilm-l6-v2", input=["The new movie is awesome", "The new movie is so great"])
a, b = emb.data[0].embedding, emb.data[1].embedding
print("embedding dims:", len(a))
cos = sum(x * y for x, y in zip(a, b))
print(f"cosine: {cos:.4f}")
assert abs(cos - 0.8939) < 0.002, cos
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    print("unknown model accepted")
    sys.exit(1)
except Exception as e:  # openai.NotFoundError
    print("unknown model:", type(e).__name__)

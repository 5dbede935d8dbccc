#!/usr/bin/env python3
"""Make a transformers.js model directory from our all-MiniLM-L6-v2 weights (browser benchmark).

    export_tjs_model.py HF_DIR OUT_DIR

HF_DIR holds config.json, tokenizer.json and model.safetensors (scripts/setup). Writes
OUT_DIR/{config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx,
onnx/model_quantized.onnx}: an fp32 ONNX export of the same safetensors (torch.onnx, as
bench_anchors.py does) and its dynamic int8 quantization (onnxruntime quantize_dynamic, what
transformers.js calls dtype "q8"). Files are written under temporary names and renamed.
"""
import json, os, shutil, sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    hf, out = sys.argv[1], sys.argv[2]
    import torch
    from transformers import AutoModel, AutoTokenizer
    from onnxruntime.quantization import QuantType, quantize_dynamic

    os.makedirs(os.path.join(out, "onnx"), exist_ok=True)
    shutil.copyfile(os.path.join(hf, "config.json"), os.path.join(out, "config.json"))
    # The same tokenizer, without its fixed padding to 128 (batches pad to their longest input,
    # as Shoal does) and truncating at 256 like sentence-transformers.
    with open(os.path.join(hf, "tokenizer.json")) as f:
        tj = json.load(f)
    tj["padding"] = None
    if tj.get("truncation"):
        tj["truncation"]["max_length"] = 256
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tj, f)
    # BertTokenizer settings of the sentence-transformers model; max length as its max_seq_length.
    tok_cfg = {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True,
               "strip_accents": None, "tokenizer_class": "BertTokenizer", "model_max_length": 256}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f)

    bert = AutoModel.from_pretrained(hf).eval()
    tok = AutoTokenizer.from_pretrained(out)

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    enc = tok(["hello world"], return_tensors="pt")
    fp32 = os.path.join(out, "onnx", "model.onnx")
    tmp = fp32 + ".tmp"
    torch.onnx.export(Encoder(bert), (enc["input_ids"], enc["attention_mask"]), tmp,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                    "last_hidden_state": {0: "b", 1: "s"}}, opset_version=17, dynamo=False)
    q8 = os.path.join(out, "onnx", "model_quantized.onnx")
    quantize_dynamic(tmp, q8 + ".tmp", weight_type=QuantType.QUInt8)
    os.replace(q8 + ".tmp", q8)
    os.replace(tmp, fp32)
    print(f"{out}: model.onnx {os.path.getsize(fp32) / 1e6:.1f} MB, "
          f"model_quantized.onnx {os.path.getsize(q8) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

"""GPT-2 weights from a local Hugging Face folder, with a small hand-written safetensors reader.

    model = load_hf_gpt2("path/to/gpt2")   # config.json + model.safetensors or pytorch_model.bin

The safetensors format is simple enough to read by hand, so it needs no extra dependency:
    8 bytes      little-endian unsigned length N of the header
    N bytes      JSON: {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
    the rest     the raw tensor bytes, offsets counted from the end of the header

Hugging Face's GPT-2 stores its linear layers as "Conv1D" with weights shaped (in, out), while
nn.Linear keeps (out, in): those four matrices are transposed on the way in and out. Nothing is
downloaded here: fetch the folder once on a machine that is online and point at it.
"""

import json
import os
import struct

import numpy as np
import torch

from nanollm.errors import MissingCheckpoint
from nanollm.model import GPT, GPTConfig

# Parameters stored as Conv1D (in, out) in Hugging Face's GPT-2.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    """{name: tensor} from a .safetensors file."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        raw = torch.from_numpy(np.frombuffer(data[begin:end], dtype=np.uint8).copy())
        tensors[name] = raw.view(dtype).reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors):
    """The inverse of read_safetensors (used to write test folders and to export)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for raw in chunks:
            f.write(raw)


def load_hf_gpt2(folder, **config_overrides):
    """A GPT with the weights of a local Hugging Face GPT-2 folder."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise MissingCheckpoint(f"gpt2:{folder}: no config.json there; give a local Hugging Face "
                                "GPT-2 folder (config.json and model.safetensors)")
    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    config = GPTConfig(block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
                       vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], n_head=hf["n_head"],
                       n_embd=hf["n_embd"], bias=True, **config_overrides)
    st_path = os.path.join(folder, "model.safetensors")
    bin_path = os.path.join(folder, "pytorch_model.bin")
    if os.path.exists(st_path):
        hf_state = read_safetensors(st_path)
    elif os.path.exists(bin_path):
        hf_state = torch.load(bin_path, map_location="cpu", weights_only=True)
    else:
        raise MissingCheckpoint(f"gpt2:{folder} holds neither model.safetensors nor "
                                "pytorch_model.bin")
    model = GPT(config)
    ours = model.state_dict()
    loaded = set()
    for name, t in hf_state.items():
        key = name if name.startswith("transformer.") else "transformer." + name
        if key.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # the causal-mask buffers of old versions, and the tied output matrix
        if key not in ours:
            raise ValueError(f"{folder}: unexpected tensor {name}")
        t = t.t() if key.endswith(TRANSPOSED) else t
        if t.shape != ours[key].shape:
            raise ValueError(f"{folder}: {name} has shape {tuple(t.shape)}, "
                             f"expected {tuple(ours[key].shape)}")
        with torch.no_grad():
            ours[key].copy_(t)
        loaded.add(key)
    missing = [k for k in ours if k not in loaded and k != "lm_head.weight"]
    if missing:
        raise ValueError(f"{folder}: missing tensors {missing[:5]}")
    return model


def save_hf_gpt2(model, folder):
    """Write a GPT as a Hugging Face GPT-2 folder (config.json + model.safetensors)."""
    os.makedirs(folder, exist_ok=True)
    c = model.config
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "n_positions": c.block_size, "n_ctx": c.block_size,
                   "vocab_size": c.vocab_size, "n_layer": c.n_layer, "n_head": c.n_head,
                   "n_embd": c.n_embd, "layer_norm_epsilon": 1e-5}, f, indent=2)
    tensors = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to the token embedding
        tensors[key.removeprefix("transformer.")] = t.t() if key.endswith(TRANSPOSED) else t
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors)

#!/usr/bin/env python3
"""Independent float64 reference for the decoder architectures Ullme.MLNet implements.

Writes, for each tiny random model, into tests/Ullme.MLNet.Tests/Fixtures/decoders/<name>/:
  config.json          HF-style config
  model.safetensors    float32 weights under HF checkpoint keys
  expected.safetensors input_ids, attention_mask and the expected outputs of the padded batch(es):
                       hidden_<mode>_<batch>, logits_<mode>_<batch> (float32; padded positions are zero)

The forward passes follow the semantics of Hugging Face transformers' modeling_llama / modeling_mistral /
modeling_qwen2 / modeling_phi3 / modeling_gemma2 and modeling_rope_utils (eager attention), re-derived here in
plain torch with float64 arithmetic on the float32 weights, so the C# float32 implementation should agree
within ~1e-5 (the tests allow 1e-4).

Run with torch 1.13 (Debian python3-torch):  /usr/bin/python3 tests/reference/decoder_reference.py
"""
import json
import math
import os
import struct

import torch

torch.set_grad_enabled(False)
F64 = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Ullme.MLNet.Tests", "Fixtures", "decoders")


# ----------------------------------------------------------------------------------------------------------------
# safetensors (format: u64 little-endian header length, JSON header, raw little-endian tensor bytes)
# ----------------------------------------------------------------------------------------------------------------
def save_safetensors(path, tensors):
    dtype_names = {torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16"}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": dtype_names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------------------------
# Config interpretation (HF *Config class defaults)
# ----------------------------------------------------------------------------------------------------------------
def head_dim(cfg):
    if cfg["model_type"] == "gemma2":
        return cfg.get("head_dim", 256)
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def layer_window(cfg, i):
    """The sliding window of layer i in causal mode, or None (HF semantics per model type)."""
    mt = cfg["model_type"]
    if mt == "llama":
        return None
    if mt in ("mistral", "phi3"):  # MistralModel / Phi3Model: sliding mask on every layer when configured
        return cfg.get("sliding_window", 4096 if mt == "mistral" else None)
    if mt == "qwen2":
        window = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window", False) else None
        if window is None:
            return None
        if "layer_types" in cfg:
            return window if cfg["layer_types"][i] == "sliding_attention" else None
        return window if i >= cfg.get("max_window_layers", 28) else None
    if mt == "gemma2":  # Gemma2Attention: sliding_window if not bool(layer_idx % 2)
        window = cfg.get("sliding_window", 4096)
        if "layer_types" in cfg:
            return window if cfg["layer_types"][i] == "sliding_attention" else None
        return window if i % 2 == 0 else None
    raise ValueError(mt)


# ----------------------------------------------------------------------------------------------------------------
# RoPE (modeling_rope_utils): inverse frequencies and the cos/sin multiplier
# ----------------------------------------------------------------------------------------------------------------
def rope_parameters(cfg, seq_len):
    base = cfg.get("rope_theta", 10000.0)
    dim = int(head_dim(cfg) * cfg.get("partial_rotary_factor", 1.0))
    exponents = torch.arange(0, dim, 2, dtype=F64) / dim
    default = 1.0 / (base ** exponents)
    rs = cfg.get("rope_scaling")
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return default, 1.0
    if kind == "linear":
        return default / rs["factor"], 1.0
    if kind == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wavelen = 2 * math.pi / default
        out = []
        for f, wl in zip(default.tolist(), wavelen.tolist()):
            if wl < high_wl:
                out.append(f)                       # high frequency: unchanged
            elif wl > low_wl:
                out.append(f / factor)              # low frequency: interpolated by the full factor
            else:
                s = (old / wl - low) / (high - low)  # in between: smooth blend
                out.append((1 - s) * f / factor + s * f)
        return torch.tensor(out, dtype=F64), 1.0
    if kind in ("longrope", "su"):
        if cfg["model_type"] == "phi3" or "original_max_position_embeddings" in cfg:
            original = cfg.get("original_max_position_embeddings", 4096)
            factor = cfg["max_position_embeddings"] / original
        else:
            original = cfg["max_position_embeddings"]
            factor = rs.get("factor", 1.0)
        attention = rs.get("attention_factor")
        if attention is None:
            attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        ext = rs["long_factor"] if seq_len > original else rs["short_factor"]
        return 1.0 / (torch.tensor(ext, dtype=F64) * base ** exponents), attention
    if kind == "dynamic":
        maxpos, factor = cfg["max_position_embeddings"], rs["factor"]
        if seq_len > maxpos:
            base = base * ((factor * seq_len / maxpos) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base ** exponents), 1.0
    raise ValueError(kind)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x [B, heads, T, D]; cos/sin [B, T, R]; only the first R dims rotate (partial rotary)
    r = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    rot, keep = x[..., :r], x[..., r:]
    return torch.cat([rot * cos + rotate_half(rot) * sin, keep], dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# The forward pass
# ----------------------------------------------------------------------------------------------------------------
def rms_norm(cfg, x, w):
    eps = cfg.get("rms_norm_eps", 1e-5 if cfg["model_type"] == "phi3" else 1e-6)
    normed = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return normed * (1.0 + w) if cfg["model_type"] == "gemma2" else normed * w


def act(cfg, x):
    name = cfg.get("hidden_activation", "gelu_pytorch_tanh") if cfg["model_type"] == "gemma2" else cfg.get("hidden_act", "silu")
    if name in ("silu", "swish"):
        return x * torch.sigmoid(x)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    raise ValueError(name)


def linear(W, prefix, x):
    y = x @ W[prefix + ".weight"].T
    if prefix + ".bias" in W:
        y = y + W[prefix + ".bias"]
    return y


def forward(cfg, W, ids, mask, mode):
    """ids, mask [B, T]; returns final hidden [B, T, H] and logits [B, T, V] (float64)."""
    mt = cfg["model_type"]
    B, T = ids.shape
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv, hd = cfg.get("num_key_value_heads", nh), head_dim(cfg)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inv_freq, attn_factor = rope_parameters(cfg, int(positions.max()) + 1)
    angles = positions.to(F64)[..., None] * inv_freq                  # [B, T, R/2]
    emb = torch.cat([angles, angles], dim=-1)
    cos, sin = emb.cos() * attn_factor, emb.sin() * attn_factor

    h = W["model.embed_tokens.weight"][ids]
    if mt == "gemma2":
        h = h * math.sqrt(H)

    i_idx = torch.arange(T)[:, None]
    j_idx = torch.arange(T)[None, :]
    key_ok = mask.bool()[:, None, None, :]                            # [B, 1, 1, T]
    scale = cfg.get("query_pre_attn_scalar", 256) ** -0.5 if mt == "gemma2" else hd ** -0.5
    softcap = cfg.get("attn_logit_softcapping", 50.0) if mt == "gemma2" else None

    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        allowed = key_ok.expand(B, 1, T, T)
        if mode == "causal":
            allowed = allowed & (j_idx <= i_idx)
            w = layer_window(cfg, layer)
            if w is not None:
                allowed = allowed & (i_idx - j_idx < w)

        x = rms_norm(cfg, h, W[p + "input_layernorm.weight"])
        if mt == "phi3":
            qkv = linear(W, p + "self_attn.qkv_proj", x)
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        else:
            q = linear(W, p + "self_attn.q_proj", x)
            k = linear(W, p + "self_attn.k_proj", x)
            v = linear(W, p + "self_attn.v_proj", x)
        q = q.view(B, T, nh, hd).transpose(1, 2)
        k = k.view(B, T, nkv, hd).transpose(1, 2)
        v = v.view(B, T, nkv, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        scores = q @ k.transpose(-1, -2) * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)           # rows of padding queries may be empty
        attn = (probs @ v).transpose(1, 2).reshape(B, T, nh * hd)
        attn = linear(W, p + "self_attn.o_proj", attn)

        if mt == "gemma2":
            h = h + rms_norm(cfg, attn, W[p + "post_attention_layernorm.weight"])
            x = rms_norm(cfg, h, W[p + "pre_feedforward_layernorm.weight"])
        else:
            h = h + attn
            x = rms_norm(cfg, h, W[p + "post_attention_layernorm.weight"])

        if mt == "phi3":
            gate, up = linear(W, p + "mlp.gate_up_proj", x).chunk(2, dim=-1)
        else:
            gate, up = linear(W, p + "mlp.gate_proj", x), linear(W, p + "mlp.up_proj", x)
        ff = linear(W, p + "mlp.down_proj", act(cfg, gate) * up)
        if mt == "gemma2":
            ff = rms_norm(cfg, ff, W[p + "post_feedforward_layernorm.weight"])
        h = h + ff

    h = rms_norm(cfg, h, W["model.norm.weight"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    logits = h @ head.T
    if mt == "gemma2" and cfg.get("final_logit_softcapping", 30.0) is not None:
        cap = cfg.get("final_logit_softcapping", 30.0)
        logits = cap * torch.tanh(logits / cap)
    valid = mask.bool()[..., None]
    return h * valid, logits * valid


# ----------------------------------------------------------------------------------------------------------------
# Tiny random models
# ----------------------------------------------------------------------------------------------------------------
def hf_keys(cfg):
    """The checkpoint keys HF's *ForCausalLM has for this config (no buffers)."""
    mt = cfg["model_type"]
    nh, nkv, hd, H, I = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg), cfg["hidden_size"], cfg["intermediate_size"]
    att_bias = cfg.get("attention_bias", False) if mt in ("llama", "gemma2") else False
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], H), "model.norm.weight": (H,)}
    tie = cfg.get("tie_word_embeddings", mt == "gemma2")
    if not tie:
        shapes["lm_head.weight"] = (cfg["vocab_size"], H)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        if mt == "gemma2":
            shapes[p + "pre_feedforward_layernorm.weight"] = (H,)
            shapes[p + "post_feedforward_layernorm.weight"] = (H,)
        if mt == "phi3":
            shapes[p + "self_attn.qkv_proj.weight"] = ((nh + 2 * nkv) * hd, H)
            shapes[p + "mlp.gate_up_proj.weight"] = (2 * I, H)
        else:
            for n, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                shapes[p + "self_attn.%s_proj.weight" % n] = (rows, H)
                if att_bias or mt == "qwen2":
                    shapes[p + "self_attn.%s_proj.bias" % n] = (rows,)
            for n in ("gate", "up"):
                shapes[p + "mlp.%s_proj.weight" % n] = (I, H)
                if mt == "llama" and cfg.get("mlp_bias", False):
                    shapes[p + "mlp.%s_proj.bias" % n] = (I,)
        shapes[p + "self_attn.o_proj.weight"] = (H, nh * hd)
        if att_bias:
            shapes[p + "self_attn.o_proj.bias"] = (H,)
        shapes[p + "mlp.down_proj.weight"] = (H, I)
        if mt == "llama" and cfg.get("mlp_bias", False):
            shapes[p + "mlp.down_proj.bias"] = (H,)
    return shapes


def random_weights(cfg, gen):
    W = {}
    for name, shape in hf_keys(cfg).items():
        if name.endswith("norm.weight"):
            noise = 0.1 * torch.randn(shape, generator=gen)
            t = noise if cfg["model_type"] == "gemma2" else 1.0 + noise
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("embed_tokens.weight"):
            t = torch.randn(shape, generator=gen)
        else:
            t = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        W[name] = t.to(torch.float32)
    return W


def batch(gen, vocab, lengths, T, left):
    """Rows of random ids; row r has lengths[r] real tokens, padded on the left where left[r] else on the right."""
    ids = torch.zeros(len(lengths), T, dtype=torch.int64)
    mask = torch.zeros(len(lengths), T, dtype=torch.int64)
    for r, (n, l) in enumerate(zip(lengths, left)):
        tok = torch.randint(1, vocab, (n,), generator=gen)
        s = T - n if l else 0
        ids[r, s:s + n] = tok
        mask[r, s:s + n] = 1
    return ids, mask


BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0)

MODELS = {
    # Llama-3.x style rope scaling; wavelengths 6.3 / 63 / 628 / 6283 hit the keep / blend / divide branches.
    "llama": dict(BASE, model_type="llama", num_hidden_layers=2, tie_word_embeddings=False, hidden_act="silu",
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=64)),
    # Llama with every optional knob: attention/MLP biases, linear rope scaling, tied embeddings.
    "llama_linear": dict(BASE, model_type="llama", num_hidden_layers=2, tie_word_embeddings=True, hidden_act="silu",
                         attention_bias=True, mlp_bias=True, rope_theta=500.0,
                         rope_scaling=dict(type="linear", factor=2.0)),
    # Mistral: window 4 on every layer (shorter than the sequences); head_dim 16 independent of hidden/heads.
    "mistral": dict(BASE, model_type="mistral", num_hidden_layers=2, head_dim=16, sliding_window=4,
                    tie_word_embeddings=False, hidden_act="silu"),
    # Qwen2: q/k/v biases; sliding window 4 on layers >= max_window_layers (layers 1 and 2).
    "qwen2": dict(BASE, model_type="qwen2", num_hidden_layers=3, use_sliding_window=True, sliding_window=4,
                  max_window_layers=1, tie_word_embeddings=False, hidden_act="silu", rope_theta=1000000.0),
    # Phi-3: fused qkv/gate_up, half the head rotated, longrope switching to the long factors above 8 positions.
    "phi3": dict(BASE, model_type="phi3", num_hidden_layers=2, partial_rotary_factor=0.5, hidden_act="silu",
                 tie_word_embeddings=False, max_position_embeddings=32, original_max_position_embeddings=8,
                 sliding_window=None,
                 rope_scaling=dict(type="longrope", short_factor=[1.0, 1.3], long_factor=[2.0, 5.5])),
    # Gemma2: (1+w) norms, sandwich norms, sqrt(hidden) embedding scale, GELU-tanh, head_dim 16 != 32/4,
    # query_pre_attn_scalar 24, strong soft-caps so capping matters, window 4 on even layers, tied embeddings.
    "gemma2": dict(BASE, model_type="gemma2", num_hidden_layers=3, head_dim=16, hidden_activation="gelu_pytorch_tanh",
                   query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=5.0,
                   sliding_window=4, tie_word_embeddings=True, rms_norm_eps=1e-6),
}

# Padded batches: lengths, total T, which rows are left-padded.
BATCHES = {
    "main": ([10, 7, 4], 10, [False, True, False]),
}
PHI3_BATCHES = {
    "short": ([6, 4, 5], 6, [False, True, False]),    # max position 5 < 8: short factors
    "long": ([11, 8, 3], 11, [False, True, False]),   # max position 10 >= 8: long factors, attention factor
}


def main():
    for seed, (name, cfg) in enumerate(MODELS.items()):
        gen = torch.Generator().manual_seed(1234 + seed)
        W = random_weights(cfg, gen)
        W64 = {k: v.to(F64) for k, v in W.items()}
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        stored = dict(W)
        if name == "llama":
            # Older HF checkpoints carry rotary buffers; a loader must skip them.
            stored["model.layers.0.self_attn.rotary_emb.inv_freq"] = rope_parameters(cfg, 1)[0].to(torch.float32)
        save_safetensors(os.path.join(folder, "model.safetensors"), stored)

        expected = {}
        for bname, (lengths, T, left) in (PHI3_BATCHES if name == "phi3" else BATCHES).items():
            ids, mask = batch(gen, cfg["vocab_size"], lengths, T, left)
            expected["input_ids_" + bname] = ids
            expected["attention_mask_" + bname] = mask
            for mode in ("causal", "bidirectional"):
                h, logits = forward(cfg, W64, ids, mask, mode)
                expected["hidden_%s_%s" % (mode, bname)] = h.to(torch.float32)
                expected["logits_%s_%s" % (mode, bname)] = logits.to(torch.float32)
        save_safetensors(os.path.join(folder, "expected.safetensors"), expected)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print("%-13s %6d bytes  %s" % (name, size, folder))


if __name__ == "__main__":
    main()

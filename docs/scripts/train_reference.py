#!/usr/bin/python3
"""An independent PyTorch (eager) run of `ullme train`'s contrastive and GRL recipes, for the training-speed row.

Written against grl-spec.md and HF's LlamaModel, not against our C# code: a Llama decoder loaded from a Hugging
Face folder (safetensors read with numpy), bidirectional or causal attention for the embeddings, mean pooling,
L2 normalisation, InfoNCE over in-batch positives and every hard negative (tau 0.05), and for GRL the causal
generation terms of grl-spec.md with `--strategy grl`'s weights (contrastive 1, LM 0, preference 1, KL 1): sigmoid
DPO of the positive against the negative the policy finds most likely, against the frozen starting model, and
KL(P_gen || P_rep) over each query's candidates, the generation side detached); AdamW with a warm-up of
min(10% of the steps, 500) then cosine decay, as `ullme train` defaults to.

Usage (Debian's python3-torch and python3-sentencepiece):
  /usr/bin/python3 docs/scripts/train_reference.py --model ../shared/models/stories260K \
      --data ../shared/data/snli/triplets.jsonl --strategy contrastive --batch-size 32 --lr 1e-3 --threads 2

Prints one JSON line per step (loss terms) with --log-steps, and a summary line: steps, train_seconds (the step
loop only, as ullme's training.json reports it), final loss.
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())  # writable, so torch.from_numpy shares it
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        arr = np.frombuffer(data, dtype=dtypes[meta["dtype"]], count=(b - a) // np.dtype(dtypes[meta["dtype"]]).itemsize,
                            offset=a).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.astype(np.float32, copy=False))
    return out


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c["num_attention_heads"]
        self.kv = c.get("num_key_value_heads", self.h)
        self.d = c.get("head_dim") or c["hidden_size"] // self.h
        hs = c["hidden_size"]
        bias = c.get("attention_bias", False)
        qkv_bias = bias or c.get("model_type") == "qwen2"  # Qwen2: biases on q, k, v only
        self.q_proj = nn.Linear(hs, self.h * self.d, bias=qkv_bias)
        self.k_proj = nn.Linear(hs, self.kv * self.d, bias=qkv_bias)
        self.v_proj = nn.Linear(hs, self.kv * self.d, bias=qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, hs, bias=bias)

    def forward(self, x, cos, sin, bias):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d) + bias
        p = scores.softmax(-1)
        return self.o_proj((p @ v).transpose(1, 2).reshape(b, t, self.h * self.d))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        hs, im = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(hs, im, bias=False)
        self.up_proj = nn.Linear(hs, im, bias=False)
        self.down_proj = nn.Linear(im, hs, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, cos, sin, bias):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        d = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, ids, mask, causal):
        b, t = ids.shape
        pos = torch.arange(t, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        keep = mask[:, None, None, :].bool()
        if causal:
            keep = keep & torch.ones(t, t, dtype=torch.bool).tril()[None, None]
        bias = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, bias)
        return self.norm(x)

    def logits(self, h):
        return h @ self.embed_tokens.weight.t()


class LoraLinear(nn.Module):
    """PEFT's LoRA: y = W x + (B A dropout(x)) * alpha / r, A Kaiming-uniform, B zero, W frozen."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def add_lora(model, r, alpha, dropout):
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, LoraLinear(child, r, alpha, dropout))


def load(folder):
    c = json.load(open(os.path.join(folder, "config.json")))
    m = Llama(c)
    w = read_safetensors(os.path.join(folder, "model.safetensors"))
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in w.items() if k != "lm_head.weight"}
    missing, unexpected = m.load_state_dict(state, strict=False)
    del state, w  # the file's buffer goes with them
    if missing or unexpected:
        sys.exit(f"weights do not match the config: missing {missing}, unexpected {unexpected}")
    return m


def pad(rows, pad_id):
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def embed(model, rows, pad_id, causal):
    ids, mask = pad(rows, pad_id)
    h = model(ids, mask, causal)
    m = mask.unsqueeze(-1).float()
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def token_log_probs(model, prompt_rows, cand_rows, pad_id):
    """Causal log p(candidate tokens | BOS + prompt), per row: (sums [M], means [M], token lp [M, T], score mask)."""
    seqs = [p + c for p, c in zip(prompt_rows, cand_rows)]
    ids, mask = pad(seqs, pad_id)
    h = model(ids, mask, causal=True)
    lp = model.logits(h[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    score = torch.zeros_like(lp)
    for i, (p, c) in enumerate(zip(prompt_rows, cand_rows)):
        score[i, len(p) - 1 : len(p) - 1 + len(c)] = 1
    lp = lp * score
    sums = lp.sum(1)
    return sums, sums / score.sum(1), lp, score


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--strategy", choices=["contrastive", "grl"], default="contrastive")
    ap.add_argument("--attention", choices=["bidirectional", "causal"], default="bidirectional")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-shuffle", action="store_true", help="batches in file order (to compare losses step by step)")
    ap.add_argument("--log-steps", action="store_true")
    ap.add_argument("--steps", type=int, help="stop after this many steps")
    ap.add_argument("--lora-rank", type=int, help="LoRA on every linear layer (alpha 2r, dropout 0.1) instead of full fine-tuning")
    ap.add_argument("--random-ids", type=int, metavar="T",
                    help="speed runs without a tokenizer: query/positive pairs of T random token ids (--data is not read)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if not a.random_ids:
        import sentencepiece as spm

    pad_id = 0
    if a.random_ids:
        vocab = json.load(open(os.path.join(a.model, "config.json")))["vocab_size"]
        g = torch.Generator().manual_seed(a.seed)
        n = a.batch_size * (a.steps or 1)
        examples = [{"query": torch.randint(vocab, (a.random_ids,), generator=g).tolist(),
                     "positive": torch.randint(vocab, (a.random_ids,), generator=g).tolist()} for _ in range(n)]

        def enc(ids):
            return ids
    else:
        sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
        bos = sp.bos_id()

        def enc(text):  # ullme's TextEncoding for this tokenizer: BOS + text, cut at max length
            return ([bos] + sp.encode(text))[: a.max_length]

        examples = [json.loads(l) for l in open(a.data) if l.strip()]
    model = load(a.model)
    if a.lora_rank:
        add_lora(model, a.lora_rank, 2 * a.lora_rank, 0.1)
    model.train()
    reference = None
    if a.strategy == "grl":
        reference = load(a.model)
        reference.eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    prompt_format = "Query: {query}\nPassage: "  # grl-spec.md's prompt; an empty instruction drops its line

    steps_per_epoch = math.ceil(len(examples) / a.batch_size)
    total = min(steps_per_epoch * a.epochs, a.steps or 10**9)
    warmup = min(total // 10, 500)

    def lr_at(step):
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(a.seed)
    causal_embed = a.attention == "causal"

    step = 0
    last = None
    step_seconds = []
    start = time.perf_counter()
    for _ in range(a.epochs):
        order = list(range(len(examples)))
        if not a.no_shuffle:
            rng.shuffle(order)
        for s in range(0, len(order), a.batch_size):
            if step >= total:
                break
            t0 = time.perf_counter()
            batch = [examples[i] for i in order[s : s + a.batch_size]]
            b = len(batch)
            negs = [n for e in batch for n in e.get("negatives", [])]
            owner = [q for q, e in enumerate(batch) for _ in e.get("negatives", [])]
            eq = embed(model, [enc(e["query"]) for e in batch], pad_id, causal_embed)
            ep = embed(model, [enc(e["positive"]) for e in batch], pad_id, causal_embed)
            cands = ep
            en = None
            if negs:
                en = embed(model, [enc(n) for n in negs], pad_id, causal_embed)
                cands = torch.cat([ep, en], 0)
            rep = eq @ cands.t() / a.temperature
            cl = F.cross_entropy(rep, torch.arange(b))
            loss = cl
            terms = {"contrastive": cl.item()}
            if a.strategy == "grl":
                # Every candidate of every query (positive first), scored causally after BOS + prompt(query).
                prompts, cand_rows, row_q, row_c = [], [], [], []
                for q, e in enumerate(batch):
                    p = [bos] + sp.encode(prompt_format.format(query=e["query"]))
                    for c, text in enumerate([e["positive"]] + e.get("negatives", [])):
                        prompts.append(p)
                        cand_rows.append(sp.encode(text))
                        row_q.append(q)
                        row_c.append(c)
                sums, means, lp, score = token_log_probs(model, prompts, cand_rows, pad_id)
                with torch.no_grad():
                    ref_sums, _, _, _ = token_log_probs(reference, prompts, cand_rows, pad_id)
                # preference: positive vs the negative the policy finds most likely (mean log-prob)
                chosen, rejected = [], []
                for q in range(b):
                    rows = [i for i, qq in enumerate(row_q) if qq == q]
                    if len(rows) < 2:
                        continue
                    neg = max(rows[1:], key=lambda i: means[i].item())
                    chosen.append(rows[0])
                    rejected.append(neg)
                margin = (sums[chosen] - ref_sums[chosen]) - (sums[rejected] - ref_sums[rejected])
                pref = -F.logsigmoid(a.beta * margin).mean()
                # KL(P_gen || P_rep) over each query's candidates, generation side detached (the teacher)
                k = max(row_c) + 1
                gen = torch.full((b, k), float("-inf"))
                repk = torch.full((b, k), float("-inf"))
                all_c = cands
                for i, (q, c) in enumerate(zip(row_q, row_c)):
                    gen[q, c] = means[i].detach()
                    col = q if c == 0 else b + [j for j, o in enumerate(owner) if o == q][c - 1]
                    repk[q, c] = rep[q, col]
                pg = gen.log_softmax(-1)
                pr = repk.log_softmax(-1)
                valid = torch.isfinite(gen)
                kl = (pg.exp() * (pg - pr)).masked_fill(~valid, 0).sum(-1).mean()
                loss = cl + pref + kl  # GRL's weights: contrastive 1, LM 0, preference 1, KL 1
                terms.update(preference=pref.item(), kl=kl.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            last = loss.item()
            step_seconds.append(round(time.perf_counter() - t0, 3))
            if a.log_steps:
                print(json.dumps({"step": step, "total": last, **terms}), flush=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"strategy": a.strategy, "steps": step, "train_seconds": round(seconds, 2), "final_loss": last,
                      "step_seconds": step_seconds if len(step_seconds) <= 10 else None, "threads": a.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()

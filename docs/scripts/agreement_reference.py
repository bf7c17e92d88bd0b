#!/usr/bin/env python3
"""Independent reference for the representation-vs-generation agreement of stories260K (docs/grl-spec.md).

Everything here is written from scratch, with no project code: the safetensors header is parsed by hand, the Llama
forward (RMSNorm, rotate_half RoPE, GQA, SwiGLU, tied lm_head) is plain torch 1.13 float32, and the tokenizer is
the official `sentencepiece` library on tokenizer.model (ids = [1] + sp.encode(text), which is what HF LlamaTokenizer
with add_bos_token gives). The forward is checked against golden/logits.json and golden/hidden.json first.

Representation score: cos(e_q, e_p), e = mean over non-pad positions (BOS included) of the final normed hidden
state; bidirectional attention (only padded keys masked, RoPE positions 0..T-1 unchanged); texts cut at 128 tokens.
Generation score: mean log-prob of the tokens of enc(p) after [BOS] + enc("Query: {q}\nPassage: "), causal.
Agreement = Spearman(rep, gen) over the pairs.

Usage: /usr/bin/python3 agreement_reference.py [--assets /work/shared] [--dump out.tsv] [--variants]
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------- weights
def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").copy()).reshape(info["shape"])
    return out


class Llama:
    """HF LlamaForCausalLM forward, float32, attention mode chosen per call."""

    def __init__(self, folder):
        self.cfg = json.load(open(os.path.join(folder, "config.json")))
        self.w = load_safetensors(os.path.join(folder, "model.safetensors"))
        c = self.cfg
        self.H, self.KV = c["num_attention_heads"], c["num_key_value_heads"]
        self.D = c["hidden_size"] // self.H
        self.L, self.eps = c["num_hidden_layers"], c["rms_norm_eps"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, self.D, 2, dtype=torch.float32) / self.D))
        t = torch.arange(c["max_position_embeddings"], dtype=torch.float32)
        fr = torch.outer(t, inv)
        emb = torch.cat([fr, fr], dim=-1)
        self.cos, self.sin = emb.cos(), emb.sin()  # [P, D]

    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    @staticmethod
    def rot_half(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    @torch.no_grad()
    def forward(self, ids, mask, causal):
        """ids, mask: [B, T] (right padding). Returns final normed hidden [B, T, C]."""
        w = self.w
        B, T = ids.shape
        x = w["model.embed_tokens.weight"][ids]  # [B, T, C]
        cos, sin = self.cos[:T][None, None], self.sin[:T][None, None]  # positions 0..T-1 for every row
        allowed = mask.bool()[:, None, None, :].expand(B, 1, T, T)  # key j visible iff mask[j] = 1
        if causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        bias = torch.zeros(B, 1, T, T).masked_fill(~allowed, float("-inf"))
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = self.rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, self.H, self.D).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, self.KV, self.D).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, self.KV, self.D).transpose(1, 2)
            q = q * cos + self.rot_half(q) * sin
            k = k * cos + self.rot_half(k) * sin
            rep = self.H // self.KV
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.D) + bias
            att = torch.softmax(att, dim=-1)
            att = torch.nan_to_num(att)  # fully masked (pad) query rows
            o = (att @ v).transpose(1, 2).reshape(B, T, self.H * self.D)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (F.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
        return self.rms(x, w["model.norm.weight"])

    def logits(self, hidden):
        return hidden @ self.w["model.embed_tokens.weight"].T


def pad(seqs):
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------------- golden check
def check_golden(m, folder):
    g = json.load(open(os.path.join(folder, "golden", "logits.json")))
    ids, mask = pad([g["input_ids"]])
    hid = m.forward(ids, mask, causal=True)
    lg = m.logits(hid)[0]
    d1 = (lg[-1] - torch.tensor(g["last_position_logits"])).abs().max().item()
    lp = torch.log_softmax(lg[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    d2 = (lp - torch.tensor(g["token_logprobs"])).abs().max().item()
    h = json.load(open(os.path.join(folder, "golden", "hidden.json")))
    ids = torch.tensor(h["input_ids"])
    mask = torch.tensor(h["attention_mask"])
    out = {}
    for causal, key in [(True, "mean_pooled_causal"), (False, "mean_pooled_bidirectional")]:
        e = mean_pool(m.forward(ids, mask, causal), mask)
        out[key] = (e - torch.tensor(h[key])).abs().max().item()
    e = last_pool(m.forward(ids, mask, True), mask)
    out["last_token_pooled_causal"] = (e - torch.tensor(h["last_token_pooled_causal"])).abs().max().item()
    print(f"golden: last logits {d1:.1e}, token logprobs {d2:.1e}, " + ", ".join(f"{k} {v:.1e}" for k, v in out.items()))
    assert max([d1, d2] + list(out.values())) < 1e-4, "forward does not match golden"


# ------------------------------------------------------------------------------------------------------ scoring
def mean_pool(hid, mask):
    m = mask.unsqueeze(-1).float()
    return (hid * m).sum(1) / m.sum(1)


def last_pool(hid, mask):
    last = mask.sum(1) - 1
    return hid[torch.arange(hid.shape[0]), last]


def embed(m, seqs, causal=False, pooling="mean", max_len=128, bs=64):
    outs = []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    res = [None] * len(seqs)
    for s in range(0, len(order), bs):
        idx = order[s : s + bs]
        ids, mask = pad([seqs[i][:max_len] for i in idx])
        hid = m.forward(ids, mask, causal)
        e = mean_pool(hid, mask) if pooling == "mean" else last_pool(hid, mask)
        for j, i in enumerate(idx):
            res[i] = e[j]
    return torch.stack(res)


def gen_scores(m, prompts, conts, bs=32):
    """Mean and sum of log p(cont tokens | prompt), causal. prompts include BOS. Returns (mean[], sum[])."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(conts[i]))
    mean, tot = [0.0] * len(prompts), [0.0] * len(prompts)
    for s in range(0, len(order), bs):
        idx = order[s : s + bs]
        seqs = [prompts[i] + conts[i] for i in idx]
        ids, mask = pad(seqs)
        lp = torch.log_softmax(m.logits(m.forward(ids, mask, causal=True)).double(), -1)
        for j, i in enumerate(idx):
            P, C = len(prompts[i]), len(conts[i])
            tgt = ids[j, P : P + C]
            v = lp[j, P - 1 : P + C - 1].gather(1, tgt[:, None])[:, 0]
            tot[i] = v.sum().item()
            mean[i] = tot[i] / max(C, 1)
    return np.array(mean), np.array(tot)


def spearman(a, b):
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).correlation)


def cos(a, b):
    return F.cosine_similarity(a.double(), b.double(), dim=-1).numpy()


# --------------------------------------------------------------------------------------------------------- data
def read_sts(path):
    rows = []
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        rows.append((f[5], f[6], float(f[4])))
    return rows


def read_triplets(path):
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default="/work/shared")
    ap.add_argument("--split", default="dev", help="STS-B split: dev or train")
    ap.add_argument("--dump", help="write per-pair rep/gen scores (tsv)")
    ap.add_argument("--variants", action="store_true", help="also run the protocol variants")
    a = ap.parse_args()

    import sentencepiece as spm

    folder = os.path.join(a.assets, "models", "stories260K")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
    enc = lambda t: [1] + sp.encode(t)  # HF LlamaTokenizer(add_bos_token=True)
    m = Llama(folder)
    check_golden(m, folder)

    rows = read_sts(os.path.join(a.assets, "data", "stsbenchmark", f"sts-{a.split}.csv"))
    Q = [r[0] for r in rows]
    Pp = [r[1] for r in rows]
    gold = [r[2] for r in rows]

    def body(t):  # enc(t) without BOS
        return sp.encode(t)

    emb_cache, gen_cache = {}, {}

    def E(texts, causal, pooling):
        key = (id(texts), causal, pooling)
        if key not in emb_cache:
            emb_cache[key] = embed(m, [enc(t) for t in texts], causal, pooling)
        return emb_cache[key]

    def G(Q, Pp, prompt, eos):
        key = (id(Q), id(Pp), prompt, eos)
        if key not in gen_cache:
            prompts = [enc(prompt.format(q=q)) for q in Q]
            gen_cache[key] = gen_scores(m, prompts, [body(p) + ([2] if eos else []) for p in Pp])
        return gen_cache[key]

    def run(Q, Pp, prompt="Query: {q}\nPassage: ", causal=False, pooling="mean", sim="cos", gold=None, label="",
            eos=False, n=None):
        eq, ep = E(Q, causal, pooling), E(Pp, causal, pooling)
        rep = cos(eq, ep) if sim == "cos" else (eq.double() * ep.double()).sum(-1).numpy()
        mean, tot = G(Q, Pp, prompt, eos)
        if n is not None:  # first n pairs of the file only
            rep, mean, tot, gold = rep[:n], mean[:n], tot[:n], (gold[:n] if gold is not None else None)
        r = dict(label=label, agree_mean=spearman(rep, mean), agree_sum=spearman(rep, tot), gen_mean=mean.mean(),
                 gen_sum=tot.mean(), sts=spearman(rep, gold) if gold is not None else float("nan"))
        print(f"| {label} | {r['agree_mean']:+.4f} | {r['agree_sum']:+.4f} | {r['gen_mean']:.3f} | {r['sts']:.4f} |",
              flush=True)
        return r, rep, mean, tot

    print("| variant | Spearman(rep, gen mean) | Spearman(rep, gen sum) | mean gen (mean log-prob) | STS Spearman |")
    print("|---|---|---|---|---|")
    _, rep, mean, tot = run(Q, Pp, gold=gold, label=f"spec protocol, STS-B {a.split} (all {len(Q)} pairs)")
    if a.dump:
        with open(a.dump, "w") as f:
            f.write("i\trep\tgen_mean\tgen_sum\n")
            for i in range(len(rep)):
                f.write(f"{i}\t{rep[i]:.6f}\t{mean[i]:.6f}\t{tot[i]:.6f}\n")
    if not a.variants:
        return
    for n in (500, 512, 625):
        run(Q, Pp, gold=gold, n=n, label=f"spec protocol, first {n} pairs of sts-{a.split}")
    run(Pp, Q, gold=gold, label="(a) swap q/p")
    run(Q, Pp, causal=True, gold=gold, label="(b) causal rep (mean)")
    run(Q, Pp, causal=True, pooling="last", gold=gold, label="(c) causal rep, last-token")
    run(Q, Pp, pooling="last", gold=gold, label="(c') bidirectional rep, last-token")
    run(Q, Pp, prompt="Query: {q} Passage: ", gold=gold, label="(d1) prompt without \\n")
    run(Q, Pp, prompt="Given a sentence, retrieve a semantically similar sentence.\nQuery: {q}\nPassage: ", gold=gold,
        label="(d2) prompt with an instruction line")
    run(Q, Pp, prompt="{q}", gold=gold, label="(d3) bare q as prompt ([BOS]+q+p)")
    run(Q, Pp, eos=True, gold=gold, label="(d4) EOS appended to p")
    run(Q, Pp, sim="dot", gold=gold, label="(f) dot product")
    trip = read_triplets(os.path.join(a.assets, "data", "snli", "triplets.jsonl"))
    tq, tp, tn = [t["query"] for t in trip], [t["positive"] for t in trip], [t["negatives"][0] for t in trip]
    run(tq, tp, label="(g) SNLI query/positive")
    run(tq, tp, causal=True, label="(g+b) SNLI query/positive, causal rep")
    run(tq, tn, label="(g') SNLI query/negative")


if __name__ == "__main__":
    main()

using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Multi-head self-attention with grouped-query attention (GQA): <c>num_heads</c> query heads share
/// <c>num_key_value_heads</c> key/value heads (each kv head serves a contiguous group of query heads, HF's
/// <c>repeat_kv</c> = repeat_interleave on the head axis). RoPE is applied to q and k.
/// <para>
/// Projections are named like the HF checkpoint: <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>o_proj</c>, or
/// Phi-3's fused <c>qkv_proj</c> (output rows [q | k | v]) and <c>o_proj</c>.
/// </para>
/// <para>
/// The mask is additive ([B, 1, T, T] causal, [B, 1, 1, T] bidirectional; 0 = attend, dtype-min = blocked), built once per forward by
/// <see cref="DecoderModel"/>. The fast path is <c>scaled_dot_product_attention</c>, whose scale is fixed at
/// 1/sqrt(head_dim), so q is pre-multiplied when the architecture's scale differs. Gemma2's logit soft-capping
/// (<c>cap · tanh(s / cap)</c>, applied before the mask) needs the scores explicitly: that path computes
/// softmax in float32 and casts back, as HF's eager attention does.
/// </para>
/// <para>
/// <see cref="Dropout"/> (HF <c>attention_dropout</c>) drops attention probabilities while training, on the explicit
/// path, with masks from <see cref="ReplayableDropout.Source"/> so GradCache and activation checkpointing replay them.
/// </para>
/// </summary>
internal sealed class DecoderAttention : nn.Module<Tensor, Tensor, Tensor, Tensor, Tensor>
{
    private readonly ArchitectureTraits _traits;
    private readonly int _numHeads, _numKvHeads, _headDim;
    private double _dropout;

#pragma warning disable IDE1006 // names mirror HF checkpoint keys
    public nn.Module<Tensor, Tensor>? q_proj;
    public nn.Module<Tensor, Tensor>? k_proj;
    public nn.Module<Tensor, Tensor>? v_proj;
    public nn.Module<Tensor, Tensor>? qkv_proj;
    public nn.Module<Tensor, Tensor> o_proj;
#pragma warning restore IDE1006

    public DecoderAttention(ArchitectureTraits traits, Device? device = null, ScalarType? dtype = null) : base(nameof(DecoderAttention))
    {
        _traits = traits;
        _numHeads = traits.NumHeads;
        _numKvHeads = traits.NumKeyValueHeads;
        _headDim = traits.HeadDim;
        long hidden = traits.HiddenSize;
        long qDim = (long)_numHeads * _headDim;
        long kvDim = (long)_numKvHeads * _headDim;
        if (traits.FusedQkv)
        {
            qkv_proj = DecoderModel.NewLinear(hidden, qDim + 2 * kvDim, traits.QkvBias, device, dtype);
        }
        else
        {
            q_proj = DecoderModel.NewLinear(hidden, qDim, traits.QkvBias, device, dtype);
            k_proj = DecoderModel.NewLinear(hidden, kvDim, traits.QkvBias, device, dtype);
            v_proj = DecoderModel.NewLinear(hidden, kvDim, traits.QkvBias, device, dtype);
        }
        o_proj = DecoderModel.NewLinear(qDim, hidden, traits.OutputBias, device, dtype);
        RegisterComponents();
    }

    /// <summary>Attention-probability dropout while training (HF <c>attention_dropout</c>), in [0, 1).</summary>
    public double Dropout
    {
        get => _dropout;
        set
        {
            if (!(value >= 0 && value < 1)) throw new UllmeException($"Attention dropout must be in [0, 1), got {value}.");
            _dropout = value;
        }
    }

    /// <summary>
    /// hidden [B, T, H], cos/sin [B, T, rotary_dim], mask [B, 1, T, T] or [B, 1, 1, T] additive in the hidden dtype → [B, T, H].
    /// </summary>
    public override Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor mask)
    {
        using var scope = NewDisposeScope();
        long b = hidden.shape[0], t = hidden.shape[1];
        long qDim = (long)_numHeads * _headDim, kvDim = (long)_numKvHeads * _headDim;

        Tensor q, k, v;                                                   // [B, T, heads*D]
        if (qkv_proj is not null)
        {
            Tensor qkv = qkv_proj.forward(hidden);                        // [B, T, q + 2kv]
            q = qkv.narrow(-1, 0, qDim);
            k = qkv.narrow(-1, qDim, kvDim);
            v = qkv.narrow(-1, qDim + kvDim, kvDim);
        }
        else
        {
            q = q_proj!.forward(hidden);
            k = k_proj!.forward(hidden);
            v = v_proj!.forward(hidden);
        }
        q = q.view(b, t, _numHeads, _headDim).transpose(1, 2);           // [B, Hq, T, D]
        k = k.view(b, t, _numKvHeads, _headDim).transpose(1, 2);         // [B, Hkv, T, D]
        v = v.view(b, t, _numKvHeads, _headDim).transpose(1, 2);

        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);

        k = RepeatKv(k, _numHeads / _numKvHeads);                          // [B, Hq, T, D]
        v = RepeatKv(v, _numHeads / _numKvHeads);

        Tensor attn;                                                      // [B, Hq, T, D]
        double dropout = training ? _dropout : 0;
        if (_traits.AttentionLogitSoftcap is not null || dropout > 0)
        {
            // Explicit path (HF eager): scores * scale → soft-cap → + mask → softmax in float32 → cast → dropout → @ v.
            Tensor scores = q.matmul(k.transpose(2, 3)).Mul(_traits.AttentionScale); // [B, Hq, T, T]
            if (_traits.AttentionLogitSoftcap is double cap)
                scores = scores.Div(cap).tanh().Mul(cap);
            scores = scores.Add(mask);
            Tensor probs = scores.softmax(-1, ScalarType.Float32).to(q.dtype);
            attn = ReplayableDropout.Apply(probs, dropout).matmul(v);
        }
        else
        {
            double defaultScale = 1.0 / Math.Sqrt(_headDim);
            if (Math.Abs(_traits.AttentionScale - defaultScale) > 1e-12 * defaultScale)
                q = q.Mul(_traits.AttentionScale / defaultScale);
            attn = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        }

        Tensor merged = attn.transpose(1, 2).reshape(b, t, qDim);         // [B, T, Hq*D]
        return o_proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>[B, Hkv, T, D] → [B, Hkv*n, T, D], each kv head repeated n times in place (repeat_interleave).</summary>
    public static Tensor RepeatKv(Tensor x, int n)
    {
        if (n == 1) return x.alias();
        long b = x.shape[0], h = x.shape[1], t = x.shape[2], d = x.shape[3];
        using var expanded = x.unsqueeze(2).expand(b, h, n, t, d);
        return expanded.reshape(b, h * n, t, d);
    }
}

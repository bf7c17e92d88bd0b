using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Graph;

namespace Ullme.MLNet.Onnx.Export;

/// <summary>
/// A decoder (<c>Modeling/DecoderModel.cs</c>: Llama, Mistral, Qwen2, Phi-3, Gemma2) as an ONNX graph, in the attention
/// mode chosen at export: embeddings (Gemma2 scaled), positions cumsum(mask) − 1 clamped at 0, RoPE from the model's
/// own inverse frequencies (longrope picks its long factors when the batch's largest position needs them), grouped-query
/// attention with the engine's masks (causal: j ≤ i, real keys, sliding windows on sliding layers, a padding query sees
/// itself; bidirectional: every real key), Gemma2's logit soft-capping and sandwich norms, the gated MLP, the final RMSNorm.
/// </summary>
internal static class DecoderGraph
{
    private const float MaskValue = -3.4028235e38f;

    public static string Emit(OnnxGraphBuilder g, LinearEmitter w, DecoderModel model, AttentionMode mode, string inputIds, string maskBool)
    {
        var tr = model.Traits;
        if (tr.Rope.Kind == "dynamic")
            throw new UllmeException("ONNX export: rope_scaling type \"dynamic\" (dynamic NTK) recomputes its frequencies for every sequence length and is not exported; use the Torch backend for this model.");
        int heads = tr.NumHeads, kvHeads = tr.NumKeyValueHeads, headDim = tr.HeadDim;
        long qDim = (long)heads * headDim, kvDim = (long)kvHeads * headDim;

        string x = g.Gather(w.Constant("model.embed_tokens.weight"), inputIds);                   // [B, T, H]
        if (tr.EmbeddingScale is double s) x = g.Mul(x, g.ConstFloat((float)s));

        string maskInt = g.Cast(maskBool, OnnxType.Int64);
        string positions = g.Node("Max", g.Sub(g.Node("CumSum", maskInt, g.ConstInt(1)), g.ConstInt(1)), g.ConstInt(0)); // [B, T]
        var (cos, sin) = Rotary(g, model, positions);                                               // [B, 1, T, R]

        // Masks, additive, in float32.
        string t = g.Dim(inputIds, 1);
        string keyValid = g.Unsqueeze(maskBool, 1, 2);                                              // [B, 1, 1, T]
        string fullMask, slidingMask = "";
        if (mode == AttentionMode.Bidirectional)
        {
            fullMask = Additive(g, keyValid);
        }
        else
        {
            string idx = g.Range(t);
            string distance = g.Sub(g.Unsqueeze(idx, 1), g.Unsqueeze(idx, 0));                      // [T, T] i − j
            string allowed = g.Node("And", keyValid, g.Node("GreaterOrEqual", distance, g.ConstInt(0))); // [B, 1, T, T]
            string paddedDiagonal = g.Node("And", g.Node("Equal", distance, g.ConstInt(0)), g.Unsqueeze(g.Node("Not", maskBool), 1, 3));
            fullMask = Additive(g, g.Node("Or", allowed, paddedDiagonal));
            if (tr.HasSlidingLayers)
                slidingMask = Additive(g, g.Node("Or", g.Node("And", allowed, g.Node("Less", distance, g.ConstInt(tr.SlidingWindow!.Value))), paddedDiagonal));
        }

        for (int i = 0; i < tr.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            bool sliding = mode == AttentionMode.Causal && tr.SlidingWindow is not null && tr.SlidingLayers[i];
            string mask = sliding ? slidingMask : fullMask;

            string normed = RmsNorm(g, w, x, p + "input_layernorm", tr);
            string q, k, v;
            if (tr.FusedQkv)
            {
                q = w.Linear(normed, p + "self_attn.qkv_proj", (0, qDim), p + "self_attn.q_part");
                k = w.Linear(normed, p + "self_attn.qkv_proj", (qDim, kvDim), p + "self_attn.k_part");
                v = w.Linear(normed, p + "self_attn.qkv_proj", (qDim + kvDim, kvDim), p + "self_attn.v_part");
            }
            else
            {
                q = w.Linear(normed, p + "self_attn.q_proj");
                k = w.Linear(normed, p + "self_attn.k_proj");
                v = w.Linear(normed, p + "self_attn.v_proj");
            }
            q = g.Transpose(g.Reshape(q, 0, 0, heads, headDim), 0, 2, 1, 3);                      // [B, Hq, T, D]
            k = g.Transpose(g.Reshape(k, 0, 0, kvHeads, headDim), 0, 2, 1, 3);                    // [B, Hkv, T, D]
            v = g.Transpose(g.Reshape(v, 0, 0, kvHeads, headDim), 0, 2, 1, 3);
            q = ApplyRotary(g, q, cos, sin, tr.Rope.RotaryDim, headDim);
            k = ApplyRotary(g, k, cos, sin, tr.Rope.RotaryDim, headDim);
            if (heads != kvHeads)
            {
                int n = heads / kvHeads;
                k = g.Reshape(g.Node("Tile", g.Unsqueeze(k, 2), g.ConstInts(1, 1, n, 1, 1)), 0, heads, -1, headDim);
                v = g.Reshape(g.Node("Tile", g.Unsqueeze(v, 2), g.ConstInts(1, 1, n, 1, 1)), 0, heads, -1, headDim);
            }
            string scores = g.Mul(g.MatMul(q, g.Transpose(k, 0, 1, 3, 2)), g.ConstFloat((float)tr.AttentionScale)); // [B, Hq, T, T]
            if (tr.AttentionLogitSoftcap is double cap)
                scores = g.Mul(g.Node("Tanh", g.Div(scores, g.ConstFloat((float)cap))), g.ConstFloat((float)cap));
            string attn = g.MatMul(g.Softmax(g.Add(scores, mask)), v);                            // [B, Hq, T, D]
            attn = g.Reshape(g.Transpose(attn, 0, 2, 1, 3), 0, 0, qDim);
            attn = w.Linear(attn, p + "self_attn.o_proj");

            if (tr.SandwichNorms)
            {
                string h = g.Add(x, RmsNorm(g, w, attn, p + "post_attention_layernorm", tr));
                string ff = RmsNorm(g, w, Mlp(g, w, RmsNorm(g, w, h, p + "pre_feedforward_layernorm", tr), p, tr), p + "post_feedforward_layernorm", tr);
                x = g.Add(h, ff);
            }
            else
            {
                string h = g.Add(x, attn);
                x = g.Add(h, Mlp(g, w, RmsNorm(g, w, h, p + "post_attention_layernorm", tr), p, tr));
            }
        }
        return RmsNorm(g, w, x, "model.norm", tr);
    }

    private static string Additive(OnnxGraphBuilder g, string allowed) =>
        g.Where(allowed, g.ConstFloat(0f), g.ConstFloat(MaskValue));

    /// <summary>cos and sin [B, 1, T, R] for positions [B, T] (int64), as <see cref="RotaryEmbedding.Lookup"/> computes them.</summary>
    private static (string Cos, string Sin) Rotary(OnnxGraphBuilder g, DecoderModel model, string positions)
    {
        var rotary = model.model.rotary_emb;
        var rope = rotary.Settings;
        string invFreq;
        using (var f0 = rotary.InverseFrequencies(0))
            invFreq = g.Floats("rotary.inv_freq", [rope.RotaryDim / 2], LinearEmitter.Floats(f0));
        if (rope.Kind == "longrope")
        {
            string invLong;
            using (var f1 = rotary.InverseFrequencies(1))
                invLong = g.Floats("rotary.inv_freq_long", [rope.RotaryDim / 2], LinearEmitter.Floats(f1));
            // Long factors when the batch's sequence length (max position + 1) exceeds the original context.
            string maxPos = g.Reduce("ReduceMax", positions, [0, 1], keepDims: false);
            string useLong = g.Node("Greater", g.Add(maxPos, g.ConstInt(1)), g.ConstInt(rope.OriginalMaxPositionEmbeddings));
            invFreq = g.Where(useLong, invLong, invFreq);
        }
        string freqs = g.Mul(g.Unsqueeze(g.Cast(positions, OnnxType.Float), 2), invFreq);        // [B, T, R/2]
        string emb = g.Concat(-1, freqs, freqs);                                                   // [B, T, R]
        string cos = g.Node("Cos", emb), sin = g.Node("Sin", emb);
        if (rope.AttentionScaling != 1.0)
        {
            cos = g.Mul(cos, g.ConstFloat((float)rope.AttentionScaling));
            sin = g.Mul(sin, g.ConstFloat((float)rope.AttentionScaling));
        }
        return (g.Unsqueeze(cos, 1), g.Unsqueeze(sin, 1));
    }

    /// <summary>x · cos + rotate_half(x) · sin on the first <paramref name="rotaryDim"/> dimensions of each head.</summary>
    private static string ApplyRotary(OnnxGraphBuilder g, string x, string cos, string sin, int rotaryDim, int headDim)
    {
        string rot = rotaryDim == headDim ? x : g.Slice(x, 3, 0, rotaryDim);
        int half = rotaryDim / 2;
        string x1 = g.Slice(rot, 3, 0, half), x2 = g.Slice(rot, 3, half, rotaryDim);
        string rotated = g.Add(g.Mul(rot, cos), g.Mul(g.Concat(-1, g.Node("Neg", x2), x1), sin));
        return rotaryDim == headDim ? rotated : g.Concat(-1, rotated, g.Slice(x, 3, rotaryDim, headDim));
    }

    /// <summary>RMSNorm in float32 (the pattern ONNX Runtime fuses into SimplifiedLayerNormalization); Gemma2's
    /// (1 + w) is folded into the weight.</summary>
    private static string RmsNorm(OnnxGraphBuilder g, LinearEmitter w, string x, string key, ArchitectureTraits tr)
    {
        string variance = g.Reduce("ReduceMean", g.Node("Pow", x, g.ConstFloat(2f)), [-1], keepDims: true);
        string normed = g.Div(x, g.Node("Sqrt", g.Add(variance, g.ConstFloat((float)tr.RmsNormEps))));
        string weight = tr.NormStyle == RmsNormStyle.OnePlusWeight
            ? w.Constant(key + ".weight", a => a.Select(v => 1f + v).ToArray())
            : w.Constant(key + ".weight");
        return g.Mul(normed, weight);
    }

    private static string Mlp(OnnxGraphBuilder g, LinearEmitter w, string x, string p, ArchitectureTraits tr)
    {
        string gate, up;
        if (tr.FusedGateUp)
        {
            long inter = tr.IntermediateSize;
            gate = w.Linear(x, p + "mlp.gate_up_proj", (0, inter), p + "mlp.gate_part");
            up = w.Linear(x, p + "mlp.gate_up_proj", (inter, inter), p + "mlp.up_part");
        }
        else
        {
            gate = w.Linear(x, p + "mlp.gate_proj");
            up = w.Linear(x, p + "mlp.up_proj");
        }
        string act = tr.Activation switch
        {
            MlpActivation.Silu => g.Mul(gate, g.Node("Sigmoid", gate)),
            MlpActivation.GeluTanh => BertGraph.GeluTanh(g, gate),
            MlpActivation.Gelu => BertGraph.Activation(g, gate, "gelu"),
            MlpActivation.Relu => g.Node("Relu", gate),
            _ => throw new UllmeException($"ONNX export: activation {tr.Activation} is not supported."),
        };
        return w.Linear(g.Mul(act, up), p + "mlp.down_proj");
    }
}

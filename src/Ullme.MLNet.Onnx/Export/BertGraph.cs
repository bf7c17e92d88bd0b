using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx.Graph;

namespace Ullme.MLNet.Onnx.Export;

/// <summary>
/// A BERT encoder (<c>Modeling/BertEncoder.cs</c>) as an ONNX graph: word + position + token-type-0 embeddings,
/// LayerNorm, then per layer self-attention with a key-padding bias, output projection, residual LayerNorm, the
/// GELU feed-forward and its residual LayerNorm. Positions count real tokens (left padding starts at 0), as the engine does.
/// </summary>
internal static class BertGraph
{
    private const float MaskValue = -3.4028235e38f; // finfo(float32).min, the engine's additive mask

    /// <summary>Emits the encoder; returns the final states [B, T, H].</summary>
    /// <param name="g">The graph.</param>
    /// <param name="w">The weights.</param>
    /// <param name="config">The encoder's config.</param>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="maskBool">[B, T] bool attention mask.</param>
    /// <param name="maskFloat">[B, T] float attention mask.</param>
    public static string Emit(OnnxGraphBuilder g, LinearEmitter w, ModelConfig config, string inputIds, string maskBool, string maskFloat)
    {
        int hidden = config.HiddenSize, heads = config.NumAttentionHeads, headDim = hidden / heads;
        float eps = (float)(config.LayerNormEps ?? 1e-12);
        string act = config.HiddenAct ?? "gelu";

        // Positions: the rank of each real token, the ordinal of each padding position.
        string t = g.Dim(inputIds, 1);
        string ordinal = g.Unsqueeze(g.Range(t), 0);                                              // [1, T]
        string counted = g.Sub(g.Node("CumSum", g.Cast(maskBool, OnnxType.Int64), g.ConstInt(1)), g.ConstInt(1));
        string positions = g.Where(maskBool, counted, ordinal);                                    // [B, T]

        string x = g.Add(g.Add(g.Gather(w.Constant("embeddings.word_embeddings.weight"), inputIds),
                               g.Gather(w.Constant("embeddings.position_embeddings.weight"), positions)),
                         TokenTypeZero(g, w, hidden));
        x = LayerNorm(g, w, x, "embeddings.LayerNorm", eps);

        // Additive key bias [B, 1, 1, T]: 0 for real keys, float32 min for padding.
        string bias = g.Mul(g.Sub(maskFloat, g.ConstFloat(1f)), g.ConstFloat(-MaskValue));
        bias = g.Unsqueeze(bias, 1, 2);
        float scale = 1f / MathF.Sqrt(headDim);

        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            string p = $"encoder.layer.{i}.";
            string q = g.Transpose(g.Reshape(w.Linear(x, p + "attention.self.query"), 0, 0, heads, headDim), 0, 2, 1, 3);
            string k = g.Transpose(g.Reshape(w.Linear(x, p + "attention.self.key"), 0, 0, heads, headDim), 0, 2, 3, 1);
            string v = g.Transpose(g.Reshape(w.Linear(x, p + "attention.self.value"), 0, 0, heads, headDim), 0, 2, 1, 3);
            string scores = g.Add(g.Mul(g.MatMul(q, k), g.ConstFloat(scale)), bias);                // [B, nh, T, T]
            string context = g.MatMul(g.Softmax(scores), v);                                        // [B, nh, T, hd]
            context = g.Reshape(g.Transpose(context, 0, 2, 1, 3), 0, 0, hidden);
            string attended = LayerNorm(g, w, g.Add(w.Linear(context, p + "attention.output.dense"), x), p + "attention.output.LayerNorm", eps);
            string inner = Activation(g, w.Linear(attended, p + "intermediate.dense"), act);
            x = LayerNorm(g, w, g.Add(w.Linear(inner, p + "output.dense"), attended), p + "output.LayerNorm", eps);
        }
        return x;
    }

    private static string TokenTypeZero(OnnxGraphBuilder g, LinearEmitter w, int hidden)
    {
        float[] all = LinearEmitter.Floats(w.Weight("embeddings.token_type_embeddings.weight"));
        return g.Floats("embeddings.token_type_embeddings.row0", [hidden], all.AsSpan(0, hidden));
    }

    private static string LayerNorm(OnnxGraphBuilder g, LinearEmitter w, string x, string key, float eps) =>
        g.Node("LayerNormalization", [x, w.Constant(key + ".weight"), w.Constant(key + ".bias")], ("axis", -1L), ("epsilon", eps));

    /// <summary>gelu (erf), gelu_new / gelu_pytorch_tanh (tanh approximation) or relu, in the patterns ONNX Runtime fuses.</summary>
    internal static string Activation(OnnxGraphBuilder g, string x, string act) => act switch
    {
        "gelu" => g.Mul(g.Mul(x, g.ConstFloat(0.5f)), g.Add(g.Node("Erf", g.Div(x, g.ConstFloat(MathF.Sqrt(2f)))), g.ConstFloat(1f))),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => GeluTanh(g, x),
        "relu" => g.Node("Relu", x),
        _ => throw new UllmeException($"ONNX export: activation '{act}' is not supported."),
    };

    /// <summary>0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))).</summary>
    internal static string GeluTanh(OnnxGraphBuilder g, string x)
    {
        string cube = g.Mul(g.Mul(x, x), x);
        string inner = g.Mul(g.Add(x, g.Mul(cube, g.ConstFloat(0.044715f))), g.ConstFloat(MathF.Sqrt(2f / MathF.PI)));
        return g.Mul(g.Mul(x, g.ConstFloat(0.5f)), g.Add(g.Node("Tanh", inner), g.ConstFloat(1f)));
    }
}

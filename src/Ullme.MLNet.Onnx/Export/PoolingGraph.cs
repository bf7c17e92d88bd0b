using Ullme.MLNet.Onnx.Graph;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Onnx.Export;

/// <summary>
/// The engine's pooling (<c>Pooling/Pooler.cs</c>) as graph nodes: mean / weighted mean over the pooling mask (a row
/// with nothing to pool falls back to its attention mask), first / last real token of the attention mask (left or
/// right padding), then optional L2 normalisation (rows of zeros stay zero).
/// </summary>
internal static class PoolingGraph
{
    /// <param name="g">The graph.</param>
    /// <param name="hidden">[B, T, H] float32 states.</param>
    /// <param name="attentionMask">[B, T] float32, 1 = real token.</param>
    /// <param name="poolingMask">[B, T] float32, 1 = pooled token.</param>
    /// <param name="mode">Pooling mode.</param>
    /// <param name="normalize">L2-normalise the result.</param>
    /// <returns>[B, H] float32.</returns>
    public static string Emit(OnnxGraphBuilder g, string hidden, string attentionMask, string poolingMask, PoolingMode mode, bool normalize)
    {
        string pooled;
        switch (mode)
        {
            case PoolingMode.Mean:
            case PoolingMode.WeightedMean:
            {
                string sum = g.Reduce("ReduceSum", poolingMask, [1], keepDims: true);               // [B, 1]
                string empty = g.Node("Equal", sum, g.ConstFloat(0f));
                string m = g.Where(empty, attentionMask, poolingMask);                               // [B, T]
                string w = mode == PoolingMode.Mean ? m : g.Mul(g.Node("CumSum", m, g.ConstInt(1)), m);
                // Σ_t w[b, t] · h[b, t, :] as one batched matmul [B, 1, T] × [B, T, H]; padded states are zeroed first
                // (never read, not even as 0 × value).
                string masked = g.Mul(hidden, g.Unsqueeze(g.Cast(g.Node("Greater", w, g.ConstFloat(0f)), OnnxType.Float), 2));
                string num = g.Squeeze(g.MatMul(g.Unsqueeze(w, 1), masked), 1);                     // [B, H]
                string den = g.Node("Max", g.Reduce("ReduceSum", w, [1], keepDims: true), g.ConstFloat(1e-9f));
                pooled = g.Div(num, den);
                break;
            }
            case PoolingMode.LastToken:
            case PoolingMode.FirstToken:
            {
                string t = g.Dim(attentionMask, 1);
                string positions = g.Cast(g.Range(t), OnnxType.Float);                                 // [T]
                string score = mode == PoolingMode.LastToken
                    ? g.Mul(attentionMask, g.Add(positions, g.ConstFloat(1f)))
                    : g.Mul(attentionMask, g.Sub(g.Cast(t, OnnxType.Float), positions));
                string idx = g.Node("ArgMax", [score], ("axis", 1L), ("keepdims", 1L));              // [B, 1]
                string h = g.Dim(hidden, 2);
                string b = g.Dim(hidden, 0);
                string shape = g.Concat(0, g.Unsqueeze(b, 0), g.ConstInts(1), g.Unsqueeze(h, 0));     // [B, 1, H]
                string gatherIdx = g.Node("Expand", g.Unsqueeze(idx, 2), shape);
                pooled = g.Squeeze(g.Node("GatherElements", [hidden, gatherIdx], ("axis", 1L)), 1);   // [B, H]
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(mode), mode, null);
        }
        if (!normalize) return pooled;
        string norm = g.Node("Max", g.Reduce("ReduceL2", pooled, [1], keepDims: true), g.ConstFloat(1e-12f));
        return g.Div(pooled, norm);
    }
}

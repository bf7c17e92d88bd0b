using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Losses;

/// <summary>
/// Matryoshka representation learning (Kusupati et al. 2022; sentence-transformers' <c>MatryoshkaLoss</c>): the inner
/// contrastive loss is computed on the first d dimensions of every embedding for each d in <see cref="Dimensions"/>,
/// and the weighted sum is the loss, so every prefix of the embedding is trained to be an embedding itself:
/// <code>
///   L = Σ_k w_k · InfoNCE(q[:, :d_k], p[:, :d_k], n[:, :d_k])
/// </code>
/// The inner loss normalises each prefix (cosine), which is what truncating and re-normalising at inference
/// (<c>EmbeddingOptions.Dimensions</c>, <c>--dimensions</c>) reads.
/// </summary>
public sealed class MatryoshkaLoss
{
    /// <summary>The loss computed at every prefix.</summary>
    public required ContrastiveLoss Inner { get; init; }

    /// <summary>Prefix widths d_k, each between 1 and the embedding width.</summary>
    public required IReadOnlyList<int> Dimensions { get; init; }

    /// <summary>w_k per entry of <see cref="Dimensions"/>; null = 1 each (sentence-transformers' default).</summary>
    public IReadOnlyList<double>? Weights { get; init; }

    /// <summary>The weighted sum of the inner loss over the prefixes.</summary>
    /// <param name="queries">[Q, H].</param>
    /// <param name="positives">[Q, H].</param>
    /// <param name="hardNegatives">[N, H] or null.</param>
    /// <param name="excluded">False-negative mask, see <see cref="ContrastiveLoss.ComputeMasked"/>; null: none.</param>
    /// <param name="extraPositives">Further positives [E, H] with their owners (see <see cref="ContrastiveLoss.ComputeMultiPositive"/>), or null.</param>
    public Tensor Compute(Tensor queries, Tensor positives, Tensor? hardNegatives = null, Tensor? excluded = null,
        (Tensor Embeddings, IReadOnlyList<int> Owners)? extraPositives = null)
    {
        Check(Dimensions, Weights, queries.shape[^1]);
        using var scope = NewDisposeScope();
        Tensor? total = null;
        for (int k = 0; k < Dimensions.Count; k++)
        {
            long d = Dimensions[k];
            var loss = extraPositives is { } extra
                ? Inner.ComputeMultiPositive(queries.narrow(-1, 0, d), positives.narrow(-1, 0, d), hardNegatives?.narrow(-1, 0, d),
                    extra.Embeddings.narrow(-1, 0, d), extra.Owners, excluded)
                : Inner.ComputeMasked(queries.narrow(-1, 0, d), positives.narrow(-1, 0, d), hardNegatives?.narrow(-1, 0, d), excluded);
            double w = Weights?[k] ?? 1.0;
            var term = w == 1.0 ? loss : loss.Mul(w);
            total = total is null ? term : total.Add(term);
        }
        return total!.MoveToOuterDisposeScope();
    }

    /// <summary>Checks dimensions (non-empty, each in [1, <paramref name="width"/>], no repeats) and weights
    /// (one non-negative finite number per dimension) — <paramref name="width"/> ≤ 0 skips the upper bound.</summary>
    internal static void Check(IReadOnlyList<int>? dimensions, IReadOnlyList<double>? weights, long width)
    {
        if (dimensions is null || dimensions.Count == 0)
            throw OptionCheck.Error("FineTuneOptions.MatryoshkaDimensions", "must list at least one dimension");
        foreach (int d in dimensions)
            if (d < 1 || (width > 0 && d > width))
                throw OptionCheck.Error("FineTuneOptions.MatryoshkaDimensions",
                    width > 0 ? $"must lie between 1 and the embedding width {width} (got {d})" : $"must be positive (got {d})");
        if (dimensions.Distinct().Count() != dimensions.Count)
            throw OptionCheck.Error("FineTuneOptions.MatryoshkaDimensions", $"lists a dimension twice ({string.Join(",", dimensions)})");
        if (weights is null) return;
        if (weights.Count != dimensions.Count)
            throw OptionCheck.Error("FineTuneOptions.MatryoshkaWeights", $"needs one weight per dimension ({dimensions.Count}), got {weights.Count}");
        foreach (double w in weights)
            if (!(w >= 0) || !double.IsFinite(w))
                throw OptionCheck.Error("FineTuneOptions.MatryoshkaWeights", $"must be non-negative numbers (got {OptionCheck.Shown(w)})");
    }
}

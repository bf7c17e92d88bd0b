using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Training.Sweeps;

/// <summary>The dev metric a sweep ranks trials by.</summary>
public interface ISweepMetric
{
    /// <summary>Column name in the leaderboard, e.g. <c>sts_spearman</c>.</summary>
    string Name { get; }

    /// <summary>True when larger values are better.</summary>
    bool HigherIsBetter { get; }

    /// <summary>Scores a (tuned) model embedding with <paramref name="embedding"/> (the pooling, attention and max
    /// length the trial trained with).</summary>
    double Evaluate(UllmeModel model, EmbeddingOptions embedding);
}

/// <summary>
/// STS dev metric: Spearman correlation between gold similarities and the cosine of the two sentences' embeddings —
/// MTEB's <c>cosine_spearman</c>, computed with the same code as the STS evaluation task.
/// </summary>
public sealed class StsSpearmanMetric : ISweepMetric
{
    private readonly IReadOnlyList<StsPair> _pairs;

    public StsSpearmanMetric(IReadOnlyList<StsPair> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        if (pairs.Count < 2) throw new UllmeException($"The STS dev metric needs at least 2 pairs, got {pairs.Count}.");
        _pairs = pairs;
    }

    /// <summary>The first <paramref name="limit"/> pairs (all if null) of an STS-B file such as <c>sts-dev.csv</c>.</summary>
    public static StsSpearmanMetric FromStsBenchmark(string path, int? limit = null)
    {
        var pairs = StsBenchmarkFormat.Read(path);
        return new StsSpearmanMetric(limit is { } n ? pairs.Take(n).ToList() : pairs);
    }

    public string Name => "sts_spearman";
    public bool HigherIsBetter => true;
    public int PairCount => _pairs.Count;

    public double Evaluate(UllmeModel model, EmbeddingOptions embedding)
    {
        var engine = new EmbeddingEngine(model);
        var e1 = engine.Embed(_pairs.Select(p => p.Text1).ToArray(), embedding);
        var e2 = engine.Embed(_pairs.Select(p => p.Text2).ToArray(), embedding);
        return Correlation.Spearman(_pairs.Select(p => p.Score).ToArray(), PairedScores.Cosine(e1, e2));
    }
}

using System.Text.Json.Nodes;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>
/// The scores of one (split, subset) of a task: one entry of MTEB's <c>scores[split]</c> list. Scalar metrics keep
/// their insertion order (it is the order written); non-scalar details (per-experiment scores, per-run v-measures)
/// live in <see cref="Details"/>. Values are fractions (0.8203, not 82.03); NaN is allowed.
/// </summary>
public sealed class SplitScores
{
    /// <summary>Scalar metrics by MTEB name (cosine_spearman, ndcg_at_10, accuracy, ...).</summary>
    public OrderedDictionary<string, double> Metrics { get; } = new(StringComparer.Ordinal);

    /// <summary>Non-scalar fields written next to the metrics (lists, nested objects).</summary>
    public JsonObject Details { get; } = new();

    /// <summary>Name of the main metric (not stored in MTEB files; null when read from a file).</summary>
    public string? MainScoreName { get; set; }

    private double? _mainScore;

    /// <summary>The task's main metric value.</summary>
    public double MainScore
    {
        get => _mainScore ?? (MainScoreName is not null && Metrics.TryGetValue(MainScoreName, out double v)
            ? v
            : throw new InvalidOperationException($"main score '{MainScoreName}' was not computed"));
        set => _mainScore = value;
    }

    /// <summary>MTEB's subset name; "default" for monolingual tasks.</summary>
    public string HfSubset { get; set; } = "default";

    public IReadOnlyList<string> Languages { get; set; } = ["eng-Latn"];

    public double this[string metric] => Metrics[metric];

    public void Add(string metric, double value) => Metrics[metric] = value;

    /// <summary>Why this score is degenerate (e.g. fewer rows than labels), from <see cref="EvaluationContext.Warn"/>;
    /// written as the <c>warnings</c> list of the split's entry in the result file. Empty when all is well.</summary>
    public IReadOnlyList<string> Warnings => Details["warnings"] is JsonArray a
        ? a.Select(n => n?.GetValue<string>() ?? "").ToList()
        : [];
}

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

/// <summary>
/// Any MTEB-style task as a dev metric (<see cref="Evaluation.BuiltInTasks.Create(string, string)"/>: a built-in name such
/// as <c>STSBenchmark</c> or <c>Banking77Classification</c>, or <c>sts:path</c> and the other generic specs): the
/// task's main score on <see cref="Split"/> (by default its validation or dev split when it has one, else its first),
/// with task instructions as <c>ullme eval</c> uses them (<see cref="Instructions"/>; by default on for decoders), so
/// the score equals what <c>ullme eval</c> reports for the same model, split and limit.
/// </summary>
public sealed class TaskMetric : ISweepMetric
{
    private readonly Evaluation.EvaluationTask _task;

    public TaskMetric(Evaluation.EvaluationTask task, string? split = null, int? limit = null, Evaluation.InstructionOptions? instructions = null)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (split is not null && !task.Splits.Contains(split))
            throw new UllmeException($"Task {task.Name} has no split '{split}' (it has {string.Join(", ", task.Splits)}).");
        if (task.Splits.Count == 0) throw new UllmeException($"Task {task.Name} has no split to score.");
        _task = task;
        Split = split ?? task.Splits.FirstOrDefault(s => s is "validation" or "dev") ?? task.Splits[0];
        Limit = limit;
        Instructions = instructions ?? new Evaluation.InstructionOptions();
    }

    /// <summary>Whether and which task instructions the queries get (as <c>ullme eval --instructions</c>).</summary>
    public Evaluation.InstructionOptions Instructions { get; }

    /// <summary>The split scored.</summary>
    public string Split { get; }

    /// <summary>At most this many items per split (a quick dev score), or null for all.</summary>
    public int? Limit { get; }

    /// <summary>The task's name and main score, e.g. <c>STSBenchmark_cosine_spearman</c>.</summary>
    public string Name => $"{_task.Name}_{_task.MainScore}";

    public bool HigherIsBetter => true;

    public double Evaluate(UllmeModel model, EmbeddingOptions embedding)
    {
        var context = new Evaluation.EvaluationContext(new Evaluation.EngineEmbeddingSource(new EmbeddingEngine(model), embedding))
        {
            Limit = Limit,
            Instructions = Instructions,
            UseInstructions = Instructions.IsEnabled(decoderModel: !model.Config.IsEncoder),
        };
        var scores = _task.Evaluate(context);
        if (!scores.TryGetValue(Split, out var split))
            throw new UllmeException($"Task {_task.Name} returned no scores for split '{Split}'.");
        return split.MainScore;
    }
}

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Ullme.MLNet.Evaluation.Learners;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Evaluation;

/// <summary>
/// Everything a task needs while it runs: the embedder (behind the run's cache), the instruction policy, the smoke
/// limit, the seed, progress and cancellation. Tasks embed only through <see cref="Embed"/>.
/// </summary>
public sealed class EvaluationContext
{
    /// <summary>A context over <paramref name="embedder"/> with a fresh embedding cache.</summary>
    public EvaluationContext(ITextEmbeddingSource embedder) : this(embedder, null)
    {
    }

    internal EvaluationContext(ITextEmbeddingSource embedder, EmbeddingCache? cache)
    {
        Embedder = embedder ?? throw new ArgumentNullException(nameof(embedder));
        Cache = cache ?? new EmbeddingCache();
    }

    public ITextEmbeddingSource Embedder { get; }

    internal EmbeddingCache Cache { get; }

    /// <summary>Instruction policy; null or disabled = no instructions.</summary>
    public InstructionOptions? Instructions { get; init; }

    /// <summary>Whether instructions are applied in this run (resolved from <see cref="InstructionMode.Auto"/>).</summary>
    public bool UseInstructions { get; init; }

    /// <summary>Smoke runs: at most this many items (pairs, queries, test texts, ...) per split.</summary>
    public int? Limit { get; init; }

    /// <summary>MTEB's seed (42) for undersampling, k-means and fold assignment.</summary>
    public int Seed { get; init; } = 42;

    public IProgress<EvaluationProgress>? Progress { get; init; }

    public CancellationToken CancellationToken { get; init; }

    /// <summary>Where <see cref="Warn"/> logs (besides recording the warning in the split's result).</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    private readonly Dictionary<(string Task, string Split), List<string>> _warnings = [];

    /// <summary>
    /// Flags a split whose score is degenerate (e.g. fewer rows than labels after <c>--limit</c>: accuracy near 0,
    /// V-measure near 1 whatever the model): logged as a warning and recorded under <c>warnings</c> in the split's
    /// result (<see cref="Results.SplitScores.Warnings"/>).
    /// </summary>
    public void Warn(EvaluationTask task, string split, string message)
    {
        Logger.LogWarning("{Task} {Split}: {Message}", task.Name, split, message);
        if (!_warnings.TryGetValue((task.Name, split), out var list)) _warnings[(task.Name, split)] = list = [];
        list.Add(message);
    }

    /// <summary>The warnings recorded for a split of a task.</summary>
    public IReadOnlyList<string> WarningsFor(EvaluationTask task, string split) =>
        _warnings.TryGetValue((task.Name, split), out var list) ? list : [];

    /// <summary>
    /// Warns when a split to be scored has fewer rows than the labels of the full split (<paramref name="labels"/>):
    /// most labels then have no text at all, and label-based scores say nothing about the model.
    /// </summary>
    internal void WarnIfFewerRowsThanLabels(EvaluationTask task, string split, string what, int rows, int labels)
    {
        if (rows < labels)
            Warn(task, split, $"{what} has {rows} rows but the task has {labels} labels, so most labels have no text and the " +
                $"{task.MainScore} is not meaningful{(Limit is int n ? $" (--limit {n}: raise it to at least {labels}, better several times that)" : "")}");
    }

    /// <summary>The learners of the Classification and Clustering tasks; by default ML.NET's, from the
    /// <c>Ullme.MLNet</c> package (<see cref="EvaluationLearners.Default"/>, looked up when first needed).</summary>
    public EvaluationLearners Learners
    {
        get => learners ?? EvaluationLearners.Default;
        init => learners = value;
    }

    private readonly EvaluationLearners? learners;

    /// <summary>Position of the current task in the run, for progress reports.</summary>
    internal int TaskIndex { get; set; }

    internal int TaskCount { get; set; } = 1;

    /// <summary>The instruction prefix a text of <paramref name="role"/> gets in <paramref name="task"/>, or null.</summary>
    public string? InstructionFor(EvaluationTask task, TextRole role) =>
        UseInstructions && Instructions is not null ? Instructions.PrefixFor(task, role) : null;

    /// <summary>Embeds texts of one role of a task through the cache, reporting progress under <paramref name="stage"/>.</summary>
    public float[][] Embed(EvaluationTask task, string stage, IReadOnlyList<string> texts, TextRole role)
    {
        CancellationToken.ThrowIfCancellationRequested();
        Report(task, stage, 0, texts.Count);
        IProgress<EngineProgress>? engineProgress = Progress is null
            ? null
            : new InlineProgress<EngineProgress>(p => Report(task, stage, p.Done, p.Total));
        var vectors = Cache.Embed(Embedder, texts, InstructionFor(task, role), engineProgress, CancellationToken);
        Report(task, stage, texts.Count, texts.Count);
        return vectors;
    }

    /// <summary>Reports a non-embedding step.</summary>
    public void Report(EvaluationTask task, string stage, long done, long total) =>
        Progress?.Report(new EvaluationProgress(task.Name, TaskIndex, TaskCount, stage, done, total));

    /// <summary>The first <see cref="Limit"/> items of a list (all when no limit).</summary>
    public IReadOnlyList<T> Take<T>(IReadOnlyList<T> items) =>
        Limit is int n && n < items.Count ? items.Take(n).ToArray() : items;

    /// <summary>
    /// <see cref="Limit"/> items spread evenly over the list (rows i * count / limit), for labelled data that is often
    /// sorted by label (Banking77 is): the first N rows would hold a single class.
    /// </summary>
    public IReadOnlyList<T> TakeSpread<T>(IReadOnlyList<T> items)
    {
        if (Limit is not int n || n >= items.Count) return items;
        var result = new T[n];
        for (int i = 0; i < n; i++) result[i] = items[(int)((long)i * items.Count / n)];
        return result;
    }

    /// <summary>Synchronous IProgress (Progress&lt;T&gt; posts to a context and may reorder or lag).</summary>
    private sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}

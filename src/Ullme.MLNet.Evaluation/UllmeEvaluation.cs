using System.Diagnostics;
using Ullme.MLNet.Evaluation.Results;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Evaluation;

/// <summary>Settings of an evaluation run (the C# twin of <c>ullme eval</c>).</summary>
public sealed record EvaluationOptions
{
    /// <summary>A model folder, or "default" for all-MiniLM-L6-v2.</summary>
    public string Model { get; init; } = UllmeModel.DefaultModelName;

    /// <summary>Built-in task names or generic specs (<c>sts:path</c>, ...); see <see cref="BuiltInTasks"/>.</summary>
    public IReadOnlyList<string> Tasks { get; init; } = [];

    /// <summary>Folder holding the task data (e.g. stsbenchmark/, sick/, scifact/ ...).</summary>
    public string DataDir { get; init; } = ".";

    /// <summary>Root of the MTEB results folder; null = do not write files.</summary>
    public string? OutputDir { get; init; }

    /// <summary>Smoke runs: at most this many items per split.</summary>
    public int? Limit { get; init; }

    /// <summary>Pooling; null = the model's default.</summary>
    public PoolingMode? Pooling { get; init; }

    /// <summary>Attention; null = the model's default.</summary>
    public AttentionMode? Attention { get; init; }

    /// <summary>Maximum tokens per text; null = the model's default (256 for all-MiniLM-L6-v2).</summary>
    public int? MaxLength { get; init; }

    public int BatchSize { get; init; } = 32;

    public bool Normalize { get; init; } = true;

    /// <summary>Evaluate the first N dimensions of each embedding (Matryoshka truncation, renormalised); null = all.</summary>
    public int? Dimensions { get; init; }

    public ModelLoadOptions? LoadOptions { get; init; }

    public InstructionOptions Instructions { get; init; } = new();

    /// <summary>Name for the results folder; null = the model's id.</summary>
    public string? ModelName { get; init; }

    /// <summary>Model revision for the results folder; MTEB's placeholder when unknown.</summary>
    public string Revision { get; init; } = "no_revision_available";

    /// <summary>Seed for undersampling, folds and k-means (MTEB: 42).</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Receives a warning for each degenerate split (fewer rows than labels or folds, e.g. after
    /// <see cref="Limit"/>); the warnings are also in the results (<see cref="SplitScores.Warnings"/>).</summary>
    public Microsoft.Extensions.Logging.ILogger? Logger { get; init; }
}

/// <summary>The outcome of a run: typed MTEB results, the summary and the files written.</summary>
public sealed class EvaluationReport
{
    internal EvaluationReport(string modelName, string revision, IReadOnlyList<TaskResult> results,
        IReadOnlyList<string> files, long cacheHits, long cacheMisses)
    {
        ModelName = modelName;
        Revision = revision;
        Results = results;
        Summary = new EvaluationSummary(modelName, results);
        Files = files;
        CacheHits = cacheHits;
        CacheMisses = cacheMisses;
    }

    public string ModelName { get; }

    public string Revision { get; }

    public IReadOnlyList<TaskResult> Results { get; }

    public EvaluationSummary Summary { get; }

    /// <summary>Result files written (model_meta.json, one per task, summary.md); empty without an output folder.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Texts served from the embedding cache / embedded by the model.</summary>
    public long CacheHits { get; }

    public long CacheMisses { get; }

    public TaskResult this[string task] =>
        Results.FirstOrDefault(r => string.Equals(r.TaskName, task, StringComparison.OrdinalIgnoreCase))
        ?? throw new KeyNotFoundException($"no result for task '{task}'");
}

/// <summary>
/// MTEB-style evaluation of an embedding model. <see cref="Run(EvaluationOptions, IProgress{EvaluationProgress}?, CancellationToken)"/>
/// reads and checks every task's files first, then loads the model, embeds through one
/// <see cref="EmbeddingEngine"/> behind an <see cref="EmbeddingCache"/> (a text shared by several tasks is embedded
/// once), scores each task and writes MTEB result files.
/// </summary>
public static class UllmeEvaluation
{
    public static EvaluationReport Run(EvaluationOptions options, IProgress<EvaluationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        if (options.Tasks.Count == 0) throw new UllmeException("no tasks given");
        var tasks = BuiltInTasks.Create(options.Tasks, options.DataDir);
        using var model = UllmeModel.Load(options.Model, options.LoadOptions);
        return Run(model, tasks, options, progress, cancellationToken);
    }

    /// <summary>Evaluates a loaded model on tasks (the model is not disposed).</summary>
    public static EvaluationReport Run(UllmeModel model, IReadOnlyList<EvaluationTask> tasks, EvaluationOptions options,
        IProgress<EvaluationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var engine = new EmbeddingEngine(model);
        var source = new EngineEmbeddingSource(engine, new EmbeddingOptions
        {
            Pooling = options.Pooling,
            Attention = options.Attention,
            MaxLength = options.MaxLength,
            BatchSize = options.BatchSize,
            Normalize = options.Normalize,
            Dimensions = options.Dimensions,
        });
        bool useInstructions = options.Instructions.IsEnabled(decoderModel: !model.Config.IsEncoder);
        var d = model.Defaults;
        var meta = new ModelMeta
        {
            Name = options.ModelName ?? model.ModelId,
            Revision = options.Revision,
            EmbedDim = options.Dimensions ?? model.EmbeddingDimension,
            NParameters = model.Backbone.parameters().Sum(p => p.numel()),
            MaxTokens = options.MaxLength ?? d.MaxLength,
            UseInstructions = useInstructions,
            Settings = new Dictionary<string, string>
            {
                ["pooling"] = (options.Pooling ?? d.Pooling).ToString(),
                ["attention"] = (options.Attention ?? d.Attention).ToString(),
                ["max_length"] = (options.MaxLength ?? d.MaxLength).ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["normalize"] = options.Normalize ? "true" : "false",
                ["dimensions"] = (options.Dimensions ?? model.EmbeddingDimension).ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["dtype"] = model.LoadOptions.DType.ToString(),
                ["source"] = model.SourceFolder,
            },
        };
        return Run(source, tasks, options, meta, useInstructions, progress, cancellationToken);
    }

    /// <summary>
    /// Evaluates any <see cref="ITextEmbeddingSource"/> (e.g. a fake in tests, or another engine). Instructions are
    /// used when <paramref name="useInstructions"/> is true.
    /// </summary>
    public static EvaluationReport Run(ITextEmbeddingSource source, IReadOnlyList<EvaluationTask> tasks,
        EvaluationOptions options, ModelMeta meta, bool useInstructions,
        IProgress<EvaluationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (tasks.Count == 0) throw new UllmeException("no tasks given");
        var duplicate = tasks.GroupBy(t => t.Name, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new UllmeException($"task '{duplicate.Key}' is listed twice");
        if (options.Limit is <= 0) throw new UllmeException($"--limit must be positive, got {options.Limit}");

        var context = new EvaluationContext(source)
        {
            Instructions = options.Instructions,
            UseInstructions = useInstructions,
            Limit = options.Limit,
            Seed = options.Seed,
            Progress = progress,
            CancellationToken = cancellationToken,
            TaskCount = tasks.Count,
            Logger = options.Logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance,
        };
        var results = new List<TaskResult>();
        for (int i = 0; i < tasks.Count; i++)
        {
            var task = tasks[i];
            context.TaskIndex = i;
            var clock = Stopwatch.StartNew();
            var scores = task.Evaluate(context);
            clock.Stop();
            var result = new TaskResult
            {
                TaskName = task.Name,
                DatasetRevision = task.DatasetRevision,
                EvaluationTime = clock.Elapsed.TotalSeconds,
                TaskType = task.Type,
            };
            foreach (var split in task.Splits)
                if (scores.TryGetValue(split, out var s))
                {
                    var warnings = context.WarningsFor(task, split);
                    if (warnings.Count > 0)
                        s.Details["warnings"] = new System.Text.Json.Nodes.JsonArray(warnings.Select(w => (System.Text.Json.Nodes.JsonNode?)w).ToArray());
                    result.Scores[split] = [s];
                }
            results.Add(result);
            context.Report(task, "done", 1, 1);
        }

        var files = new List<string>();
        var report0 = new EvaluationSummary(meta.Name, results);
        if (options.OutputDir is string root)
        {
            files.AddRange(MtebResultWriter.Write(root, meta, results));
            string summaryPath = Path.Combine(MtebResultWriter.ModelFolder(root, meta.Name, meta.Revision), "summary.md");
            MtebResultWriter.WriteAtomic(summaryPath, report0.ToMarkdown());
            files.Add(summaryPath);
        }
        return new EvaluationReport(meta.Name, meta.Revision, results, files, context.Cache.Hits, context.Cache.Misses);
    }
}

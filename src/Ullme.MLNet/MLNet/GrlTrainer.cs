using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// ML.NET estimator that fine-tunes an embedding model on (query, positive, hard negatives) rows and returns an
/// <see cref="UllmeEmbeddingTransformer"/> that embeds with the tuned weights. Built by
/// <c>mlContext.Transforms.UllmeGrlTrainer(...)</c>.
/// <para>
/// <see cref="Fit"/> reads the training rows through ML.NET cursors (<see cref="ReadExamples"/>), copies the base model
/// (every fit starts from the same base weights, so cross-validation folds and sweeps do not contaminate each other),
/// and trains the copy with the one training engine, <see cref="UllmeFineTuner"/> — objectives, LoRA, GradCache and
/// checkpointing are all its. LoRA adapters are merged into the weights at the end, so the transformer embeds and
/// saves (<c>mlContext.Model.Save</c>, <see cref="UllmeEmbeddingTransformer.SaveModelFolder"/>) plain Hugging Face
/// weights. Every optimizer step goes to the MLContext's log (channel "GrlTrainer"), its progress channel (metrics
/// Loss, Contrastive, LM, Preference, KL, Learning Rate; unit steps) and <see cref="GrlTrainerOptions.Progress"/>.
/// </para>
/// </summary>
public sealed class GrlTrainer : IEstimator<UllmeEmbeddingTransformer>
{
    /// <summary>Metric names of the ML.NET progress channel, in order.</summary>
    public static IReadOnlyList<string> ProgressMetricNames { get; } = ["Loss", "Contrastive", "LM", "Preference", "KL", "Learning Rate"];

    private readonly IHostEnvironment _env;
    private readonly IHost _host;
    private readonly GrlTrainerOptions _options;
    private readonly Lazy<UllmeModel> _baseModel;

    internal GrlTrainer(IHostEnvironment env, GrlTrainerOptions options, UllmeModel? model = null)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _env = env;
        _host = env.Register(nameof(GrlTrainer));
        _options = options.Clone();
        _options.Validate(modelIsLoaded: model is not null);
        _baseModel = ModelLoading.Deferred(model, () => ModelLoading.Load(_env, _options.DType, _options.Device, _options.Model, "UllmeGrlTrainer"));
    }

    /// <summary>A copy of the settings.</summary>
    public GrlTrainerOptions Options => _options.Clone();

    /// <summary>What the last <see cref="Fit"/> did (steps, per-step losses, throughput), or null before the first.</summary>
    public FineTuneResult? LastTrainingResult { get; private set; }

    /// <summary>The input shape plus the embedding column, after checking the training columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var byName = new Dictionary<string, SchemaShape.Column>(StringComparer.Ordinal);
        foreach (var c in inputSchema) byName[c.Name] = c;
        CheckShape(byName, _options.QueryColumnName, "query", allowVector: false);
        CheckShape(byName, _options.PositiveColumnName, "positive", allowVector: false);
        if (_options.NegativesColumnName is { } n) CheckShape(byName, n, "negatives", allowVector: true);
        if (_options.InstructionColumnName is { } i) CheckShape(byName, i, "instruction", allowVector: false);
        SchemaChecks.CheckInput(inputSchema, _options.EffectiveInputColumnName, "UllmeGrlTrainer");
        byName[_options.OutputColumnName] = MLNetInterop.VectorColumn(_options.OutputColumnName, NumberDataViewType.Single);
        return new SchemaShape(byName.Values);
    }

    private static void CheckShape(Dictionary<string, SchemaShape.Column> columns, string name, string role, bool allowVector)
    {
        if (!columns.TryGetValue(name, out var col))
            throw new UllmeException($"GrlTrainer: {role} column '{name}' not found; the data has columns {string.Join(", ", columns.Keys.Select(k => "'" + k + "'"))}.");
        bool ok = col.ItemType is TextDataViewType && (col.Kind == SchemaShape.Column.VectorKind.Scalar || allowVector);
        if (!ok)
        {
            string found = col.Kind == SchemaShape.Column.VectorKind.Scalar ? $"{col.ItemType}" : $"{col.Kind}<{col.ItemType}>";
            throw new UllmeException($"GrlTrainer: {role} column '{name}' must be {(allowVector ? "a vector of String or a String" : "of type String (text)")}, found {found}.");
        }
    }

    /// <summary>Fine-tunes a copy of the base model on <paramref name="input"/>'s rows and returns a transformer that
    /// embeds with the tuned weights. Exports the model folder too when <see cref="GrlTrainerOptions.ExportFolder"/> is set.</summary>
    /// <exception cref="UllmeException">Bad columns, empty texts (the message names the column and row), or bad settings.</exception>
    /// <exception cref="OperationCanceledException">The cancellation token fired, or <c>MLContext.CancelExecution()</c> was called.</exception>
    public UllmeEmbeddingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var examples = ReadExamples(input, _options);
        var o = _options;
        var fineTune = o.FineTune with { MergeLoraAtEnd = true };
        var baseModel = _baseModel.Value;
        using var ch = _host.Start(nameof(GrlTrainer));
        var weights = fineTune.EffectiveWeights;
        string parameters = fineTune.Lora is { } l ? string.Create(CultureInfo.InvariantCulture, $"LoRA r {l.Rank} α {l.Alpha}") : "full fine-tuning";
        ch.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
            $"GrlTrainer: fine-tuning '{baseModel.ModelId}' on {examples.Count} examples ({examples.Sum(e => e.Negatives.Count)} hard negatives); strategy {fineTune.Strategy}, λ = ({weights.Contrastive}, {weights.LanguageModel}, {weights.Preference}, {weights.Consistency}); {parameters}; lr {fineTune.Optimizer.LearningRate}, batch {fineTune.BatchSize}"));

        var defaults = new EmbeddingDefaults(fineTune.Pooling, fineTune.EmbeddingAttention, Normalize: true, fineTune.MaxLength);
        var tuned = baseModel.Clone(defaults);
        FineTuneResult result;
        try
        {
            using var pch = _host.StartProgressChannel(nameof(GrlTrainer));
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(o.CancellationToken);
            var reporter = new StepReporter(ch, pch, o.Progress, () =>
            {
                if (MLNetInterop.IsCanceled(_host)) linked.Cancel();
            });
            if (MLNetInterop.IsCanceled(_host)) linked.Cancel();
            result = new UllmeFineTuner(tuned, fineTune).Train(examples, reporter, linked.Token);
        }
        catch
        {
            tuned.Dispose();
            throw;
        }
        LastTrainingResult = result;
        ch.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
            $"GrlTrainer: {result.StepsDone} steps ({result.StepsSkipped} skipped) in {result.Elapsed.TotalSeconds:F1} s, {result.ExamplesPerSecond:F1} examples/s; final loss {result.FinalLosses?.Total:F4}"));

        var transformer = new UllmeEmbeddingTransformer(_env, o.ToEmbeddingOptions(), tuned);
        if (o.ExportFolder is { } folder)
        {
            transformer.SaveModelFolder(folder);
            ch.Info(MessageSensitivity.None, $"GrlTrainer: exported the tuned model to '{Path.GetFullPath(folder)}'");
        }
        return transformer;
    }

    /// <summary>
    /// Reads training examples from an <see cref="IDataView"/> with the column settings of <paramref name="options"/>:
    /// query and positive are non-empty texts; negatives a vector of text (empty items are skipped) or a single text
    /// (empty = none); the instruction an optional text (empty = none). Errors name the column, its type and the row.
    /// </summary>
    public static IReadOnlyList<TrainingExample> ReadExamples(IDataView data, GrlTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        var schema = data.Schema;
        var query = TextColumn(schema, options.QueryColumnName, "query");
        var positive = TextColumn(schema, options.PositiveColumnName, "positive");
        DataViewSchema.Column? negatives = null;
        if (options.NegativesColumnName is { } nName)
        {
            negatives = schema.GetColumnOrNull(nName)
                ?? throw new UllmeException($"GrlTrainer: negatives column '{nName}' not found; the data has columns {Describe(schema)}. Set NegativesColumnName = null if the data has no hard negatives.");
            bool ok = negatives.Value.Type is TextDataViewType || (negatives.Value.Type is VectorDataViewType v && v.ItemType is TextDataViewType);
            if (!ok) throw new UllmeException($"GrlTrainer: negatives column '{nName}' must be a vector of String or a String, found {negatives.Value.Type}.");
        }
        var instruction = options.InstructionColumnName is { } iName ? TextColumn(schema, iName, "instruction") : (DataViewSchema.Column?)null;

        var active = new List<DataViewSchema.Column> { query, positive };
        if (negatives is { } nc) active.Add(nc);
        if (instruction is { } ic) active.Add(ic);
        var examples = new List<TrainingExample>();
        using var cursor = data.GetRowCursor(active);
        var getQuery = cursor.GetGetter<ReadOnlyMemory<char>>(query);
        var getPositive = cursor.GetGetter<ReadOnlyMemory<char>>(positive);
        ValueGetter<ReadOnlyMemory<char>>? getNegative = negatives is { Type: TextDataViewType } ns ? cursor.GetGetter<ReadOnlyMemory<char>>(ns) : null;
        ValueGetter<VBuffer<ReadOnlyMemory<char>>>? getNegatives = negatives is { Type: VectorDataViewType } nv ? cursor.GetGetter<VBuffer<ReadOnlyMemory<char>>>(nv) : null;
        ValueGetter<ReadOnlyMemory<char>>? getInstruction = instruction is { } ins ? cursor.GetGetter<ReadOnlyMemory<char>>(ins) : null;
        ReadOnlyMemory<char> q = default, p = default, n = default, i = default;
        VBuffer<ReadOnlyMemory<char>> ns2 = default;
        long row = -1;
        while (cursor.MoveNext())
        {
            row++;
            getQuery(ref q);
            getPositive(ref p);
            if (q.Span.IsWhiteSpace()) throw new UllmeException($"GrlTrainer: row {row} has an empty query (column '{query.Name}').");
            if (p.Span.IsWhiteSpace()) throw new UllmeException($"GrlTrainer: row {row} has an empty positive (column '{positive.Name}').");
            var negs = new List<string>();
            if (getNegative is not null)
            {
                getNegative(ref n);
                if (!n.Span.IsWhiteSpace()) negs.Add(n.ToString());
            }
            else if (getNegatives is not null)
            {
                getNegatives(ref ns2);
                foreach (var item in ns2.DenseValues())
                    if (!item.Span.IsWhiteSpace()) negs.Add(item.ToString());
            }
            string? instr = null;
            if (getInstruction is not null)
            {
                getInstruction(ref i);
                if (!i.Span.IsWhiteSpace()) instr = i.ToString();
            }
            examples.Add(new TrainingExample(q.ToString(), p.ToString(), negs, instr));
        }
        if (examples.Count == 0) throw new UllmeException("GrlTrainer: the training data has no rows.");
        return examples;
    }

    private static DataViewSchema.Column TextColumn(DataViewSchema schema, string name, string role)
    {
        var col = schema.GetColumnOrNull(name)
            ?? throw new UllmeException($"GrlTrainer: {role} column '{name}' not found; the data has columns {Describe(schema)}.");
        if (col.Type is not TextDataViewType)
            throw new UllmeException($"GrlTrainer: {role} column '{name}' must be of type String (text), found {col.Type}.");
        return col;
    }

    private static string Describe(DataViewSchema schema) =>
        string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"));

    /// <summary>Fans every optimizer step out to the ML.NET channel and progress channel and the caller's
    /// <see cref="IProgress{T}"/> (synchronously, on the training thread).</summary>
    private sealed class StepReporter : IProgress<TrainingProgress>
    {
        private readonly IChannel _channel;
        private readonly IProgressChannel _progressChannel;
        private readonly IProgress<TrainingProgress>? _user;
        private readonly Action _afterStep;
        private TrainingProgress? _last;

        public StepReporter(IChannel channel, IProgressChannel progressChannel, IProgress<TrainingProgress>? user, Action afterStep)
        {
            _channel = channel;
            _progressChannel = progressChannel;
            _user = user;
            _afterStep = afterStep;
            _progressChannel.SetHeader(new ProgressHeader([.. ProgressMetricNames], ["steps"]), entry =>
            {
                var last = Volatile.Read(ref _last);
                if (last is null) return;
                entry.SetProgress(0, last.Step, last.TotalSteps);
                var values = Metrics(last);
                for (int k = 0; k < values.Length; k++)
                    if (values[k] is { } v) entry.SetMetric(k, v);
            });
        }

        private static double?[] Metrics(TrainingProgress p) =>
            [p.Losses.Total, p.Losses.Contrastive, p.Losses.LanguageModel, p.Losses.Preference, p.Losses.Consistency, p.LearningRate];

        public void Report(TrainingProgress value)
        {
            Volatile.Write(ref _last, value);
            // Metrics, then the progress unit (step) and its limit (total steps).
            _progressChannel.Checkpoint([.. Metrics(value), value.Step, value.TotalSteps]);
            var l = value.Losses;
            var terms = l.ToDictionary().Where(kv => kv.Key != "total").Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value:F4}"));
            _channel.Info(MessageSensitivity.None, string.Create(CultureInfo.InvariantCulture,
                $"GrlTrainer: step {value.Step}/{value.TotalSteps} epoch {value.Epoch} loss {l.Total:F4} ({string.Join(", ", terms)}) lr {value.LearningRate:G4} grad-norm {value.GradientNorm:G4}{(value.Applied ? "" : " skipped: " + value.Message)}"));
            _user?.Report(value);
            _afterStep();
        }
    }
}

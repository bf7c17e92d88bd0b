using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The fitted embedding transform: appends a <c>Vector&lt;Single, D&gt;</c> column holding the embedding of a text
/// column, computed by the shared <see cref="EmbeddingEngine"/>.
///
/// Execution is lazy and streaming: <see cref="UllmeTextTransformer.Transform"/> returns a view whose cursors read a window of rows
/// ahead from the input cursor, embed the window in one engine call (the engine sorts it by length and batches it, so
/// activation memory is bounded by <see cref="UllmeEmbeddingOptions.BatchSize"/>), and hand rows out in input order.
/// Cursors that do not ask for the output column pass rows through without embedding anything.
/// Thread-safe: any number of cursors, <see cref="PredictionEngine{TSrc,TDst}"/>s and threads may share one instance.
/// Saved with <c>mlContext.Model.Save</c> as a self-contained entry (config, tokenizer, safetensors weights, options).
/// <para>Deliberately not <see cref="IDisposable"/>: ML.NET's <see cref="PredictionEngine{TSrc,TDst}"/> disposes the
/// transformer it was created from when the engine is disposed, which would pull the model from under every other
/// engine sharing it. The model's tensors are freed when the transformer (and its estimator) become unreachable.</para>
/// </summary>
public sealed class UllmeEmbeddingTransformer : UllmeTextTransformer
{
    /// <summary>The catalog method's name: channel name and prefix of error messages.</summary>
    internal const string Name = "UllmeEmbed";

    private readonly UllmeEmbeddingOptions _options;
    private readonly EmbeddingOptions _embeddingOptions;
    private long _rowsEmbedded;
    private long _engineCalls;

    internal UllmeEmbeddingTransformer(IHostEnvironment env, UllmeEmbeddingOptions options, UllmeModel model, string? modelId = null)
        : base(env, Name, model, modelId)
    {
        _options = options.Clone();
        _options.Validate(modelIsLoaded: true);
        _embeddingOptions = _options.ToEmbeddingOptions();
        EmbeddingDimension = model.EmbeddingDimension;
    }

    /// <summary>D, the size of the output vector.</summary>
    public int EmbeddingDimension { get; }

    /// <summary>A copy of the settings.</summary>
    public UllmeEmbeddingOptions Options => _options.Clone();

    public string InputColumnName => _options.InputColumnName;
    public string OutputColumnName => _options.OutputColumnName;

    /// <summary>
    /// The same embedding (shared model, same pooling, attention, max length, instruction and batch size) over other
    /// columns — e.g. to embed a dev set's <c>Text</c> column with a transformer <see cref="GrlTrainer"/> returned for
    /// its <c>Query</c> column: <c>mlContext.Data.Cache(tuned.WithColumns("Features", "Text").Transform(dev))</c>.
    /// </summary>
    public UllmeEmbeddingTransformer WithColumns(string outputColumnName, string inputColumnName)
    {
        var o = _options.Clone();
        var d = EffectiveDefaults;
        o.OutputColumnName = outputColumnName;
        o.InputColumnName = inputColumnName;
        (o.Pooling, o.Attention, o.MaxLength) = (d.Pooling, d.Attention, d.MaxLength);
        return new UllmeEmbeddingTransformer(Host, o, Model, ModelId);
    }

    /// <summary>Rows embedded so far by this transformer, across all cursors and rows (a hook for tests and diagnostics).</summary>
    internal long RowsEmbedded => Interlocked.Read(ref _rowsEmbedded);

    /// <summary>Engine calls made so far (one per read-ahead window or per predicted row).</summary>
    internal long EngineCalls => Interlocked.Read(ref _engineCalls);

    /// <summary>The output type: Vector&lt;Single, D&gt;.</summary>
    public VectorDataViewType OutputType => new(NumberDataViewType.Single, EmbeddingDimension);

    private protected override IReadOnlyList<string> InputColumnNames => [_options.InputColumnName];
    private protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns => [(_options.OutputColumnName, OutputType)];
    private protected override int ReadAheadRows => _options.EffectiveReadAhead;
    private protected override PackageKind Kind => PackageKind.Embedding;

    private protected override void Describe(UllmeModelPackage.Manifest manifest)
    {
        manifest.EmbeddingDimension = EmbeddingDimension;
        manifest.Options = Options;
    }

    private protected override float[][]?[] ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow) =>
        [EmbedWindow(texts[0], channel, firstRow)];

    /// <summary>The embedding settings this transformer applies, with the model's defaults filled in.</summary>
    public EmbeddingDefaults EffectiveDefaults
    {
        get
        {
            var d = Model.Defaults;
            return new EmbeddingDefaults(_options.Pooling ?? d.Pooling, _options.Attention ?? d.Attention, _options.Normalize, _options.MaxLength ?? d.MaxLength);
        }
    }

    /// <summary>
    /// Writes the model as a self-contained Hugging Face folder (config.json, model.safetensors with the current —
    /// e.g. fine-tuned and merged — weights in their dtype, tokenizer files) in the sentence-transformers layout
    /// (modules.json, 1_Pooling/config.json, sentence_bert_config.json, config_sentence_transformers.json) plus
    /// ullme.json, all describing this transformer's pooling, attention, normalisation and max length.
    /// <c>UllmeModel.Load(folder)</c> reads it back to identical embeddings; Python's
    /// <c>SentenceTransformer(folder)</c> loads it too (causal attention only: sentence-transformers has no
    /// bidirectional switch for decoders).
    /// </summary>
    public void SaveModelFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        Model.SaveFolder(folder, EffectiveDefaults);
    }

    /// <summary>
    /// Embeds one window of texts through the engine (cancellation is checked by the base class before each
    /// window). Rows come back in the order given.
    /// </summary>
    internal float[][] EmbedWindow(IReadOnlyList<string> texts, IChannel? channel, long firstRow)
    {
        var sw = Stopwatch.StartNew();
        var detailed = Engine.EmbedDetailed(texts, _embeddingOptions);
        float[][] result = detailed.Embeddings;
        long tokens = detailed.TokenCount;
        if (result.Length != texts.Count)
            throw new InvalidOperationException($"The engine returned {result.Length} embeddings for {texts.Count} texts.");
        Interlocked.Add(ref _rowsEmbedded, texts.Count);
        Interlocked.Increment(ref _engineCalls);
        channel?.Trace(MessageSensitivity.None,
            $"{Name}: embedded rows {firstRow}..{firstRow + texts.Count - 1} ({tokens} tokens) in {sw.ElapsedMilliseconds} ms");
        return result;
    }

    /// <summary>Re-creates a saved transformer from its extracted model folder (see <see cref="UllmeModelPackage"/>).</summary>
    internal static UllmeEmbeddingTransformer LoadFromFolder(IHostEnvironment env, UllmeEmbeddingOptions options, string folder, string modelId) =>
        new(env, options, ModelLoading.Load(env, options.DType, options.Device, folder, Name, options.Backend), modelId);
}

/// <summary>Input checks shared by the Ullme estimators and transformers; <c>transform</c> names the catalog method in errors.</summary>
internal static class SchemaChecks
{
    public static void CheckInput(DataViewSchema schema, string inputColumnName, string transform)
    {
        var col = schema.GetColumnOrNull(inputColumnName);
        if (col is null)
            throw new UllmeException($"{transform}: input column '{inputColumnName}' not found; the data has columns {Describe(schema)}.");
        if (col.Value.Type is not TextDataViewType)
            throw new UllmeException($"{transform}: input column '{inputColumnName}' must be of type String (text), found {col.Value.Type}.");
    }

    public static void CheckInput(SchemaShape shape, string inputColumnName, string transform)
    {
        var matches = shape.Where(c => c.Name == inputColumnName).ToList();
        if (matches.Count == 0)
            throw new UllmeException($"{transform}: input column '{inputColumnName}' not found; the data has columns {string.Join(", ", shape.Select(c => "'" + c.Name + "'"))}.");
        var col = matches[^1];
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not TextDataViewType)
        {
            string found = col.Kind == SchemaShape.Column.VectorKind.Scalar ? $"{col.ItemType}" : $"{col.Kind}<{col.ItemType}>";
            throw new UllmeException($"{transform}: input column '{inputColumnName}' must be of type String (text), found {found}.");
        }
    }

    private static string Describe(DataViewSchema schema) =>
        string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"));
}

/// <summary>Loads the model a transform names, on the device its options or the MLContext ask for, logging through
/// the environment's channels.</summary>
internal static class ModelLoading
{
    public static UllmeModel Load(IHostEnvironment env, ModelDType dtype, string? explicitDevice, string folderOrDefault, string transform,
        InferenceBackend backend = InferenceBackend.Torch)
    {
        var host = env.Register(transform);
        using var ch = host.Start(transform);
        var settings = MLNetInterop.GetSettings(env);
        string device = DeviceSpec.Resolve(explicitDevice, settings.GpuDeviceId, settings.FallbackToCpu,
            () => TorchSharp.torch.cuda.is_available(), msg => ch.Warning(MessageSensitivity.None, msg));
        var sw = Stopwatch.StartNew();
        var model = UllmeModel.Load(folderOrDefault, new ModelLoadOptions { DType = dtype, Device = device, Backend = backend });
        ch.Info(MessageSensitivity.None,
            $"{transform}: loaded model '{model.ModelId}' ({model.EmbeddingDimension} dimensions, {dtype}, {device}, {OptionNames.Backend.ToName(model.Backend)}) in {sw.ElapsedMilliseconds} ms");
        return model;
    }

    /// <summary>The model an estimator works with: <paramref name="model"/> when one was given, else the one
    /// <paramref name="load"/> loads on first use (once, even when several threads fit at the same time).</summary>
    public static Lazy<UllmeModel> Deferred(UllmeModel? model, Func<UllmeModel> load) =>
        model is not null ? new Lazy<UllmeModel>(model) : new Lazy<UllmeModel>(load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Checks a model option without loading anything: "default", or a folder holding config.json.</summary>
    public static void ValidatePath(string? model, string option)
    {
        if (string.IsNullOrWhiteSpace(model))
            throw new UllmeException($"{option} is empty: give a model folder or \"{UllmeModel.DefaultModelName}\".");
        if (string.Equals(model, UllmeModel.DefaultModelName, StringComparison.Ordinal)) return;
        string folder = File.Exists(model) ? Path.GetDirectoryName(Path.GetFullPath(model))! : model;
        if (!Directory.Exists(folder))
            throw new UllmeException($"{option}: folder '{model}' does not exist (give a Hugging Face model folder or \"{UllmeModel.DefaultModelName}\").");
        if (!File.Exists(Path.Combine(folder, "config.json")))
            throw new UllmeException($"{option}: folder '{model}' has no config.json, so it is not a Hugging Face model folder.");
    }
}

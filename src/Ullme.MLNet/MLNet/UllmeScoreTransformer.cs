using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The fitted scoring transform: appends Single relevance column(s) for a (query, passage) pair of text columns,
/// computed by <see cref="RelevanceScorer"/> over the shared <see cref="EmbeddingEngine"/>:
/// <list type="bullet">
/// <item>generation: mean (or sum) log-probability of the passage after the prompt built from the query, causal,
/// exactly the ids training scores (<see cref="GenerationPrompt"/>);</item>
/// <item>representation: cosine of the query and passage embeddings.</item>
/// </list>
/// Like <see cref="UllmeEmbeddingTransformer"/>: lazy, streaming cursors that read a window of rows ahead and score it
/// in one batched call (only the columns a cursor asks for are computed), row-at-a-time prediction for
/// <see cref="PredictionEngine{TSrc,TDst}"/>, thread-safe, saved with <c>mlContext.Model.Save</c> as a self-contained
/// entry (weights, tokenizer, options) that loads in a fresh process. Deliberately not <see cref="IDisposable"/>, for
/// the reason given on <see cref="UllmeEmbeddingTransformer"/>.
/// </summary>
public sealed class UllmeScoreTransformer : ITransformer, ITextWindowMapper, IPackagedTransformer
{
    internal const string Name = "UllmeScore";

    private readonly IHost _host;
    private readonly UllmeScoreOptions _options;
    private readonly RelevanceScorer _scorer;
    private readonly (string Name, DataViewType Type)[] _outputs;
    private TemporaryFolder? _temporaryFolder;
    private long _rowsScored;

    internal UllmeScoreTransformer(IHostEnvironment env, UllmeScoreOptions options, UllmeModel model, string? modelId = null)
    {
        ArgumentNullException.ThrowIfNull(env);
        _host = env.Register(nameof(UllmeScoreTransformer));
        _options = options.Clone();
        _options.Validate(modelIsLoaded: true);
        _scorer = new RelevanceScorer(new EmbeddingEngine(model, new ChannelLogger(_host, Name)), _options.ToRelevanceOptions());
        if (_options.NeedsGeneration && !_scorer.SupportsGeneration)
            throw new UllmeException($"{Name}: mode {_options.Mode} needs generation scores, but model '{model.ModelId}' ({model.Config.ModelType}) " +
                $"is an encoder without a language-model head. Use Mode = {nameof(UllmeScoreMode.Representation)} with this model.");
        ModelId = modelId ?? model.ModelId;
        _outputs = Outputs(_options).Select(o => (o.Name, (DataViewType)NumberDataViewType.Single)).ToArray();
    }

    /// <summary>Names and meanings of the output columns, in order.</summary>
    internal static IReadOnlyList<(string Name, bool Generation)> Outputs(UllmeScoreOptions o) => o.Mode switch
    {
        UllmeScoreMode.Generation => [(o.OutputColumnName, true)],
        UllmeScoreMode.Representation => [(o.OutputColumnName, false)],
        _ => [(o.OutputColumnName, true), (o.EffectiveRepresentationColumn, false)],
    };

    /// <summary>The loaded model (shared with the estimator that produced this transformer).</summary>
    public UllmeModel Model => _scorer.Engine.Model;

    /// <summary>The model's name (folder name or Hugging Face id), kept across save and load.</summary>
    public string ModelId { get; }

    /// <summary>A copy of the settings.</summary>
    public UllmeScoreOptions Options => _options.Clone();

    /// <summary>Always true: each output row depends on its input row only.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>Rows scored so far (a hook for tests and diagnostics).</summary>
    internal long RowsScored => Interlocked.Read(ref _rowsScored);

    /// <summary>The input schema plus the Single score column(s) (hiding input columns of the same names).</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.CheckInput(inputSchema, _options.QueryColumnName, Name);
        SchemaChecks.CheckInput(inputSchema, _options.PassageColumnName, Name);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var (name, type) in _outputs) builder.AddColumn(name, type);
        return builder.ToSchema();
    }

    /// <summary>A lazy view over <paramref name="input"/>: nothing is read or scored until a cursor moves.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new TextWindowDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>Row-at-a-time mapping, as used by <see cref="PredictionEngine{TSrc,TDst}"/>.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new TextWindowRowMapper(this, inputSchema, GetOutputSchema(inputSchema));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => UllmeModelPackage.Save(ctx, this);

    PackageKind IPackagedTransformer.Kind => PackageKind.Score;

    void IPackagedTransformer.Describe(UllmeModelPackage.Manifest manifest) => manifest.ScoreOptions = Options;

    void IPackagedTransformer.AttachTemporaryFolder(string folder) => _temporaryFolder = new TemporaryFolder(folder);

    IHost ITextWindowMapper.Host => _host;
    string ITextWindowMapper.ChannelName => Name;
    IReadOnlyList<string> ITextWindowMapper.InputColumnNames => [_options.QueryColumnName, _options.PassageColumnName];
    IReadOnlyList<(string Name, DataViewType Type)> ITextWindowMapper.OutputColumns => _outputs;
    int ITextWindowMapper.ReadAheadRows => _options.EffectiveReadAhead;

    /// <summary>Scores one window of (query, passage) rows; only the needed outputs are computed. Honours
    /// <c>MLContext.CancelExecution()</c> before the window starts.</summary>
    float[][]?[] ITextWindowMapper.ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow)
    {
        if (MLNetInterop.IsCanceled(_host))
            throw new OperationCanceledException("ML.NET execution was canceled (MLContext.CancelExecution).");
        var sw = Stopwatch.StartNew();
        var pairs = new QueryPassage[texts[0].Count];
        for (int i = 0; i < pairs.Length; i++) pairs[i] = new QueryPassage(texts[0][i], texts[1][i]);
        var kinds = Outputs(_options);
        var result = new float[][]?[kinds.Count];
        for (int k = 0; k < kinds.Count; k++)
        {
            if (!needed[k]) continue;
            float[] scores = kinds[k].Generation ? _scorer.Generation(pairs) : _scorer.Representation(pairs);
            result[k] = scores.Select(s => new[] { s }).ToArray();
        }
        Interlocked.Add(ref _rowsScored, pairs.Length);
        channel?.Trace(MessageSensitivity.None, $"{Name}: scored rows {firstRow}..{firstRow + pairs.Length - 1} in {sw.ElapsedMilliseconds} ms");
        return result;
    }

    /// <summary>Re-creates a saved transformer from its extracted model folder (see <see cref="UllmeModelPackage"/>).</summary>
    internal static UllmeScoreTransformer LoadFromFolder(IHostEnvironment env, UllmeScoreOptions options, string folder, string modelId)
    {
        var model = ModelLoading.Load(env, options.DType, options.Device, folder, Name);
        return new UllmeScoreTransformer(env, options, model, modelId);
    }
}

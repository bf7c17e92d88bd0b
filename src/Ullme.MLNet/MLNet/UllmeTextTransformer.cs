using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// What the fitted Ullme transforms (<see cref="UllmeEmbeddingTransformer"/>, <see cref="UllmeScoreTransformer"/>)
/// share: one loaded model behind the shared <see cref="EmbeddingEngine"/>, text columns in, Single columns appended.
/// This class is the whole <see cref="ITransformer"/> surface (schema, lazy <see cref="Transform"/>, row-at-a-time
/// mapping for <see cref="PredictionEngine{TSrc,TDst}"/>, saving into a model zip through
/// <see cref="UllmeModelPackage"/>); a concrete transform only says which columns it reads and writes, how it computes
/// a window of rows, and what it records in the saved manifest.
/// <para>Not derivable outside this library (the constructor is not public).</para>
/// </summary>
public abstract class UllmeTextTransformer : ITransformer, ITextWindowMapper, IPackagedTransformer
{
    private readonly IHost _host;
    private TemporaryFolder? _temporaryFolder;

    /// <param name="env">The ML.NET environment; the host is registered under the concrete type's name.</param>
    /// <param name="channelName">The catalog method's name ("UllmeEmbed", "UllmeScore"): channel, log and error prefix.</param>
    /// <param name="model">The loaded model, shared with the estimator.</param>
    /// <param name="modelId">The model's name to keep (after a load from a zip); null = the model's own.</param>
    private protected UllmeTextTransformer(IHostEnvironment env, string channelName, UllmeModel model, string? modelId)
    {
        ArgumentNullException.ThrowIfNull(env);
        _host = env.Register(GetType().Name);
        ChannelName = channelName;
        Engine = new EmbeddingEngine(model, new ChannelLogger(_host, channelName));
        ModelId = modelId ?? model.ModelId;
    }

    /// <summary>The loaded model (shared with the estimator that produced this transformer).</summary>
    public UllmeModel Model => Engine.Model;

    /// <summary>The model's name (folder name or Hugging Face id), kept across save and load.</summary>
    public string ModelId { get; }

    /// <summary>Always true: each output row depends on its input row only.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The engine every window goes through.</summary>
    private protected EmbeddingEngine Engine { get; }

    /// <summary>The ML.NET host of this transformer (channels, cancellation).</summary>
    private protected IHost Host => _host;

    /// <summary>The catalog method's name: channel name and prefix of error messages.</summary>
    private protected string ChannelName { get; }

    /// <summary>The text columns read, in the order <see cref="ComputeWindow"/> receives them.</summary>
    private protected abstract IReadOnlyList<string> InputColumnNames { get; }

    /// <summary>The appended columns, in order.</summary>
    private protected abstract IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <summary>Rows per <see cref="ComputeWindow"/> call in a cursor.</summary>
    private protected abstract int ReadAheadRows { get; }

    /// <summary>Which loader reads this transformer back from a model zip.</summary>
    private protected abstract PackageKind Kind { get; }

    /// <summary>Computes the needed outputs of one window (see <see cref="ITextWindowMapper.ComputeWindow"/>);
    /// cancellation is already checked.</summary>
    private protected abstract float[][]?[] ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow);

    /// <summary>Fills the transformer-specific members of the saved manifest (options, dimension).</summary>
    private protected abstract void Describe(UllmeModelPackage.Manifest manifest);

    /// <summary>The input schema plus the output column(s) (hiding input columns of the same names).</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        foreach (string name in InputColumnNames) SchemaChecks.CheckInput(inputSchema, name, ChannelName);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var (name, type) in OutputColumns) builder.AddColumn(name, type);
        return builder.ToSchema();
    }

    /// <summary>A lazy view over <paramref name="input"/>: nothing is read or computed until a cursor moves.</summary>
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

    PackageKind IPackagedTransformer.Kind => Kind;

    void IPackagedTransformer.Describe(UllmeModelPackage.Manifest manifest) => Describe(manifest);

    void IPackagedTransformer.AttachTemporaryFolder(TemporaryFolder folder) => _temporaryFolder = folder;

    IHost ITextWindowMapper.Host => _host;
    string ITextWindowMapper.ChannelName => ChannelName;
    IReadOnlyList<string> ITextWindowMapper.InputColumnNames => InputColumnNames;
    IReadOnlyList<(string Name, DataViewType Type)> ITextWindowMapper.OutputColumns => OutputColumns;
    int ITextWindowMapper.ReadAheadRows => ReadAheadRows;

    /// <summary>Honours <c>MLContext.CancelExecution()</c> before the window starts, then computes it.</summary>
    float[][]?[] ITextWindowMapper.ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow)
    {
        if (MLNetInterop.IsCanceled(_host))
            throw new OperationCanceledException("ML.NET execution was canceled (MLContext.CancelExecution).");
        return ComputeWindow(texts, needed, channel, firstRow);
    }
}

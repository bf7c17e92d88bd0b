using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// What the Ullme estimators (<see cref="UllmeEmbeddingEstimator"/>, <see cref="UllmeScoreEstimator"/>) share. Neither
/// needs training, so <see cref="Fit"/> only checks the text columns and hands out a transformer; it never reads rows (a
/// schema-only view is enough). The settings are copied and validated when the estimator is built; the model is loaded
/// once, on the first <see cref="Fit"/>, and shared by every transformer the estimator produces (cross-validation fits
/// once per fold).
/// <para>Not derivable outside this library (the constructor is not public).</para>
/// </summary>
/// <typeparam name="TOptions">The settings (<see cref="UllmeEmbeddingOptions"/>, <see cref="UllmeScoreOptions"/>).</typeparam>
/// <typeparam name="TTransformer">The fitted transformer.</typeparam>
public abstract class UllmeTextEstimator<TOptions, TTransformer> : IEstimator<TTransformer>
    where TOptions : class
    where TTransformer : UllmeTextTransformer
{
    private readonly IHostEnvironment _env;
    private readonly string _transformName;
    private readonly Lazy<UllmeModel> _model;

    /// <param name="env">The ML.NET environment.</param>
    /// <param name="transformName">The catalog method's name ("UllmeEmbed", "UllmeScore"), the prefix of error messages.</param>
    /// <param name="options">The caller's settings: validated now, and copied so later edits do not reach the estimator.</param>
    /// <param name="model">An already loaded model to use, or null to load the one the options name on the first fit.</param>
    private protected UllmeTextEstimator(IHostEnvironment env, string transformName, IModelOptions<TOptions> options, UllmeModel? model)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _env = env;
        _transformName = transformName;
        Settings = options.Clone();
        options.Validate(modelIsLoaded: model is not null);
        var (dtype, device, folder) = (options.DType, options.Device, options.Model);
        var backend = options is UllmeEmbeddingOptions embedding ? embedding.Backend : InferenceBackend.Torch;
        _model = ModelLoading.Deferred(model, () => ModelLoading.Load(env, dtype, device, folder, transformName, backend));
    }

    /// <summary>The estimator's own (validated) copy of the settings; never handed out.</summary>
    private protected TOptions Settings { get; }

    /// <summary>The text columns the transform reads.</summary>
    private protected abstract IReadOnlyList<string> InputColumnNames { get; }

    /// <summary>The columns the transform appends.</summary>
    private protected abstract IEnumerable<SchemaShape.Column> OutputColumns { get; }

    /// <summary>The transformer over the loaded model.</summary>
    private protected abstract TTransformer CreateTransformer(IHostEnvironment env, UllmeModel model);

    /// <summary>The input shape plus the output column(s), after checking the text columns.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        foreach (string name in InputColumnNames) SchemaChecks.CheckInput(inputSchema, name, _transformName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var column in OutputColumns) columns[column.Name] = column;
        return new SchemaShape(columns.Values);
    }

    /// <summary>Checks <paramref name="input"/>'s schema and returns the transformer; no rows are read.</summary>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        foreach (string name in InputColumnNames) SchemaChecks.CheckInput(input.Schema, name, _transformName);
        return CreateTransformer(_env, _model.Value);
    }
}

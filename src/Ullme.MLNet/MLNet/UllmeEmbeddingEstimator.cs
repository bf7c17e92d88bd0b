using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The estimator behind <c>mlContext.Transforms.UllmeEmbed(...)</c>. Embedding needs no training, so
/// <see cref="Fit"/> only checks the schema and hands out a transformer; it never reads rows (a schema-only view is
/// enough). The model is loaded once, on the first <see cref="Fit"/>, and shared by every transformer this estimator
/// produces (cross-validation fits once per fold).
/// </summary>
public sealed class UllmeEmbeddingEstimator : IEstimator<UllmeEmbeddingTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly UllmeEmbeddingOptions _options;
    private readonly Lazy<UllmeModel> _model;

    internal UllmeEmbeddingEstimator(IHostEnvironment env, UllmeEmbeddingOptions options, UllmeModel? model = null)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _env = env;
        _options = options.Clone();
        _options.Validate(modelIsLoaded: model is not null);
        _model = model is not null
            ? new Lazy<UllmeModel>(model)
            : new Lazy<UllmeModel>(() => ModelLoading.Load(_env, _options.DType, _options.Device, _options.Model, "UllmeEmbed"), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>A copy of the settings.</summary>
    public UllmeEmbeddingOptions Options => _options.Clone();

    /// <summary>The input shape plus the embedding column (a known-size vector of Single).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.CheckInput(inputSchema, _options.InputColumnName, "UllmeEmbed");
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.OutputColumnName] = MLNetInterop.VectorColumn(_options.OutputColumnName, NumberDataViewType.Single);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Checks <paramref name="input"/>'s schema and returns the transformer; no rows are read.</summary>
    public UllmeEmbeddingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.CheckInput(input.Schema, _options.InputColumnName, "UllmeEmbed");
        return new UllmeEmbeddingTransformer(_env, _options, _model.Value);
    }
}

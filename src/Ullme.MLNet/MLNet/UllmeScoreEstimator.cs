using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The estimator behind <c>mlContext.Transforms.UllmeScore(...)</c>. Scoring needs no training: <see cref="Fit"/>
/// checks the schema (and that the model can do what the mode asks) and hands out a transformer without reading rows.
/// The model is loaded once, on the first <see cref="Fit"/>, and shared by every transformer of this estimator.
/// </summary>
public sealed class UllmeScoreEstimator : IEstimator<UllmeScoreTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly UllmeScoreOptions _options;
    private readonly Lazy<UllmeModel> _model;

    internal UllmeScoreEstimator(IHostEnvironment env, UllmeScoreOptions options, UllmeModel? model = null)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _env = env;
        _options = options.Clone();
        _options.Validate(modelIsLoaded: model is not null);
        _model = model is not null
            ? new Lazy<UllmeModel>(model)
            : new Lazy<UllmeModel>(() => ModelLoading.Load(_env, _options.DType, _options.Device, _options.Model, UllmeScoreTransformer.Name), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>A copy of the settings.</summary>
    public UllmeScoreOptions Options => _options.Clone();

    /// <summary>The input shape plus the Single score column(s).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        SchemaChecks.CheckInput(inputSchema, _options.QueryColumnName, UllmeScoreTransformer.Name);
        SchemaChecks.CheckInput(inputSchema, _options.PassageColumnName, UllmeScoreTransformer.Name);
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var (name, _) in UllmeScoreTransformer.Outputs(_options))
            columns[name] = MLNetInterop.ScalarColumn(name, NumberDataViewType.Single);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Checks <paramref name="input"/>'s schema and returns the transformer; no rows are read.</summary>
    public UllmeScoreTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.CheckInput(input.Schema, _options.QueryColumnName, UllmeScoreTransformer.Name);
        SchemaChecks.CheckInput(input.Schema, _options.PassageColumnName, UllmeScoreTransformer.Name);
        return new UllmeScoreTransformer(_env, _options, _model.Value);
    }
}

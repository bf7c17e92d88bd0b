using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The estimator behind <c>mlContext.Transforms.UllmeEmbed(...)</c>. Embedding needs no training, so
/// <see cref="UllmeTextEstimator{TOptions, TTransformer}.Fit"/> only checks the schema and hands out a transformer; it
/// never reads rows (a schema-only view is enough). The model is loaded once, on the first fit, and shared by every
/// transformer this estimator produces (cross-validation fits once per fold).
/// </summary>
public sealed class UllmeEmbeddingEstimator : UllmeTextEstimator<UllmeEmbeddingOptions, UllmeEmbeddingTransformer>
{
    internal UllmeEmbeddingEstimator(IHostEnvironment env, UllmeEmbeddingOptions options, UllmeModel? model = null)
        : base(env, UllmeEmbeddingTransformer.Name, options, model) { }

    /// <summary>A copy of the settings.</summary>
    public UllmeEmbeddingOptions Options => Settings.Clone();

    private protected override IReadOnlyList<string> InputColumnNames => [Settings.InputColumnName];

    /// <summary>The embedding column: a known-size vector of Single.</summary>
    private protected override IEnumerable<SchemaShape.Column> OutputColumns =>
        [MLNetInterop.VectorColumn(Settings.OutputColumnName, NumberDataViewType.Single)];

    private protected override UllmeEmbeddingTransformer CreateTransformer(IHostEnvironment env, UllmeModel model) => new(env, Settings, model);
}

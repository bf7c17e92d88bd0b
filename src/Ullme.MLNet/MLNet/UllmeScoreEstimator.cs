using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The estimator behind <c>mlContext.Transforms.UllmeScore(...)</c>. Scoring needs no training:
/// <see cref="UllmeTextEstimator{TOptions, TTransformer}.Fit"/> checks the schema (and that the model can do what the
/// mode asks) and hands out a transformer without reading rows. The model is loaded once, on the first fit, and shared
/// by every transformer of this estimator.
/// </summary>
public sealed class UllmeScoreEstimator : UllmeTextEstimator<UllmeScoreOptions, UllmeScoreTransformer>
{
    internal UllmeScoreEstimator(IHostEnvironment env, UllmeScoreOptions options, UllmeModel? model = null)
        : base(env, UllmeScoreTransformer.Name, options, model) { }

    /// <summary>A copy of the settings.</summary>
    public UllmeScoreOptions Options => Settings.Clone();

    private protected override IReadOnlyList<string> InputColumnNames => [Settings.QueryColumnName, Settings.PassageColumnName];

    /// <summary>The Single score column(s).</summary>
    private protected override IEnumerable<SchemaShape.Column> OutputColumns =>
        UllmeScoreTransformer.Outputs(Settings).Select(o => MLNetInterop.ScalarColumn(o.Name, NumberDataViewType.Single));

    private protected override UllmeScoreTransformer CreateTransformer(IHostEnvironment env, UllmeModel model) => new(env, Settings, model);
}

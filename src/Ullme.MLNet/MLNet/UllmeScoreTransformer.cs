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
public sealed class UllmeScoreTransformer : UllmeTextTransformer
{
    /// <summary>The catalog method's name: channel name and prefix of error messages.</summary>
    internal const string Name = "UllmeScore";

    private readonly UllmeScoreOptions _options;
    private readonly RelevanceScorer _scorer;
    private readonly (string Name, DataViewType Type)[] _outputs;
    private long _rowsScored;

    internal UllmeScoreTransformer(IHostEnvironment env, UllmeScoreOptions options, UllmeModel model, string? modelId = null)
        : base(env, Name, model, modelId)
    {
        _options = options.Clone();
        _options.Validate(modelIsLoaded: true);
        _scorer = new RelevanceScorer(Engine, _options.ToRelevanceOptions());
        if (_options.NeedsGeneration && !_scorer.SupportsGeneration)
            throw new UllmeException($"{Name}: mode {_options.Mode} needs generation scores, but model '{model.ModelId}' ({model.Config.ModelType}) " +
                $"is an encoder without a language-model head. Use Mode = {nameof(UllmeScoreMode.Representation)} with this model.");
        _outputs = Outputs(_options).Select(o => (o.Name, (DataViewType)NumberDataViewType.Single)).ToArray();
    }

    /// <summary>Names and meanings of the output columns, in order.</summary>
    internal static IReadOnlyList<(string Name, bool Generation)> Outputs(UllmeScoreOptions o) => o.Mode switch
    {
        UllmeScoreMode.Generation => [(o.OutputColumnName, true)],
        UllmeScoreMode.Representation => [(o.OutputColumnName, false)],
        _ => [(o.OutputColumnName, true), (o.EffectiveRepresentationColumn, false)],
    };

    /// <summary>A copy of the settings.</summary>
    public UllmeScoreOptions Options => _options.Clone();

    /// <summary>Rows scored so far (a hook for tests and diagnostics).</summary>
    internal long RowsScored => Interlocked.Read(ref _rowsScored);

    private protected override IReadOnlyList<string> InputColumnNames => [_options.QueryColumnName, _options.PassageColumnName];
    private protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns => _outputs;
    private protected override int ReadAheadRows => _options.EffectiveReadAhead;
    private protected override PackageKind Kind => PackageKind.Score;

    private protected override void Describe(UllmeModelPackage.Manifest manifest) => manifest.ScoreOptions = Options;

    /// <summary>Scores one window of (query, passage) rows; only the needed outputs are computed (cancellation is
    /// checked by the base class before each window).</summary>
    private protected override float[][]?[] ComputeWindow(IReadOnlyList<string>[] texts, bool[] needed, IChannel? channel, long firstRow)
    {
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
    internal static UllmeScoreTransformer LoadFromFolder(IHostEnvironment env, UllmeScoreOptions options, string folder, string modelId) =>
        new(env, options, ModelLoading.Load(env, options.DType, options.Device, folder, Name), modelId);
}

using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training.Sweeps;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// The dev metric of a <see cref="GrlTrainerSweep"/>, in ML.NET terms: a function of the tuned
/// <see cref="UllmeEmbeddingTransformer"/>. Plug in any ML.NET evaluation with <see cref="OnDevData"/> (e.g. embed a dev
/// set with <c>mlContext.Transforms.UllmeEmbed(tuned.Model, ...)</c>, train a downstream classifier and take
/// <c>mlContext.MulticlassClassification.Evaluate(...).MacroAccuracy</c>), or use the ready-made
/// <see cref="StsSpearman"/> over an IDataView of sentence pairs.
/// </summary>
public sealed class TransformerSweepMetric
{
    private readonly Func<UllmeEmbeddingTransformer, double> _evaluate;

    /// <param name="name">Leaderboard column, e.g. <c>macro_accuracy</c>.</param>
    /// <param name="evaluate">Scores a tuned transformer (it embeds with the pooling, attention and max length the
    /// trial trained with). Throw <see cref="UllmeException"/> to fail one trial; other exceptions stop the sweep.</param>
    /// <param name="higherIsBetter">False for losses and errors (e.g. a regression's RMSE).</param>
    public TransformerSweepMetric(string name, Func<UllmeEmbeddingTransformer, double> evaluate, bool higherIsBetter = true)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new UllmeException("A sweep metric needs a name.");
        ArgumentNullException.ThrowIfNull(evaluate);
        Name = name;
        _evaluate = evaluate;
        HigherIsBetter = higherIsBetter;
    }

    public string Name { get; }
    public bool HigherIsBetter { get; }

    /// <summary>The metric of <paramref name="model"/>.</summary>
    public double Evaluate(UllmeEmbeddingTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return _evaluate(model);
    }

    /// <summary>A metric computed on a dev <see cref="IDataView"/> by any ML.NET evaluation:
    /// <paramref name="evaluate"/> gets the tuned transformer and <paramref name="dev"/>.</summary>
    public static TransformerSweepMetric OnDevData(string name, IDataView dev, Func<UllmeEmbeddingTransformer, IDataView, double> evaluate, bool higherIsBetter = true)
    {
        ArgumentNullException.ThrowIfNull(dev);
        ArgumentNullException.ThrowIfNull(evaluate);
        return new TransformerSweepMetric(name, t => evaluate(t, dev), higherIsBetter);
    }

    /// <summary>
    /// STS dev metric (<c>sts_spearman</c>): Spearman correlation between the gold scores and the cosine of the two
    /// sentences' embeddings — the same computation as <see cref="StsSpearmanMetric"/> and the STS evaluation task.
    /// The pairs are read now, so a missing or mistyped column fails before any training.
    /// </summary>
    /// <param name="dev">Rows with two text columns and a numeric (Single or Double) gold score column.</param>
    /// <param name="sentence1ColumnName">Text column of the first sentence.</param>
    /// <param name="sentence2ColumnName">Text column of the second sentence.</param>
    /// <param name="scoreColumnName">Gold similarity column (any scale: only the ranking counts).</param>
    /// <param name="limit">Use only the first rows (null = all).</param>
    /// <exception cref="UllmeException">A column is missing or has the wrong type, a text is empty, a score is not a
    /// number, or there are fewer than 2 pairs (the message names the column and row).</exception>
    public static TransformerSweepMetric StsSpearman(IDataView dev, string sentence1ColumnName = "Sentence1",
        string sentence2ColumnName = "Sentence2", string scoreColumnName = "Score", int? limit = null)
    {
        var sts = new StsSpearmanMetric(ReadPairs(dev, sentence1ColumnName, sentence2ColumnName, scoreColumnName, limit));
        return new TransformerSweepMetric(sts.Name, t =>
        {
            var d = t.EffectiveDefaults;
            return sts.Evaluate(t.Model, new EmbeddingOptions
            {
                Pooling = d.Pooling, Attention = d.Attention, MaxLength = d.MaxLength, Normalize = d.Normalize,
                Instruction = t.Options.Instruction,
            });
        });
    }

    /// <summary>Reads (sentence 1, sentence 2, score) rows from an <see cref="IDataView"/>; errors name the column.</summary>
    public static IReadOnlyList<StsPair> ReadPairs(IDataView dev, string sentence1ColumnName = "Sentence1",
        string sentence2ColumnName = "Sentence2", string scoreColumnName = "Score", int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(dev);
        if (limit is < 2) throw new UllmeException($"The STS dev metric needs at least 2 pairs, limit is {limit}.");
        var schema = dev.Schema;
        var s1 = Column(schema, sentence1ColumnName, "sentence 1");
        var s2 = Column(schema, sentence2ColumnName, "sentence 2");
        var score = Column(schema, scoreColumnName, "score");
        if (s1.Type is not TextDataViewType) throw new UllmeException($"STS dev data: sentence 1 column '{s1.Name}' must be of type String (text), found {s1.Type}.");
        if (s2.Type is not TextDataViewType) throw new UllmeException($"STS dev data: sentence 2 column '{s2.Name}' must be of type String (text), found {s2.Type}.");
        if (score.Type != NumberDataViewType.Single && score.Type != NumberDataViewType.Double)
            throw new UllmeException($"STS dev data: score column '{score.Name}' must be numeric (Single or Double), found {score.Type}.");

        var pairs = new List<StsPair>();
        using var cursor = dev.GetRowCursor([s1, s2, score]);
        var get1 = cursor.GetGetter<ReadOnlyMemory<char>>(s1);
        var get2 = cursor.GetGetter<ReadOnlyMemory<char>>(s2);
        Func<double> getScore;
        if (score.Type == NumberDataViewType.Single)
        {
            var g = cursor.GetGetter<float>(score);
            getScore = () => { float v = 0; g(ref v); return v; };
        }
        else
        {
            var g = cursor.GetGetter<double>(score);
            getScore = () => { double v = 0; g(ref v); return v; };
        }
        ReadOnlyMemory<char> a = default, b = default;
        long row = -1;
        while ((limit is null || pairs.Count < limit) && cursor.MoveNext())
        {
            row++;
            get1(ref a);
            get2(ref b);
            double y = getScore();
            if (a.Span.IsWhiteSpace()) throw new UllmeException($"STS dev data: row {row} has an empty text in column '{s1.Name}'.");
            if (b.Span.IsWhiteSpace()) throw new UllmeException($"STS dev data: row {row} has an empty text in column '{s2.Name}'.");
            if (!double.IsFinite(y)) throw new UllmeException($"STS dev data: row {row} has a score that is not a number in column '{score.Name}'.");
            pairs.Add(new StsPair(a.ToString(), b.ToString(), y));
        }
        if (pairs.Count < 2) throw new UllmeException($"The STS dev metric needs at least 2 pairs, got {pairs.Count}.");
        return pairs;
    }

    private static DataViewSchema.Column Column(DataViewSchema schema, string name, string role)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new UllmeException($"STS dev data: the {role} column name is empty.");
        return schema.GetColumnOrNull(name)
            ?? throw new UllmeException($"STS dev data: {role} column '{name}' not found; the data has columns {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"))}.");
    }
}

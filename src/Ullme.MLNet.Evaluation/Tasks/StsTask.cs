using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Semantic textual similarity, MTEB's <c>AbsTaskSTS</c>: embed both sides of every pair (the instruction, if any,
/// on both sides), score each pair by cosine similarity and by negative Manhattan and Euclidean distance, and
/// correlate the scores with the gold similarities. Main score: <c>cosine_spearman</c>. <c>pearson</c>/<c>spearman</c>
/// use the model's similarity function, which is cosine for every model here.
/// </summary>
public sealed class StsTask : EvaluationTask
{
    private readonly IReadOnlyDictionary<string, IReadOnlyList<StsPair>> _splits;

    public StsTask(string name, IReadOnlyDictionary<string, IReadOnlyList<StsPair>> splits) : base(name)
    {
        if (splits.Count == 0) throw new UllmeException($"task {name}: no splits");
        foreach (var (split, pairs) in splits)
            if (pairs.Count < 2) throw new UllmeException($"task {name}: split '{split}' needs at least 2 pairs, has {pairs.Count}");
        _splits = splits;
    }

    public override TaskType Type => TaskType.STS;

    public override string MainScore => "cosine_spearman";

    public override IReadOnlyList<string> Splits => _splits.Keys.ToArray();

    public IReadOnlyList<StsPair> Pairs(string split) => _splits[split];

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, all) in _splits)
        {
            var pairs = context.Take(all);
            var e1 = context.Embed(this, $"{split}: sentences 1", pairs.Select(p => p.Text1).ToArray(), TextRole.Symmetric);
            var e2 = context.Embed(this, $"{split}: sentences 2", pairs.Select(p => p.Text2).ToArray(), TextRole.Symmetric);
            result[split] = Score(pairs.Select(p => p.Score).ToArray(), e1, e2);
        }
        return result;
    }

    /// <summary>MTEB's STS metrics for gold scores and the two sides' embeddings.</summary>
    public SplitScores Score(IReadOnlyList<double> gold, IReadOnlyList<float[]> e1, IReadOnlyList<float[]> e2)
    {
        var cosine = PairedScores.Cosine(e1, e2);
        var manhattan = PairedScores.Manhattan(e1, e2).Select(d => -d).ToArray();
        var euclidean = PairedScores.Euclidean(e1, e2).Select(d => -d).ToArray();
        var s = NewScores();
        double cp = Correlation.Pearson(gold, cosine), cs = Correlation.Spearman(gold, cosine);
        s.Add("pearson", cp);
        s.Add("spearman", cs);
        s.Add("cosine_pearson", cp);
        s.Add("cosine_spearman", cs);
        s.Add("manhattan_pearson", Correlation.Pearson(gold, manhattan));
        s.Add("manhattan_spearman", Correlation.Spearman(gold, manhattan));
        s.Add("euclidean_pearson", Correlation.Pearson(gold, euclidean));
        s.Add("euclidean_spearman", Correlation.Spearman(gold, euclidean));
        return s;
    }
}

using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Pair classification, MTEB's <c>AbsTaskPairClassification</c>: embed both sides, score pairs by the model
/// similarity (cosine), cosine, Manhattan and Euclidean distance (lower = more similar) and dot product; for each
/// score report best-threshold accuracy, F1 (with its precision and recall) and average precision, named
/// <c>&lt;score&gt;_&lt;metric&gt;</c>, plus <c>max_&lt;metric&gt;</c> over the scores. Main score: <c>max_ap</c>.
/// </summary>
public sealed class PairClassificationTask : EvaluationTask
{
    private readonly IReadOnlyDictionary<string, IReadOnlyList<LabeledPair>> _splits;

    public PairClassificationTask(string name, IReadOnlyDictionary<string, IReadOnlyList<LabeledPair>> splits) : base(name)
    {
        if (splits.Count == 0) throw new UllmeException($"task {name}: no splits");
        foreach (var (split, pairs) in splits)
            if (pairs.Count < 2) throw new UllmeException($"task {name}: split '{split}' needs at least 2 pairs, has {pairs.Count}");
        _splits = splits;
    }

    public override TaskType Type => TaskType.PairClassification;

    public override string MainScore => "max_ap";

    public override IReadOnlyList<string> Splits => _splits.Keys.ToArray();

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, all) in _splits)
        {
            var pairs = context.Take(all);
            var e1 = context.Embed(this, $"{split}: sentences 1", pairs.Select(p => p.Text1).ToArray(), TextRole.Symmetric);
            var e2 = context.Embed(this, $"{split}: sentences 2", pairs.Select(p => p.Text2).ToArray(), TextRole.Symmetric);
            result[split] = Score(pairs.Select(p => p.Label).ToArray(), e1, e2);
        }
        return result;
    }

    public SplitScores Score(IReadOnlyList<int> labels, IReadOnlyList<float[]> e1, IReadOnlyList<float[]> e2)
    {
        var cosine = PairedScores.Cosine(e1, e2);
        var scoreSets = new (string Name, double[] Scores, bool HighIsSimilar)[]
        {
            ("similarity", cosine, true),
            ("cosine", cosine, true),
            ("manhattan", PairedScores.Manhattan(e1, e2), false),
            ("euclidean", PairedScores.Euclidean(e1, e2), false),
            ("dot", PairedScores.Dot(e1, e2), true),
        };
        var s = NewScores();
        var max = new Dictionary<string, double>();
        foreach (var (name, scores, high) in scoreSets)
        {
            var (acc, _) = BinaryMetrics.BestAccuracy(labels, scores, high);
            var (f1, p, r, _) = BinaryMetrics.BestF1(labels, scores, high);
            double ap = BinaryMetrics.AveragePrecision(labels, high ? scores : scores.Select(x => -x).ToArray());
            foreach (var (metric, value) in new[] { ("accuracy", acc), ("f1", f1), ("precision", p), ("recall", r), ("ap", ap) })
            {
                s.Add($"{name}_{metric}", value);
                max[metric] = max.TryGetValue(metric, out double m) ? Math.Max(m, value) : value;
            }
        }
        foreach (var metric in new[] { "accuracy", "f1", "precision", "recall", "ap" }) s.Add($"max_{metric}", max[metric]);
        return s;
    }
}

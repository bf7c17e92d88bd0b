using System.Text.Json.Nodes;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Learners;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Clustering: embed every text of a split (instruction on all), run k-means with k = the number of distinct labels
/// <see cref="Runs"/> times with seeds seed, seed+1, ... (ML.NET <c>KMeansTrainer</c>, k-means++), and score each
/// clustering against the labels by V-measure. Reports the mean (<c>v_measure</c>, main score), its standard
/// deviation (<c>v_measure_std</c>, population) and the per-run values (<c>v_measures</c>), MTEB's names.
/// MTEB's clustering differs in the k-means implementation (sklearn MiniBatchKMeans) and, for its newer tasks, in
/// bootstrapping subsets; docs/evaluation.md lists the differences.
/// </summary>
public sealed class ClusteringTask : EvaluationTask
{
    private readonly IReadOnlyDictionary<string, IReadOnlyList<LabeledText>> _splits;

    public ClusteringTask(string name, IReadOnlyDictionary<string, IReadOnlyList<LabeledText>> splits) : base(name)
    {
        if (splits.Count == 0) throw new UllmeException($"task {name}: no splits");
        foreach (var (split, rows) in splits)
            if (rows.Select(r => r.Label).Distinct().Count() < 2)
                throw new UllmeException($"task {name}: split '{split}' needs at least two distinct labels to cluster");
        _splits = splits;
    }

    public override TaskType Type => TaskType.Clustering;

    public override string MainScore => "v_measure";

    public override IReadOnlyList<string> Splits => _splits.Keys.ToArray();

    /// <summary>k-means runs (seeds) per split.</summary>
    public int Runs { get; init; } = 10;

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, all) in _splits)
        {
            var rows = context.TakeSpread(all);
            var labels = rows.Select(r => r.Label).ToArray();
            int k = labels.Distinct().Count();
            context.WarnIfFewerRowsThanLabels(this, split, $"split '{split}'", rows.Count, all.Select(r => r.Label).Distinct(StringComparer.Ordinal).Count());
            // With about one text per cluster, every clustering of distinct texts scores a V-measure near 1.
            if (rows.Count >= all.Select(r => r.Label).Distinct(StringComparer.Ordinal).Count() && rows.Count < 2 * k)
                context.Warn(this, split, $"{rows.Count} rows for {k} labels (fewer than two texts per cluster), so the {MainScore} is near 1 whatever the model" +
                    (context.Limit is int n ? $" (--limit {n}: raise it)" : ""));
            var vectors = context.Embed(this, $"{split}: texts", rows.Select(r => r.Text).ToArray(), TextRole.Symmetric);
            var scores = new double[Runs];
            for (int run = 0; run < Runs; run++)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                context.Report(this, $"{split}: k-means {run + 1}/{Runs}", run, Runs);
                var assigned = k >= 2 && vectors.Length >= k
                    ? context.Learners.Clusterer.Cluster(vectors, k, context.Seed + run)
                    : new int[vectors.Length];
                scores[run] = ClusteringMetrics.VMeasure(labels, assigned);
            }
            double mean = scores.Average();
            var s = NewScores();
            s.Add("v_measure", mean);
            s.Add("v_measure_std", Math.Sqrt(scores.Select(x => (x - mean) * (x - mean)).Average()));
            s.Details["v_measures"] = new JsonArray(scores.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray());
            result[split] = s;
        }
        return result;
    }
}

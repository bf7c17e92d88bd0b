using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Reranking: each query's candidates (its positives and negatives) are ranked by cosine similarity to the query
/// (instruction on the query only). Scored like current MTEB, which runs reranking as retrieval restricted to the
/// candidates: candidates get ids <c>apositive_&lt;q&gt;_00000</c> / <c>negative_&lt;q&gt;_00000</c> (MTEB's conversion,
/// which also fixes the order of ties), positives have grade 1, and the retrieval metrics follow
/// (<c>map_at_1000</c> is the main score, <c>mrr_at_10</c> MTEB v1's MRR). MTEB v1's <c>map</c> (mean average
/// precision over all candidates) and <c>mrr</c> (MRR@10) are reported too. Queries without a positive are skipped.
/// </summary>
public sealed class RerankingTask : EvaluationTask
{
    private readonly IReadOnlyDictionary<string, IReadOnlyList<RerankingSample>> _splits;

    public RerankingTask(string name, IReadOnlyDictionary<string, IReadOnlyList<RerankingSample>> splits) : base(name)
    {
        if (splits.Count == 0) throw new UllmeException($"task {name}: no splits");
        _splits = splits;
    }

    public override TaskType Type => TaskType.Reranking;

    public override string MainScore => "map_at_1000";

    public override IReadOnlyList<string> Splits => _splits.Keys.ToArray();

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, all) in _splits)
        {
            var samples = context.Take(all.Where(s => s.Positives.Count > 0).ToArray());
            if (samples.Count == 0) throw new UllmeException($"task {Name}: split '{split}' has no query with a positive");
            var queryVectors = context.Embed(this, $"{split}: queries", samples.Select(s => s.Query).ToArray(), TextRole.Query);
            var docs = samples.SelectMany(s => s.Positives.Concat(s.Negatives)).ToArray();
            var docVectors = context.Embed(this, $"{split}: candidates", docs, TextRole.Document);

            var qrels = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
            var run = new Dictionary<string, IReadOnlyList<ScoredDocument>>(StringComparer.Ordinal);
            double apSum = 0, rrSum = 0;
            int offset = 0;
            for (int q = 0; q < samples.Count; q++)
            {
                var s = samples[q];
                string qid = $"{split}_query{q}";
                var judged = new Dictionary<string, int>(StringComparer.Ordinal);
                var scored = new List<ScoredDocument>();
                var isPositive = new List<bool>();
                var scores = new List<double>();
                int count = s.Positives.Count + s.Negatives.Count;
                for (int i = 0; i < count; i++)
                {
                    bool positive = i < s.Positives.Count;
                    string docId = positive
                        ? $"apositive_{qid}_{i:D5}"
                        : $"negative_{qid}_{i - s.Positives.Count:D5}";
                    double score = (float)PairedScores.CosineOf(queryVectors[q], docVectors[offset + i]);
                    if (positive) judged[docId] = 1;
                    scored.Add(new ScoredDocument(docId, score));
                    isPositive.Add(positive);
                    scores.Add(score);
                }
                offset += count;
                qrels[qid] = judged;
                run[qid] = scored;
                apSum += RerankingMetrics.AveragePrecision(isPositive, scores);
                rrSum += RerankingMetrics.ReciprocalRank(isPositive, scores, 10);
            }
            var result1 = NewScores();
            foreach (var (metric, value) in RetrievalMetrics.Evaluate(qrels, run)) result1.Add(metric, value);
            result1.Add("map", apSum / samples.Count);
            result1.Add("mrr", rrSum / samples.Count);
            result[split] = result1;
        }
        return result;
    }
}

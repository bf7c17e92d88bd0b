namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>A retrieved document and its score (higher = more relevant).</summary>
internal readonly record struct ScoredDocument(string DocId, double Score);

/// <summary>
/// Ranked-retrieval metrics with the definitions MTEB gets from pytrec_eval (trec_eval) plus MTEB's own MRR:
/// <list type="bullet">
/// <item>ranking: score descending, ties broken by document id descending (trec_eval's order; MTEB's MRR sorts
/// the same way);</item>
/// <item>a document is relevant when its qrels grade is &gt;= 1; R = number of relevant documents of the query;</item>
/// <item><c>ndcg_at_k</c> = DCG@k / IDCG@k with gain = the qrels grade (linear, not 2^g-1) and discount
/// log2(rank+1); the ideal ranking orders all positively graded qrels by grade;</item>
/// <item><c>map_at_k</c> = (sum over relevant documents at ranks r &lt;= k of precision@r) / R (trec_eval's
/// map_cut divides by R, not by min(R, k));</item>
/// <item><c>recall_at_k</c> = relevant in top k / R; <c>precision_at_k</c> = relevant in top k / k (even if fewer
/// than k were retrieved); <c>hit_rate_at_k</c> = 1 if any relevant in top k; <c>mrr_at_k</c> = 1 / rank of the
/// first relevant document within k, else 0.</item>
/// </list>
/// Averages are over the queries that have both judgments and results. Like MTEB, every metric except MRR is
/// rounded to 5 decimals after averaging, and <c>accuracy</c> repeats <c>recall_at_1</c>.
/// </summary>
internal static class RetrievalMetrics
{
    /// <summary>MTEB's cut-offs.</summary>
    public static IReadOnlyList<int> DefaultKValues { get; } = [1, 3, 5, 10, 20, 100, 1000];

    /// <summary>Per-query metric values for one query (unrounded), keyed like the output.</summary>
    public static Dictionary<string, double> EvaluateQuery(IReadOnlyDictionary<string, int> judgments,
        IEnumerable<ScoredDocument> results, IReadOnlyList<int> kValues)
    {
        var ranked = Rank(results);
        int totalRelevant = judgments.Values.Count(g => g >= 1);
        var gains = ranked.Select(d => judgments.TryGetValue(d.DocId, out int g) ? g : 0).ToArray();
        var ideal = judgments.Values.Where(g => g > 0).OrderByDescending(g => g).ToArray();

        var m = new Dictionary<string, double>();
        foreach (int k in kValues)
        {
            if (k <= 0) throw new ArgumentOutOfRangeException(nameof(kValues), $"cut-off must be positive, got {k}");
            int cut = Math.Min(k, gains.Length);
            double dcg = 0, idcg = 0, apSum = 0;
            int hits = 0, firstHit = -1;
            for (int i = 0; i < cut; i++)
            {
                if (gains[i] != 0) dcg += gains[i] / Math.Log2(i + 2);
                if (gains[i] >= 1)
                {
                    hits++;
                    apSum += hits / (double)(i + 1);
                    if (firstHit < 0) firstHit = i;
                }
            }
            for (int i = 0; i < Math.Min(k, ideal.Length); i++) idcg += ideal[i] / Math.Log2(i + 2);
            m[$"ndcg_at_{k}"] = idcg > 0 ? dcg / idcg : 0;
            m[$"map_at_{k}"] = totalRelevant > 0 ? apSum / totalRelevant : 0;
            m[$"recall_at_{k}"] = totalRelevant > 0 ? hits / (double)totalRelevant : 0;
            m[$"precision_at_{k}"] = hits / (double)k;
            m[$"mrr_at_{k}"] = firstHit >= 0 ? 1.0 / (firstHit + 1) : 0;
            m[$"hit_rate_at_{k}"] = hits > 0 ? 1 : 0;
        }
        return m;
    }

    /// <summary>
    /// Averages over queries present in both <paramref name="qrels"/> and <paramref name="run"/>; returns metrics in
    /// MTEB's key order (ndcg, map, recall, accuracy, precision, mrr, hit_rate). Throws when no query can be scored.
    /// </summary>
    public static Dictionary<string, double> Evaluate(
        IReadOnlyDictionary<string, Dictionary<string, int>> qrels,
        IReadOnlyDictionary<string, IReadOnlyList<ScoredDocument>> run,
        IReadOnlyList<int>? kValues = null)
    {
        kValues ??= DefaultKValues;
        var sums = new Dictionary<string, double>();
        int queries = 0;
        foreach (var (queryId, results) in run)
        {
            if (!qrels.TryGetValue(queryId, out var judgments)) continue;
            queries++;
            foreach (var (name, value) in EvaluateQuery(judgments, results, kValues))
                sums[name] = sums.GetValueOrDefault(name) + value;
        }
        if (queries == 0) throw new UllmeException("retrieval evaluation: no query has both relevance judgments and results");

        double Mean(string name, bool round)
        {
            double v = sums[name] / queries;
            return round ? Math.Round(v, 5, MidpointRounding.ToEven) : v;
        }

        var output = new Dictionary<string, double>();
        foreach (int k in kValues) output[$"ndcg_at_{k}"] = Mean($"ndcg_at_{k}", true);
        foreach (int k in kValues) output[$"map_at_{k}"] = Mean($"map_at_{k}", true);
        foreach (int k in kValues) output[$"recall_at_{k}"] = Mean($"recall_at_{k}", true);
        if (kValues.Contains(1)) output["accuracy"] = output["recall_at_1"];
        foreach (int k in kValues) output[$"precision_at_{k}"] = Mean($"precision_at_{k}", true);
        foreach (int k in kValues) output[$"mrr_at_{k}"] = Mean($"mrr_at_{k}", false);
        foreach (int k in kValues) output[$"hit_rate_at_{k}"] = Mean($"hit_rate_at_{k}", true);
        return output;
    }

    /// <summary>Score descending, then document id descending (ordinal), trec_eval's order.</summary>
    public static ScoredDocument[] Rank(IEnumerable<ScoredDocument> results)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var list = results.Where(d => seen.Add(d.DocId)).ToArray();
        Array.Sort(list, (a, b) =>
        {
            int c = b.Score.CompareTo(a.Score);
            return c != 0 ? c : string.CompareOrdinal(b.DocId, a.DocId);
        });
        return list;
    }
}

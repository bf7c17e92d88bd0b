namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// The per-query scores of MTEB's original reranking evaluator (v1 <c>RerankingEvaluator</c>): for one query and
/// its candidates, average precision over all candidates (sklearn's definition, <see cref="BinaryMetrics"/>) and
/// the reciprocal rank of the first positive within the top k (stable order on ties). Current MTEB scores reranking
/// with the retrieval metrics over the candidates; <see cref="Tasks.RerankingTask"/> reports both.
/// </summary>
internal static class RerankingMetrics
{
    public static double AveragePrecision(IReadOnlyList<bool> isPositive, IReadOnlyList<double> scores) =>
        BinaryMetrics.AveragePrecision(isPositive.Select(p => p ? 1 : 0).ToArray(), scores);

    /// <summary>1 / (rank of the first positive) when it is within the top <paramref name="k"/>, else 0.</summary>
    public static double ReciprocalRank(IReadOnlyList<bool> isPositive, IReadOnlyList<double> scores, int k = 10)
    {
        if (isPositive.Count != scores.Count) throw new ArgumentException("labels and scores differ in length");
        var order = Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i]).Take(k).ToArray();
        for (int rank = 0; rank < order.Length; rank++)
            if (isPositive[order[rank]]) return 1.0 / (rank + 1);
        return 0;
    }
}

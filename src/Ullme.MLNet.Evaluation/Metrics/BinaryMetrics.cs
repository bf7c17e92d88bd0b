namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// Metrics of binary labels against real-valued scores, as MTEB's pair classification computes them:
/// sklearn's average precision and the best accuracy / F1 over thresholds placed between consecutive scores.
/// </summary>
internal static class BinaryMetrics
{
    /// <summary>
    /// Average precision as sklearn's <c>average_precision_score</c>: AP = sum over distinct score thresholds t
    /// (descending) of (R_t - R_prev) * P_t, where P_t and R_t count every item with score &gt;= t (tied items enter
    /// together). NaN when there is no positive label.
    /// </summary>
    /// <param name="labels">1 = positive, 0 = negative.</param>
    /// <param name="scores">Higher = more likely positive.</param>
    public static double AveragePrecision(IReadOnlyList<int> labels, IReadOnlyList<double> scores)
    {
        Check(labels, scores);
        int positives = labels.Count(l => l == 1);
        if (positives == 0) return double.NaN;
        var order = Enumerable.Range(0, labels.Count).OrderByDescending(i => scores[i]).ToArray();
        double ap = 0, previousRecall = 0;
        int tp = 0, seen = 0;
        for (int i = 0; i < order.Length; i++)
        {
            seen++;
            if (labels[order[i]] == 1) tp++;
            bool lastOfThreshold = i == order.Length - 1 || scores[order[i + 1]] != scores[order[i]];
            if (!lastOfThreshold) continue;
            double recall = tp / (double)positives;
            double precision = tp / (double)seen;
            ap += (recall - previousRecall) * precision;
            previousRecall = recall;
        }
        return ap;
    }

    /// <summary>
    /// MTEB's best-threshold accuracy: rows sorted by score (stable; descending when high = similar), threshold
    /// after each of the first n-1 rows; accuracy = (positives above + negatives below) / n. Returns the best
    /// accuracy and its threshold (midpoint of the two neighbouring scores).
    /// </summary>
    public static (double Accuracy, double Threshold) BestAccuracy(IReadOnlyList<int> labels, IReadOnlyList<double> scores,
        bool highScoreMoreSimilar)
    {
        Check(labels, scores);
        var rows = Sorted(labels, scores, highScoreMoreSimilar);
        double best = 0, threshold = -1;
        int positivesSoFar = 0;
        int remainingNegatives = labels.Count(l => l == 0);
        for (int i = 0; i < rows.Length - 1; i++)
        {
            if (labels[rows[i]] == 1) positivesSoFar++;
            else remainingNegatives--;
            double acc = (positivesSoFar + remainingNegatives) / (double)labels.Count;
            if (acc > best)
            {
                best = acc;
                threshold = (scores[rows[i]] + scores[rows[i + 1]]) / 2;
            }
        }
        return (best, threshold);
    }

    /// <summary>
    /// MTEB's best-threshold F1 (with the precision and recall at that threshold): predicted positive = the rows
    /// above the threshold; same scan as <see cref="BestAccuracy"/>.
    /// </summary>
    public static (double F1, double Precision, double Recall, double Threshold) BestF1(IReadOnlyList<int> labels,
        IReadOnlyList<double> scores, bool highScoreMoreSimilar)
    {
        Check(labels, scores);
        var rows = Sorted(labels, scores, highScoreMoreSimilar);
        double bestF1 = 0, bestP = 0, bestR = 0, threshold = 0;
        int extracted = 0, correct = 0;
        int totalPositives = labels.Count(l => l == 1);
        for (int i = 0; i < rows.Length - 1; i++)
        {
            extracted++;
            if (labels[rows[i]] == 1) correct++;
            if (correct == 0) continue;
            double p = correct / (double)extracted;
            double r = correct / (double)totalPositives;
            double f1 = 2 * p * r / (p + r);
            if (f1 > bestF1)
            {
                bestF1 = f1;
                bestP = p;
                bestR = r;
                threshold = (scores[rows[i]] + scores[rows[i + 1]]) / 2;
            }
        }
        return (bestF1, bestP, bestR, threshold);
    }

    // Python's sorted() is stable: equal scores keep their input order. LINQ's OrderBy is stable too.
    private static int[] Sorted(IReadOnlyList<int> labels, IReadOnlyList<double> scores, bool descending) =>
        descending
            ? Enumerable.Range(0, labels.Count).OrderByDescending(i => scores[i]).ToArray()
            : Enumerable.Range(0, labels.Count).OrderBy(i => scores[i]).ToArray();

    private static void Check(IReadOnlyList<int> labels, IReadOnlyList<double> scores)
    {
        if (labels.Count != scores.Count)
            throw new ArgumentException($"labels ({labels.Count}) and scores ({scores.Count}) differ in length");
        foreach (int l in labels)
            if (l is not (0 or 1)) throw new ArgumentException($"binary labels must be 0 or 1, got {l}");
    }
}

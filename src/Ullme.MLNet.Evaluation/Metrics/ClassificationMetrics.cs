namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>Accuracy, precision, recall and F1 of one classifier run, named as in MTEB's classification results.</summary>
internal sealed record ClassificationScores(
    double Accuracy,
    double F1,
    double F1Weighted,
    double Precision,
    double PrecisionWeighted,
    double Recall,
    double RecallWeighted,
    double? Ap,
    double? ApWeighted);

/// <summary>
/// Multiclass metrics as sklearn computes them for MTEB: per-label precision / recall / F1 over the labels seen in
/// either the truth or the predictions (sorted), a label never predicted has precision 0 and one with p + r = 0 has
/// F1 0 (sklearn's zero_division result); "macro" is the unweighted mean over those labels and "weighted" weighs each
/// label by its true count. For exactly two true classes, <c>ap</c> is sklearn's average precision of the hard
/// predictions (the larger label is positive), as MTEB reports it.
/// </summary>
internal static class ClassificationMetrics
{
    public static ClassificationScores Compute(IReadOnlyList<int> truth, IReadOnlyList<int> predicted)
    {
        if (truth.Count != predicted.Count)
            throw new ArgumentException($"truth ({truth.Count}) and predictions ({predicted.Count}) differ in length");
        if (truth.Count == 0) throw new ArgumentException("no items to score");
        var labels = truth.Concat(predicted).Distinct().Order().ToArray();
        int n = truth.Count;
        int correct = 0;
        var tp = new Dictionary<int, int>();
        var predCount = new Dictionary<int, int>();
        var trueCount = new Dictionary<int, int>();
        for (int i = 0; i < n; i++)
        {
            if (truth[i] == predicted[i])
            {
                correct++;
                tp[truth[i]] = tp.GetValueOrDefault(truth[i]) + 1;
            }
            predCount[predicted[i]] = predCount.GetValueOrDefault(predicted[i]) + 1;
            trueCount[truth[i]] = trueCount.GetValueOrDefault(truth[i]) + 1;
        }

        double pMacro = 0, rMacro = 0, fMacro = 0, pW = 0, rW = 0, fW = 0;
        foreach (int label in labels)
        {
            int t = tp.GetValueOrDefault(label), pc = predCount.GetValueOrDefault(label), tc = trueCount.GetValueOrDefault(label);
            double p = pc == 0 ? 0 : t / (double)pc;
            double r = tc == 0 ? 0 : t / (double)tc;
            double f = p + r == 0 ? 0 : 2 * p * r / (p + r);
            pMacro += p; rMacro += r; fMacro += f;
            pW += p * tc; rW += r * tc; fW += f * tc;
        }
        int m = labels.Length;
        double? ap = null;
        var trueLabels = trueCount.Keys.Order().ToArray();
        if (trueLabels.Length == 2)
        {
            int positive = trueLabels[1];
            var y = truth.Select(v => v == positive ? 1 : 0).ToArray();
            var s = predicted.Select(v => v == positive ? 1.0 : 0.0).ToArray();
            ap = BinaryMetrics.AveragePrecision(y, s);
        }
        return new ClassificationScores(
            Accuracy: correct / (double)n,
            F1: fMacro / m,
            F1Weighted: fW / n,
            Precision: pMacro / m,
            PrecisionWeighted: pW / n,
            Recall: rMacro / m,
            RecallWeighted: rW / n,
            Ap: ap,
            ApWeighted: ap);
    }
}

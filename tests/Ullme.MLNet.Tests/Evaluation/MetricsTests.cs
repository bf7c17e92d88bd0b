using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Metrics;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>Metric implementations against values worked out by hand (the working is in the comments).</summary>
public class MetricsTests
{
    private const int Digits = 12;

    [Fact]
    public void AverageRanksShareTheMeanRankOfATie()
    {
        // [10, 20, 20, 30]: 20 and 20 occupy ranks 2 and 3 -> both get 2.5.
        Assert.Equal([1, 2.5, 2.5, 4], Correlation.AverageRanks([10, 20, 20, 30]));
        // Three equal values occupy ranks 1..3 -> all 2.
        Assert.Equal([2, 2, 2], Correlation.AverageRanks([5, 5, 5]));
        // Order of input does not matter: [3, 1, 2] -> ranks [3, 1, 2].
        Assert.Equal([3, 1, 2], Correlation.AverageRanks([3, 1, 2]));
    }

    [Fact]
    public void SpearmanWithTiesIsPearsonOfAverageRanks()
    {
        // x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] -> ranks [1, 3, 2, 4]; both means 2.5.
        // dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5]
        // sxy = 2.25 + 2.25 = 4.5; sxx = 4.5; syy = 2.25 + 0.25 + 0.25 + 2.25 = 5
        // rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9) = 0.948683298...
        Assert.Equal(Math.Sqrt(0.9), Correlation.Spearman([1, 2, 2, 3], [1, 3, 2, 4]), Digits);
    }

    [Fact]
    public void PearsonMatchesHandComputation()
    {
        // x = [1, 2, 3] (mean 2), y = [2, 4, 7] (mean 13/3): dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3]
        // sxy = 7/3 + 8/3 = 5; sxx = 2; syy = (49 + 1 + 64) / 9 = 114/9
        // r = 5 / sqrt(2 * 114/9) = 15 / sqrt(228) = 0.99339926...
        Assert.Equal(15 / Math.Sqrt(228), Correlation.Pearson([1, 2, 3], [2, 4, 7]), Digits);
        Assert.Equal(-1, Correlation.Pearson([1, 2, 3], [3, 2, 1]), Digits);
        Assert.True(double.IsNaN(Correlation.Pearson([1, 1, 1], [1, 2, 3])), "constant input has no correlation");
    }

    [Fact]
    public void PairedScoresMatchHandComputation()
    {
        float[] a = [3, 4], b = [4, 3], zero = [0, 0];
        // cos = (12 + 12) / (5 * 5) = 0.96; dot 24; euclidean sqrt(1 + 1); manhattan 2
        Assert.Equal(0.96, PairedScores.CosineOf(a, b), Digits);
        Assert.Equal(24, PairedScores.DotOf(a, b), Digits);
        Assert.Equal(Math.Sqrt(2), PairedScores.EuclideanOf(a, b), Digits);
        Assert.Equal(2, PairedScores.ManhattanOf(a, b), Digits);
        Assert.Equal(0, PairedScores.CosineOf(a, zero));
        // Cosine ignores length (rows are normalised first).
        Assert.Equal(0.96, PairedScores.CosineOf([30, 40], b), Digits);
    }

    [Fact]
    public void NdcgUsesLinearGradedGainsAndIdealFromAllJudgments()
    {
        // qrels: d1 = 2, d2 = 1, d3 = 0 (judged non-relevant), d4 = 3 (never retrieved)
        // ranking: d2 (0.9), d5 (0.8, unjudged), d1 (0.7), d3 (0.6) -> gains [1, 0, 2, 0]
        // DCG@3 = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 1 = 2
        // ideal gains [3, 2, 1]: IDCG@3 = 3/1 + 2/log2(3) + 1/2 = 4.76185950...
        // nDCG@3 = 2 / 4.7618595 = 0.42000399...
        var m = RetrievalMetrics.EvaluateQuery(Judgments(("d1", 2), ("d2", 1), ("d3", 0), ("d4", 3)),
            [new("d2", 0.9), new("d5", 0.8), new("d1", 0.7), new("d3", 0.6)], [1, 3, 5]);
        Assert.Equal(2 / (3 + 2 / Math.Log2(3) + 0.5), m["ndcg_at_3"], Digits);
        // nDCG@1 = 1 / 3 (ideal first gain is 3)
        Assert.Equal(1.0 / 3, m["ndcg_at_1"], Digits);
        // R = 3 relevant (grade >= 1: d1, d2, d4). Hits in top 3 at ranks 1 and 3:
        // MAP@3 = (1/1 + 2/3) / 3 = 5/9 (divided by R, not by the hits)
        Assert.Equal(5.0 / 9, m["map_at_3"], Digits);
        Assert.Equal(2.0 / 3, m["recall_at_3"], Digits);
        Assert.Equal(2.0 / 3, m["precision_at_3"], Digits);
        // Only 4 documents retrieved, but P@5 still divides by 5: 2/5.
        Assert.Equal(2.0 / 5, m["precision_at_5"], Digits);
        Assert.Equal(1, m["mrr_at_1"]);
        Assert.Equal(1, m["hit_rate_at_1"]);
    }

    [Fact]
    public void TiedScoresRankByDocumentIdDescendingLikeTrecEval()
    {
        // "a" and "b" tie; trec_eval orders ties by docno descending -> b first, a second.
        var m = RetrievalMetrics.EvaluateQuery(Judgments(("a", 1)), [new("a", 0.5), new("b", 0.5)], [1, 2]);
        Assert.Equal(0, m["mrr_at_1"]);
        Assert.Equal(0.5, m["mrr_at_2"], Digits);
        Assert.Equal(["b", "a"], RetrievalMetrics.Rank([new("a", 0.5), new("b", 0.5)]).Select(d => d.DocId));
    }

    [Fact]
    public void RetrievalAveragesOverJudgedQueriesAndRoundsLikeMteb()
    {
        // q1: relevant doc first -> nDCG@1 = 1; q2: relevant doc second -> nDCG@1 = 0, MRR@3 = 1/2;
        // q3 has no judgments -> ignored. Mean nDCG@1 = 0.5, MRR@3 = 0.75.
        // q4 (judged): d9 relevant at rank 3 -> MRR@3 = 1/3. With q4: MRR@3 = (1 + 0.5 + 1/3) / 3 = 0.61111..,
        // nDCG@3 of q4 = (1/log2(4)) / 1 = 0.5; mean nDCG@3 = (1 + 1/log2(3) + 0.5) / 3 = 0.71030..., rounded to 5.
        var qrels = new Dictionary<string, Dictionary<string, int>>
        {
            ["q1"] = Judgments(("d1", 1)),
            ["q2"] = Judgments(("d2", 1)),
            ["q4"] = Judgments(("d9", 1)),
        };
        var run = new Dictionary<string, IReadOnlyList<ScoredDocument>>
        {
            ["q1"] = [new("d1", 0.9), new("d2", 0.1)],
            ["q2"] = [new("d1", 0.9), new("d2", 0.8)],
            ["q3"] = [new("d1", 0.9)],
            ["q4"] = [new("d1", 0.9), new("d2", 0.8), new("d9", 0.7)],
        };
        var m = RetrievalMetrics.Evaluate(qrels, run, [1, 3]);
        Assert.Equal((1 + 0.5 + 1.0 / 3) / 3, m["mrr_at_3"], Digits);
        double ndcg3 = (1 + 1 / Math.Log2(3) + 0.5) / 3;
        Assert.Equal(Math.Round(ndcg3, 5), m["ndcg_at_3"], Digits);
        Assert.NotEqual(ndcg3, m["ndcg_at_3"]); // proves the rounding happened (0.710309...)
        Assert.Equal(m["recall_at_1"], m["accuracy"]);
        Assert.Equal(["ndcg_at_1", "ndcg_at_3", "map_at_1", "map_at_3", "recall_at_1", "recall_at_3", "accuracy",
            "precision_at_1", "precision_at_3", "mrr_at_1", "mrr_at_3", "hit_rate_at_1", "hit_rate_at_3"], m.Keys);
    }

    [Fact]
    public void AveragePrecisionMatchesSklearnIncludingTies()
    {
        // No ties: positives at ranks 1, 3, 5 -> (1/1 + 2/3 + 3/5) / 3 = 0.755555...
        Assert.Equal((1 + 2.0 / 3 + 3.0 / 5) / 3, BinaryMetrics.AveragePrecision([1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.5]), Digits);
        // Ties enter together: thresholds 0.9 (P = 1, R = 1/2), 0.5 (two items, one positive: P = 2/3, R = 1),
        // 0.1 (R unchanged). AP = 1/2 * 1 + 1/2 * 2/3 = 0.8333...
        Assert.Equal(0.5 + 1.0 / 3, BinaryMetrics.AveragePrecision([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]), Digits);
        Assert.True(double.IsNaN(BinaryMetrics.AveragePrecision([0, 0], [0.1, 0.2])));
    }

    [Fact]
    public void BestThresholdAccuracyAndF1FollowMtebScan()
    {
        int[] labels = [1, 1, 0, 1, 0, 0];
        double[] scores = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2];
        // Accuracy after row i = (positives so far + negatives remaining) / 6:
        // i=0: (1+3)/6, i=1: (2+3)/6 = 5/6 (threshold (0.8+0.7)/2 = 0.75), i=2: 4/6, i=3: (3+2)/6 not better, i=4: 4/6
        var (acc, threshold) = BinaryMetrics.BestAccuracy(labels, scores, highScoreMoreSimilar: true);
        Assert.Equal(5.0 / 6, acc, Digits);
        Assert.Equal(0.75, threshold, Digits);
        // F1 after row i: i=0 p=1 r=1/3 f=0.5; i=1 p=1 r=2/3 f=0.8; i=2 p=2/3 r=2/3; i=3 p=3/4 r=1 f=6/7 (best,
        // threshold (0.6+0.3)/2 = 0.45); i=4 p=3/5 r=1 f=0.75
        var (f1, p, r, t) = BinaryMetrics.BestF1(labels, scores, highScoreMoreSimilar: true);
        Assert.Equal(6.0 / 7, f1, Digits);
        Assert.Equal(0.75, p, Digits);
        Assert.Equal(1, r, Digits);
        Assert.Equal(0.45, t, Digits);
        // Distances (low = similar) give the same result on negated scores.
        var (accD, _) = BinaryMetrics.BestAccuracy(labels, scores.Select(s => -s).ToArray(), highScoreMoreSimilar: false);
        Assert.Equal(5.0 / 6, accD, Digits);
    }

    [Fact]
    public void VMeasureMatchesHandComputation()
    {
        // classes [a, a, b, b], clusters [0, 0, 0, 1], N = 4
        // H(C) = ln 2; H(K) = -(3/4 ln 3/4 + 1/4 ln 1/4)
        // MI = 2/4 ln(4*2/(2*3)) + 1/4 ln(4*1/(2*3)) + 1/4 ln(4*1/(2*1)) = 1/2 ln 4/3 + 1/4 ln 2/3 + 1/4 ln 2
        double hC = Math.Log(2), hK = -(0.75 * Math.Log(0.75) + 0.25 * Math.Log(0.25));
        double mi = 0.5 * Math.Log(4.0 / 3) + 0.25 * Math.Log(2.0 / 3) + 0.25 * Math.Log(2);
        double h = mi / hC, c = mi / hK; // 0.311278..., 0.383688...
        var (hom, comp, v) = ClusteringMetrics.HomogeneityCompletenessV(new[] { "a", "a", "b", "b" }, new[] { 0, 0, 0, 1 });
        Assert.Equal(h, hom, Digits);
        Assert.Equal(c, comp, Digits);
        Assert.Equal(2 * h * c / (h + c), v, Digits); // 0.343711...
        // A perfect clustering under renamed cluster ids scores 1; one cluster for two classes scores 0
        // (homogeneity 0, completeness 1).
        Assert.Equal(1, ClusteringMetrics.VMeasure(new[] { "a", "a", "b" }, new[] { 7, 7, 3 }), Digits);
        Assert.Equal(0, ClusteringMetrics.VMeasure(new[] { "a", "b" }, new[] { 0, 0 }), Digits);
    }

    [Fact]
    public void ClassificationMetricsMatchSklearnDefinitions()
    {
        // truth [0,0,1,1,2], predicted [0,1,1,1,0]
        // class 0: tp 1, predicted 2, true 2 -> p 1/2 r 1/2 f 1/2
        // class 1: tp 2, predicted 3, true 2 -> p 2/3 r 1 f 0.8
        // class 2: tp 0, never predicted -> p 0 r 0 f 0
        var s = ClassificationMetrics.Compute([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]);
        Assert.Equal(0.6, s.Accuracy, Digits);
        Assert.Equal((0.5 + 0.8 + 0) / 3, s.F1, Digits);
        Assert.Equal((0.5 * 2 + 0.8 * 2 + 0) / 5, s.F1Weighted, Digits);
        Assert.Equal((0.5 + 2.0 / 3) / 3, s.Precision, Digits);
        Assert.Equal((0.5 * 2 + 2.0 / 3 * 2) / 5, s.PrecisionWeighted, Digits);
        Assert.Equal((0.5 + 1) / 3, s.Recall, Digits);
        Assert.Equal(0.6, s.RecallWeighted, Digits); // weighted recall equals accuracy
        Assert.Null(s.Ap);
        // Binary: truth [0,1,1,0], predicted [0,1,0,0]: AP of hard predictions: threshold 1 -> P 1, R 1/2;
        // threshold 0 -> P 2/4, R 1 -> AP = 1/2 * 1 + 1/2 * 1/2 = 0.75
        var b = ClassificationMetrics.Compute([0, 1, 1, 0], [0, 1, 0, 0]);
        Assert.Equal(0.75, b.Ap!.Value, Digits);
    }

    [Fact]
    public void RerankingAveragePrecisionAndReciprocalRank()
    {
        // candidates scored [0.2, 0.9, 0.5], positives [true, false, true]: order 0.9(-), 0.5(+), 0.2(+)
        // AP = (1/2 + 2/3) / 2 = 7/12; first positive at rank 2 -> RR = 1/2; with k = 1 -> 0
        bool[] pos = [true, false, true];
        double[] sc = [0.2, 0.9, 0.5];
        Assert.Equal(7.0 / 12, RerankingMetrics.AveragePrecision(pos, sc), Digits);
        Assert.Equal(0.5, RerankingMetrics.ReciprocalRank(pos, sc), Digits);
        Assert.Equal(0, RerankingMetrics.ReciprocalRank(pos, sc, k: 1));
    }

    [Fact]
    public void NumpyRandomStateReproducesNumpy()
    {
        // Reference values from numpy 1.24: np.random.RandomState(42).randint(0, 2**32, dtype=np.uint64) draws
        // the raw MT19937 output 1608637542 first; RandomState(42).shuffle(list(range(20))).
        var rng = new NumpyRandomState(42);
        Assert.Equal(1608637542u, rng.NextUInt32());
        var list = Enumerable.Range(0, 20).ToList();
        new NumpyRandomState(42).Shuffle(list);
        Assert.Equal([0, 17, 15, 1, 8, 5, 11, 3, 18, 16, 13, 2, 9, 19, 4, 12, 7, 10, 14, 6], list);
        // MTEB re-seeds every experiment but shuffles the same list again, so the shuffles compound:
        // idxs = list(range(30)); for e in range(3): RandomState(42).shuffle(idxs); print(idxs[:10])
        var idxs = Enumerable.Range(0, 30).ToList();
        int[][] expected =
        [
            [27, 15, 23, 17, 8, 9, 28, 24, 12, 0],
            [14, 22, 29, 2, 12, 0, 19, 20, 5, 27],
            [11, 18, 6, 23, 5, 27, 3, 21, 9, 14],
        ];
        foreach (var e in expected)
        {
            new NumpyRandomState(42).Shuffle(idxs);
            Assert.Equal(e, idxs.Take(10));
        }
    }

    private static Dictionary<string, int> Judgments(params (string Doc, int Grade)[] grades) =>
        grades.ToDictionary(g => g.Doc, g => g.Grade);
}

using Ullme.MLNet.Evaluation.Learners;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>The ML.NET learners used by classification and clustering.</summary>
public class LearnerTests
{
    [Fact]
    public void LogisticRegressionMatchesSklearnObjective()
    {
        // 30 rows, 3 classes, 4 features (formula below). Reference: sklearn 1.2
        // LogisticRegression(max_iter=100).fit(X, y).predict_proba(T) -- C = 1, L2, multinomial, lbfgs (converged
        // in 14 iterations). ML.NET with L2 = 1/C = 1 minimises the same objective, so the probabilities agree to
        // the optimiser tolerance.
        var x = new List<float[]>();
        var y = new List<int>();
        for (int i = 0; i < 30; i++)
        {
            int k = i % 3;
            x.Add([(float)(Math.Sin(i * 1.3) + k * 0.6), (float)(Math.Cos(i * 0.7) - k * 0.3), (float)(Math.Sin(i * 0.37) * 0.5),
                (float)((i % 5) * 0.2 - 0.4)]);
            y.Add(k);
        }
        float[][] t = [[0.3f, -0.2f, 0.1f, 0.0f], [1.2f, 0.4f, -0.3f, 0.2f], [-0.5f, 0.9f, 0.2f, -0.4f]];
        double[][] expected =
        [
            [0.4222942216813186, 0.40845225291559567, 0.16925352540308583],
            [0.17269368754307476, 0.43424442292617765, 0.39306188953074767],
            [0.8080396848982457, 0.18324564943690388, 0.008714665664850418],
        ];
        var (predicted, probabilities) = MlNetLogisticRegression.FitPredictProbabilities(x, y, t, 3, seed: 42);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++)
                Assert.Equal(expected[r][c], probabilities[r][c], 2e-3);
        Assert.Equal([0, 1, 0], predicted);
    }

    [Fact]
    public void KMeansSeparatesWellSeparatedBlobs()
    {
        var x = new List<float[]>();
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 10; i++) x.Add([k * 10 + 0.1f * i, -k * 5 + 0.05f * (i % 3)]);
        var a = MlNetKMeans.Cluster(x, 4, seed: 1);
        for (int k = 0; k < 4; k++) Assert.Single(a.Skip(k * 10).Take(10).Distinct());
        Assert.Equal(4, a.Distinct().Count());
        Assert.Equal(a, MlNetKMeans.Cluster(x, 4, seed: 1)); // a seed gives the same clustering
    }
}

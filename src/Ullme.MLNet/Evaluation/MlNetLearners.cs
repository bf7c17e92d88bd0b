namespace Ullme.MLNet.Evaluation.Learners;

/// <summary>ML.NET's learners for the evaluation tasks; found by <see cref="EvaluationLearners.Default"/> by name.</summary>
internal sealed class MlNetLearners : IClassificationLearner, IClusteringLearner
{
    private MlNetLearners() { }

    internal static EvaluationLearners Instance { get; } = new(new MlNetLearners(), new MlNetLearners());

    public int[] FitPredict(IReadOnlyList<float[]> trainX, IReadOnlyList<int> trainY, IReadOnlyList<float[]> testX,
        int classCount, int seed, int maxIterations) =>
        MlNetLogisticRegression.FitPredict(trainX, trainY, testX, classCount, seed, maxIterations);

    public int[] Cluster(IReadOnlyList<float[]> x, int k, int seed) => MlNetKMeans.Cluster(x, k, seed);
}

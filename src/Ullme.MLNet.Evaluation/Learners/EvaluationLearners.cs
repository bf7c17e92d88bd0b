using System.Reflection;

namespace Ullme.MLNet.Evaluation.Learners;

/// <summary>Fits a multinomial logistic regression (MTEB's classifier) and predicts a class index per test row.</summary>
public interface IClassificationLearner
{
    /// <summary>Trains on (<paramref name="trainX"/>, <paramref name="trainY"/>) with classes 0..<paramref name="classCount"/>-1
    /// and predicts a class index for each row of <paramref name="testX"/>; deterministic for a given seed.</summary>
    int[] FitPredict(IReadOnlyList<float[]> trainX, IReadOnlyList<int> trainY, IReadOnlyList<float[]> testX,
        int classCount, int seed, int maxIterations);
}

/// <summary>Clusters rows into k clusters (MTEB's k-means); deterministic for a given seed.</summary>
public interface IClusteringLearner
{
    /// <summary>Cluster index (0..k-1) per row.</summary>
    int[] Cluster(IReadOnlyList<float[]> x, int k, int seed);
}

/// <summary>
/// The learners behind the Classification and Clustering tasks. The evaluation package holds no learner of its own:
/// ML.NET's (L-BFGS logistic regression, k-means++) are in the <c>Ullme.MLNet</c> package, the only one that
/// references Microsoft.ML, and are found there at run time when <see cref="EvaluationContext.Learners"/> is not
/// set. Give your own to evaluate without ML.NET.
/// </summary>
public sealed class EvaluationLearners
{
    internal const string MlNetAssembly = "Ullme.MLNet";
    internal const string MlNetType = "Ullme.MLNet.Evaluation.Learners.MlNetLearners";

    private static readonly Lazy<EvaluationLearners> MlNet = new(FindMlNet, LazyThreadSafetyMode.ExecutionAndPublication);

    public EvaluationLearners(IClassificationLearner classifier, IClusteringLearner clusterer)
    {
        Classifier = classifier ?? throw new ArgumentNullException(nameof(classifier));
        Clusterer = clusterer ?? throw new ArgumentNullException(nameof(clusterer));
    }

    public IClassificationLearner Classifier { get; }

    public IClusteringLearner Clusterer { get; }

    /// <summary>ML.NET's learners from the <c>Ullme.MLNet</c> package.</summary>
    /// <exception cref="UllmeException">That package is not part of the application.</exception>
    public static EvaluationLearners Default => MlNet.Value;

    private static EvaluationLearners FindMlNet()
    {
        Assembly assembly;
        try
        {
            assembly = Assembly.Load(new AssemblyName(MlNetAssembly));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new UllmeException(
                $"Classification and Clustering tasks need a learner: add the package {MlNetAssembly} (ML.NET's logistic regression and k-means) " +
                "or set EvaluationContext.Learners to your own.", e);
        }
        var type = assembly.GetType(MlNetType, throwOnError: true)!;
        var instance = type.GetProperty("Instance", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)?.GetValue(null) as EvaluationLearners;
        return instance ?? throw new UllmeException($"{MlNetAssembly} has no {MlNetType}.Instance: its version does not match Ullme.MLNet.Evaluation.");
    }
}

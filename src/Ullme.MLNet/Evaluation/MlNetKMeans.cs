using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;

namespace Ullme.MLNet.Evaluation.Learners;

/// <summary>
/// k-means on embeddings with ML.NET's <c>KMeansTrainer</c> (k-means++ initialisation, Yinyang iterations), seeded
/// through the <see cref="MLContext"/>; one thread so a seed always gives the same clustering.
/// </summary>
internal static class MlNetKMeans
{
    private sealed class Row
    {
        public float[] Features { get; set; } = [];
    }

    /// <summary>Cluster index (0..k-1) per row.</summary>
    public static int[] Cluster(IReadOnlyList<float[]> x, int k, int seed, int maxIterations = 1000)
    {
        if (x.Count == 0) throw new ArgumentException("no rows to cluster");
        int dim = x[0].Length;
        var ml = new MLContext(seed);
        var schema = SchemaDefinition.Create(typeof(Row));
        schema[nameof(Row.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, dim);
        var data = ml.Data.LoadFromEnumerable(x.Select(v => new Row { Features = v }).ToList(), schema);
        var trainer = ml.Clustering.Trainers.KMeans(new KMeansTrainer.Options
        {
            FeatureColumnName = nameof(Row.Features),
            NumberOfClusters = k,
            InitializationAlgorithm = KMeansTrainer.InitializationAlgorithm.KMeansPlusPlus,
            MaximumNumberOfIterations = maxIterations,
            NumberOfThreads = 1,
        });
        var model = trainer.Fit(data);
        var assigned = model.Transform(data).GetColumn<uint>("PredictedLabel").ToArray();
        return assigned.Select(a => (int)a - 1).ToArray();
    }
}

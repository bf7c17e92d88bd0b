using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;

namespace Ullme.MLNet.Evaluation.Learners;

/// <summary>
/// Multinomial logistic regression on embeddings with ML.NET's <c>LbfgsMaximumEntropy</c>, set up to match the
/// objective of scikit-learn's <c>LogisticRegression()</c> that MTEB uses: ML.NET minimises
/// (sum of log-losses + L2/2 * ||W||^2) / n with the biases unpenalised, sklearn minimises
/// C * sum of log-losses + 1/2 * ||W||^2 with C = 1, so L2 = 1/C = 1 and L1 = 0 give the same optimum.
/// L-BFGS with memory 10 (sklearn's default), at most 100 iterations (MTEB's max_iter), one thread so results are
/// reproducible. Labels are class indices 0..K-1.
/// </summary>
internal static class MlNetLogisticRegression
{
    private sealed class Row
    {
        public uint Label { get; set; }
        public float[] Features { get; set; } = [];
    }

    private sealed class Prediction
    {
        [ColumnName("PredictedLabel")] public uint PredictedLabel { get; set; }
    }

    /// <summary>Trains on (<paramref name="trainX"/>, <paramref name="trainY"/>) and predicts a class index per
    /// row of <paramref name="testX"/>.</summary>
    public static int[] FitPredict(IReadOnlyList<float[]> trainX, IReadOnlyList<int> trainY, IReadOnlyList<float[]> testX,
        int classCount, int seed, int maxIterations = 100) =>
        FitPredictProbabilities(trainX, trainY, testX, classCount, seed, maxIterations).Predicted;

    /// <summary>As <see cref="FitPredict"/>, also returning the class probabilities of each test row.</summary>
    public static (int[] Predicted, float[][] Probabilities) FitPredictProbabilities(IReadOnlyList<float[]> trainX,
        IReadOnlyList<int> trainY, IReadOnlyList<float[]> testX, int classCount, int seed, int maxIterations = 100)
    {
        if (trainX.Count == 0) throw new ArgumentException("no training rows");
        int dim = trainX[0].Length;
        var ml = new MLContext(seed);
        var schema = SchemaDefinition.Create(typeof(Row));
        schema[nameof(Row.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, dim);
        // Key type with classCount values. Loading from an enumerable stores a property value v as key v + 1 (0 is
        // ML.NET's missing key), so class k is written as k; PredictedLabel comes back as the raw key k + 1.
        schema[nameof(Row.Label)].ColumnType = new KeyDataViewType(typeof(uint), classCount);

        var rows = trainX.Select((x, i) => new Row { Label = (uint)trainY[i], Features = x }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows, schema);
        var trainer = ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(new LbfgsMaximumEntropyMulticlassTrainer.Options
        {
            LabelColumnName = nameof(Row.Label),
            FeatureColumnName = nameof(Row.Features),
            L1Regularization = 0f,
            L2Regularization = 1f,
            HistorySize = 10,
            MaximumNumberOfIterations = maxIterations,
            OptimizationTolerance = 1e-7f,
            NumberOfThreads = 1,
            EnforceNonNegativity = false,
        });
        var model = trainer.Fit(data);

        var testRows = testX.Select(x => new Row { Label = 0, Features = x }).ToList();
        var scored = model.Transform(ml.Data.LoadFromEnumerable(testRows, schema));
        var predicted = scored.GetColumn<uint>("PredictedLabel").ToArray();
        var probabilities = scored.GetColumn<float[]>("Score").ToArray();
        var result = new int[predicted.Length];
        for (int i = 0; i < predicted.Length; i++) result[i] = (int)predicted[i] - 1;
        return (result, probabilities);
    }
}

using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Samples;

/// <summary>UllmeEmbed as the feature extractor in front of standard ML.NET trainers and evaluators.</summary>
public static class PipelinesSample
{
    public static int Run(string? assetsFolder)
    {
        string assets = SampleData.AssetsRoot(assetsFolder);
        var ml = new MLContext(seed: 1);

        // 1. Multiclass intent classification: text -> embedding -> LbfgsMaximumEntropy.
        var intents = ml.Data.LoadFromEnumerable(SampleData.Banking77(ml, assets, classes: 10, perClass: 30));
        var split = ml.Data.TrainTestSplit(intents, testFraction: 0.2, seed: 1);
        var classifier = ml.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default")
            .AppendCacheCheckpoint(ml) // the trainer makes many passes: embed once
            .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            // Embedding components are small (unit-norm vectors): light L2 and no L1, or the defaults zero the weights.
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(l1Regularization: 0, l2Regularization: 0.01f));
        var model = classifier.Fit(split.TrainSet);
        var mc = ml.MulticlassClassification.Evaluate(model.Transform(split.TestSet));
        Console.WriteLine($"Banking77 (10 intents): micro accuracy {mc.MicroAccuracy:F3}, macro accuracy {mc.MacroAccuracy:F3}, log-loss {mc.LogLoss:F3}");

        // 2. Clustering: k-means on embeddings, scored against the true intents (NMI).
        var four = ml.Data.LoadFromEnumerable(SampleData.Banking77(ml, assets, classes: 4, perClass: 25));
        var clustering = ml.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default")
            .AppendCacheCheckpoint(ml)
            .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            .Append(ml.Clustering.Trainers.KMeans(numberOfClusters: 4));
        var clustered = clustering.Fit(four).Transform(four);
        var cm = ml.Clustering.Evaluate(clustered, labelColumnName: "Label");
        Console.WriteLine($"k-means (4 intents): NMI {cm.NormalizedMutualInformation:F3}, average distance {cm.AverageDistance:F3}");

        // 3. Regression: STS-B similarity from a pair of embeddings (cosine + element-wise product).
        var train = ml.Data.LoadFromEnumerable(SampleData.StsB(assets, "sts-train.csv", 200));
        var dev = ml.Data.LoadFromEnumerable(SampleData.StsB(assets, "sts-dev.csv", 100));
        var regression = PairFeatures(ml)
            .Append(ml.Regression.Trainers.Sdca(labelColumnName: "Label", featureColumnName: "Features", l2Regularization: 0.01f));
        var rm = ml.Regression.Evaluate(regression.Fit(train).Transform(dev));
        Console.WriteLine($"STS-B regression: R^2 {rm.RSquared:F3}, RMSE {rm.RootMeanSquaredError:F3}");
        return 0;
    }

    /// <summary>Both texts embedded by the same model; Features = [cosine, e1 * e2].</summary>
    public static IEstimator<ITransformer> PairFeatures(MLContext ml) =>
        ml.Transforms.UllmeEmbed(outputColumnName: "E1", inputColumnName: "Text1", model: "default")
            .Append(ml.Transforms.UllmeEmbed(outputColumnName: "E2", inputColumnName: "Text2", model: "default"))
            .AppendCacheCheckpoint(ml)
            .Append(ml.Transforms.CustomMapping<PairIn, PairOut>((i, o) =>
            {
                // ML.NET reuses the output object across rows: assign every member, never accumulate into it.
                var product = new float[i.E1.Length];
                float cosine = 0; // embeddings are L2-normalised, so the dot product is the cosine
                for (int k = 0; k < product.Length; k++) { product[k] = i.E1[k] * i.E2[k]; cosine += product[k]; }
                o.Product = product;
                o.Cosine = cosine;
            }, contractName: null))
            .Append(ml.Transforms.Concatenate("Features", "Cosine", "Product"));

    public sealed class PairIn
    {
        [VectorType] public float[] E1 { get; set; } = [];
        [VectorType] public float[] E2 { get; set; } = [];
    }

    public sealed class PairOut
    {
        public float Cosine { get; set; }
        [VectorType(384)] public float[] Product { get; set; } = [];
    }
}

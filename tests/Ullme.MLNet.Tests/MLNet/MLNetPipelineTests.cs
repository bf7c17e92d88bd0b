using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// UllmeEmbed feeding ML.NET trainers on real data, scored with ML.NET's evaluators: intent classification
/// (LbfgsMaximumEntropy), k-means clustering, STS-B similarity regression; and a trained pipeline surviving
/// Model.Save/Load. Small slices keep these quick; the thresholds sit far above chance.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class MLNetPipelineTests
{
    private sealed class PairRow
    {
        public string Text1 { get; set; } = "";
        public string Text2 { get; set; } = "";
        public float Label { get; set; }
    }

    private sealed class PredictedIntent
    {
        public uint PredictedLabel { get; set; } // the key of the intent
    }

    /// <summary>First <paramref name="perClass"/> texts of the first <paramref name="classes"/> intents, interleaved.</summary>
    private static List<LabeledText> Banking77(MLContext ml, int classes, int perClass)
    {
        // The samples' loader (quoted texts span lines: ReadMultilines).
        var groups = Ullme.MLNet.Samples.SampleData.ReadIntentCsv(ml, Assets.Path("data", "banking77", "train.csv"))
            .GroupBy(r => r.Label).Take(classes).Select(g => g.Take(perClass).ToList()).ToList();
        return Enumerable.Range(0, perClass)
            .SelectMany(i => groups.Where(g => i < g.Count).Select(g => new LabeledText { Text = g[i].Text, Label = g[i].Label }))
            .ToList();
    }

    [AssetFact]
    public void Banking77_intents_with_LbfgsMaximumEntropy_are_classified_well_above_chance_and_survive_save_load()
    {
        var ml = new MLContext(seed: 1);
        var rows = Banking77(ml, classes: 10, perClass: 30);
        // Rows are interleaved by intent (row i is the (i / 10)-th text of intent i % 10): every 5th round is held out.
        var train = ml.Data.LoadFromEnumerable(rows.Where((_, i) => i / 10 % 5 != 0));
        var test = ml.Data.LoadFromEnumerable(rows.Where((_, i) => i / 10 % 5 == 0)); // 60 rows, 6 per intent

        var pipeline = ml.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default")
            .AppendCacheCheckpoint(ml)
            .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(l1Regularization: 0, l2Regularization: 0.01f));
        var model = pipeline.Fit(train);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        Assert.True(metrics.MacroAccuracy >= 0.75, $"macro accuracy {metrics.MacroAccuracy:F3} (chance 0.1)");

        // The whole trained pipeline round-trips through a zip with the same predictions.
        string zip = Path.Combine(Path.GetTempPath(), $"ullme-banking-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, train.Schema, zip);
            var loaded = new MLContext().Model.Load(zip, out var schema);
            using var before = ml.Model.CreatePredictionEngine<LabeledText, PredictedIntent>(model);
            using var after = ml.Model.CreatePredictionEngine<LabeledText, PredictedIntent>(loaded, schema);
            foreach (var row in rows.Take(10))
                Assert.Equal(before.Predict(row).PredictedLabel, after.Predict(row).PredictedLabel);
        }
        finally { File.Delete(zip); }
    }

    [AssetFact]
    public void KMeans_on_embeddings_recovers_intents()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Banking77(ml, classes: 4, perClass: 25));
        var pipeline = ml.Transforms.UllmeEmbed(model: "default")
            .AppendCacheCheckpoint(ml)
            .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            .Append(ml.Clustering.Trainers.KMeans(numberOfClusters: 4));
        var metrics = ml.Clustering.Evaluate(pipeline.Fit(data).Transform(data), labelColumnName: "Label");
        Assert.True(metrics.NormalizedMutualInformation >= 0.5, $"NMI {metrics.NormalizedMutualInformation:F3} (random ~0)");
    }

    private static List<PairRow> StsB(string file, int count) =>
        File.ReadLines(Assets.Path("data", "stsbenchmark", file))
            .Select(l => l.Split('\t')).Where(f => f.Length >= 7)
            .Take(count)
            .Select(f => new PairRow { Label = float.Parse(f[4], CultureInfo.InvariantCulture) / 5f, Text1 = f[5], Text2 = f[6] })
            .ToList();

    private sealed class PairIn
    {
        [VectorType] public float[] E1 { get; set; } = [];
        [VectorType] public float[] E2 { get; set; } = [];
    }

    private sealed class PairOut
    {
        public float Cosine { get; set; }
        [VectorType(384)] public float[] Product { get; set; } = [];
    }

    [AssetFact]
    public void StsB_similarity_regression_on_pair_embeddings_explains_the_scores()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(StsB("sts-train.csv", 200));
        var dev = ml.Data.LoadFromEnumerable(StsB("sts-dev.csv", 100));
        var pipeline = ml.Transforms.UllmeEmbed(outputColumnName: "E1", inputColumnName: "Text1", model: "default")
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
            .Append(ml.Transforms.Concatenate("Features", "Cosine", "Product"))
            .Append(ml.Regression.Trainers.Sdca(labelColumnName: "Label", featureColumnName: "Features", l2Regularization: 0.01f));
        var metrics = ml.Regression.Evaluate(pipeline.Fit(train).Transform(dev));
        Assert.True(metrics.RSquared >= 0.6, $"R^2 {metrics.RSquared:F3} (a constant predictor scores <= 0)");
    }
}

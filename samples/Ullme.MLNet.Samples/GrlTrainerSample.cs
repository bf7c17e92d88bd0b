using System.Diagnostics;
using Microsoft.ML;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Samples;

/// <summary>GrlTrainer end to end: JSONL triplets → IDataView → Fit → STS-B dev before/after → zip and HF folder.</summary>
public static class GrlTrainerSample
{
    public sealed class TripletRow
    {
        public string Query { get; set; } = "";
        public string Positive { get; set; } = "";
        public string[] Negatives { get; set; } = [];
    }

    public static int Run(string model, string triplets, string stsDev, string output, string strategy, double learningRate)
    {
        var ml = new MLContext(seed: 1);
        // ML.NET's log carries one line per step from channel "GrlTrainer"; print the summary lines and every 10th step.
        ml.Log += (_, e) =>
        {
            if (!e.Message.Contains("GrlTrainer: ", StringComparison.Ordinal)) return;
            bool step = e.Message.Contains("GrlTrainer: step ", StringComparison.Ordinal);
            if (!step || e.Message.Contains("0/", StringComparison.Ordinal)) Console.WriteLine(e.Message[(e.Message.IndexOf("GrlTrainer: ", StringComparison.Ordinal))..]);
        };

        var rows = TrainingData.LoadJsonl(triplets).Select(e => new TripletRow { Query = e.Query, Positive = e.Positive, Negatives = [.. e.Negatives] });
        IDataView data = ml.Data.LoadFromEnumerable(rows);

        var options = new GrlTrainerOptions
        {
            Model = model,
            FineTune = new FineTuneOptions
            {
                Strategy = Enum.Parse<TrainingStrategy>(strategy, ignoreCase: true),
                Lora = null,                                            // tiny model: full fine-tuning
                MaxLength = 128, BatchSize = 32, Epochs = 1,          // warm-up derived: min(10% of the steps, 500)
                Decay = Ullme.MLNet.Training.Optimization.DecayKind.Linear,
                Optimizer = new() { LearningRate = learningRate },
            },
            InputColumnName = "Text",                                   // the tuned transformer embeds a Text column
            ExportFolder = Path.Combine(output, "model"),               // HF + sentence-transformers folder
        };
        var trainer = ml.Transforms.UllmeGrlTrainer(options);
        var clock = Stopwatch.StartNew();
        UllmeEmbeddingTransformer tuned = trainer.Fit(data);
        Console.WriteLine($"trained {trainer.LastTrainingResult!.StepsDone} steps in {clock.Elapsed.TotalSeconds:F1} s");

        var metric = StsSpearmanMetric.FromStsBenchmark(stsDev);
        var embed = new EmbeddingOptions { Pooling = tuned.EffectiveDefaults.Pooling, Attention = tuned.EffectiveDefaults.Attention, MaxLength = 128 };
        using (var baseModel = UllmeModel.Load(model))
            Console.WriteLine($"STS-B dev Spearman ({metric.PairCount} pairs): base {metric.Evaluate(baseModel, embed):F4}, tuned {metric.Evaluate(tuned.Model, embed):F4}");

        string zip = Path.Combine(output, "tuned.zip");
        var textSchema = ml.Data.LoadFromEnumerable(new[] { new SaveLoadSample.TextRow() }).Schema;
        ml.Model.Save(tuned, textSchema, zip);
        Console.WriteLine($"saved {zip} ({new FileInfo(zip).Length / 1e6:F1} MB) and {options.ExportFolder}");
        using var reloaded = UllmeModel.Load(options.ExportFolder);
        Console.WriteLine($"reloaded export: STS-B dev Spearman {metric.Evaluate(reloaded, embed):F4}");
        return 0;
    }
}

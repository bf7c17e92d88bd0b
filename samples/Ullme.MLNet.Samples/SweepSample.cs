using Microsoft.ML;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Samples;

/// <summary>GrlTrainerSweep: a grid over strategy × temperature, each trial a GrlTrainer fit scored by STS-B dev
/// Spearman over an IDataView; leaderboard, best.zip and best/ under the output folder.</summary>
public static class SweepSample
{
    public sealed class StsRow
    {
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
        public float Score { get; set; }
    }

    public static int Run(string model, string triplets, string stsDev, string output, int trainRows, int devRows)
    {
        var ml = new MLContext(seed: 1);
        // The sweep's own lines (plan, baseline, each trial, leaderboard) come through ML.NET's log, channel "GrlTrainerSweep".
        ml.Log += (_, e) =>
        {
            int at = e.Message.IndexOf("GrlTrainerSweep: ", StringComparison.Ordinal);
            if (at >= 0) Console.WriteLine(e.Message[at..]);
        };

        var train = ml.Data.LoadFromEnumerable(TrainingData.LoadJsonl(triplets).Take(trainRows)
            .Select(e => new GrlTrainerSample.TripletRow { Query = e.Query, Positive = e.Positive, Negatives = [.. e.Negatives] }));
        var dev = ml.Data.LoadFromEnumerable(StsBenchmarkFormat.Read(stsDev).Take(devRows)
            .Select(p => new StsRow { Sentence1 = p.Text1, Sentence2 = p.Text2, Score = (float)p.Score }));

        var space = new SweepSpace(
            SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl),
            SweepDimension.Temperature(0.02, 0.05));
        var sweep = ml.Transforms.UllmeGrlSweep(space, TransformerSweepMetric.StsSpearman(dev), new GrlTrainerSweepOptions
        {
            Trainer = new GrlTrainerOptions
            {
                Model = model,
                FineTune = new FineTuneOptions
                {
                    Lora = null, MaxLength = 128, BatchSize = 32, Epochs = 1,   // warm-up derived from the steps
                    Optimizer = new() { LearningRate = 1e-3 },
                },
            },
            OutputDirectory = output,
        });
        GrlTrainerSweepResult result = sweep.Run(train);
        Console.WriteLine($"best: {result.Best?.Point} → {result.BestModelZip}, {result.BestModelFolder}");
        return result.Best is null ? 1 : 0;
    }
}

using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.Training.Integration;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Sweeps;
using Ullme.MLNet.Transforms;
using Xunit.Abstractions;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>GrlTrainerSweep: trials are GrlTrainer fits scored by ML.NET evaluations on dev IDataViews.</summary>
[Collection(TorchCollection.Name)]
public sealed class GrlTrainerSweepTests(ITestOutputHelper output) : SingleThreaded
{
    private readonly List<string> _folders = [];

    public override void Dispose()
    {
        foreach (var f in _folders) if (Directory.Exists(f)) Directory.Delete(f, recursive: true);
        base.Dispose();
    }

    private string Temp(string prefix)
    {
        var f = MLNetTestData.NewTempFolder(prefix);
        _folders.Add(f);
        return f;
    }

    private string TinyLlama()
    {
        var f = GrlTrainerTestData.TinyLlamaFolder();
        _folders.Add(f);
        return f;
    }

    private static GrlTrainerOptions Trainer(string model) => new()
    {
        Model = model,
        FineTune = new FineTuneOptions
        {
            Strategy = TrainingStrategy.Contrastive, Lora = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }, MaxLength = 24,
            BatchSize = 4, MaxSteps = 3, WarmupSteps = 0, Optimizer = new() { LearningRate = 3e-2 }, Shuffle = false, Seed = 2,
        },
    };

    public sealed class StsRow
    {
        public string Sentence1 { get; set; } = "";
        public string Sentence2 { get; set; } = "";
        public float Score { get; set; }
    }

    /// <summary>Pairs over the tiny vocabulary: a sentence with itself (5), with one word changed (3), with its words
    /// reordered (2) and with an unrelated sentence (0).</summary>
    private static List<StsRow> StsPairs(int count)
    {
        var s = GrlTrainerTestData.TinyTriplets(2 * count);
        var rows = new List<StsRow>();
        for (int i = 0; i < count; i++)
        {
            var words = s[i].Query.Split(' ');
            var (text, score) = (i % 4) switch
            {
                0 => (s[i].Query, 5f),
                1 => (string.Join(' ', words.Take(words.Length - 1).Append("music")), 3f),
                2 => (string.Join(' ', words.Reverse()), 2f),
                _ => (s[count + i].Positive, 0f),
            };
            rows.Add(new StsRow { Sentence1 = s[i].Query, Sentence2 = text, Score = score });
        }
        return rows;
    }

    public sealed class LabeledText
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    /// <summary>Four topics, each sentence naming its topic's word among filler words.</summary>
    private static List<LabeledText> Topics(int perTopic)
    {
        string[] topics = ["dog", "guitar", "car", "water"];
        string[] filler = ["a", "the", "is", "in", "on", "park", "house", "red", "blue", "small", "big", "two"];
        var rng = new Random(11);
        return Enumerable.Range(0, perTopic * topics.Length).Select(i =>
        {
            var t = topics[i % topics.Length];
            var words = Enumerable.Range(0, 4).Select(_ => filler[rng.Next(filler.Length)]).ToList();
            words.Insert(rng.Next(words.Count + 1), t);
            return new LabeledText { Text = string.Join(' ', words), Label = t };
        }).ToList();
    }

    /// <summary>A downstream ML.NET task as the dev metric: embed the dev texts with the tuned model, train a
    /// maximum-entropy classifier on one half, macro accuracy on the other half.</summary>
    private static double MacroAccuracy(MLContext ml, UllmeEmbeddingTransformer tuned, IDataView dev)
    {
        var split = ml.Data.TrainTestSplit(dev, testFraction: 0.5, seed: 3);
        var embed = tuned.WithColumns("Features", "Text");
        var train = ml.Data.Cache(embed.Transform(split.TrainSet));
        var classifier = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(new LbfgsMaximumEntropyMulticlassTrainer.Options { NumberOfThreads = 1, L1Regularization = 0, L2Regularization = 1e-4f }))
            .Fit(train);
        return ml.MulticlassClassification.Evaluate(classifier.Transform(embed.Transform(split.TestSet))).MacroAccuracy;
    }

    [Fact]
    public void Grid_of_two_gives_two_trials_ranked_by_sts_spearman_with_a_saved_best_that_reloads_to_its_metric()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("GrlTrainerSweep: ", StringComparison.Ordinal)) lock (log) log.Add(e.Message); };
        string model = TinyLlama(), dir = Temp("ullme-mlsweep-");
        var train = GrlTrainerTestData.View(ml, GrlTrainerTestData.TinyTriplets(16));
        var dev = ml.Data.LoadFromEnumerable(StsPairs(24));
        var metric = TransformerSweepMetric.StsSpearman(dev);
        var seen = new List<SweepTrial>();
        var sweep = ml.Transforms.UllmeGrlSweep(new SweepSpace(SweepDimension.Pooling(PoolingMode.Mean, PoolingMode.LastToken)), metric,
            new GrlTrainerSweepOptions { Trainer = Trainer(model), OutputDirectory = dir, Progress = new SyncProgress(seen.Add) });
        var result = sweep.Run(train);
        output.WriteLine(result.Leaderboard());

        Assert.Equal([0, 1], seen.Select(t => t.Index));
        Assert.Equal(2, result.Sweep.Trials.Count);
        Assert.All(result.Sweep.Trials, t => Assert.True(t.Succeeded && t.Training!.StepsDone == 3));
        Assert.True(result.Sweep.Trials[0].Metric > result.Sweep.Trials[1].Metric, result.Leaderboard());
        Assert.Equal("sts_spearman", result.Sweep.MetricName);
        Assert.True(double.IsFinite(result.Sweep.BaselineMetric));

        // Each trial is a plain GrlTrainer fit from the base weights: refitting the runner-up alone gives its metric.
        var second = result.Sweep.Trials[1];
        var alone = ml.Transforms.UllmeGrlTrainer(Trainer(model).Also(o => o.FineTune = second.Point.Apply(o.FineTune))).Fit(train);
        Assert.Equal(second.Metric, metric.Evaluate(alone), 12);

        // The best transformer (in memory, ML.NET zip, export folder) reproduces the reported metric.
        double best = result.Best!.Metric;
        Assert.Equal(best, metric.Evaluate(result.BestModel!), 12);
        Assert.Equal(Path.Combine(dir, "best.zip"), result.BestModelZip);
        var loaded = Assert.IsType<UllmeEmbeddingTransformer>(ml.Model.Load(result.BestModelZip, out var schema));
        Assert.NotNull(schema.GetColumnOrNull("Query"));
        Assert.Equal(best, metric.Evaluate(loaded), 12);
        Assert.Equal(result.Best.Point.Settings[0].Value, loaded.EffectiveDefaults.Pooling.ToString());
        using (var folder = UllmeModel.Load(result.BestModelFolder!))
        {
            var fromFolder = ml.Transforms.UllmeEmbed(folder, "Features", "Query").Fit(train);
            Assert.Equal(best, metric.Evaluate(fromFolder), 12);
        }
        Assert.False(File.Exists(Path.Combine(dir, "best.zip.tmp")));

        var csv = File.ReadAllLines(Path.Combine(dir, "leaderboard.csv"));
        Assert.Equal("rank,trial,pooling,sts_spearman,final_loss,steps,seconds", string.Join(',', csv[0].Split(',').Take(7)));
        Assert.Equal(3, csv.Length);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "leaderboard.json")))!;
        Assert.Equal(best, json["trials"]![0]!["sts_spearman"]!.GetValue<double>());

        // Progress reached the MLContext's log: plan, baseline, each trial's start and metric, the leaderboard.
        Assert.Contains(log, m => m.Contains("2 trial(s) (Grid) over pooling on 16 training rows; dev metric sts_spearman", StringComparison.Ordinal));
        Assert.Contains(log, m => m.Contains("baseline (untrained) sts_spearman", StringComparison.Ordinal));
        Assert.Contains(log, m => m.Contains("trial 1/2: pooling=Mean", StringComparison.Ordinal));
        Assert.Contains(log, m => m.Contains("trial 2/2: sts_spearman ", StringComparison.Ordinal));
        Assert.Contains(log, m => m.Contains("leaderboard", StringComparison.Ordinal) && m.Contains("rank  trial  pooling", StringComparison.Ordinal));
    }

    [Fact]
    public void Any_MLNet_evaluator_is_a_dev_metric_and_the_zip_reproduces_it()
    {
        var ml = new MLContext(seed: 1);
        string model = TinyLlama(), dir = Temp("ullme-mlsweep-cls-");
        var train = GrlTrainerTestData.View(ml, GrlTrainerTestData.TinyTriplets(16));
        var dev = ml.Data.LoadFromEnumerable(Topics(10));
        int calls = 0;
        var metric = TransformerSweepMetric.OnDevData("macro_accuracy", dev, (t, d) => { calls++; return MacroAccuracy(ml, t, d); });
        var options = new GrlTrainerSweepOptions
        {
            Trainer = Trainer(model), OutputDirectory = dir, Search = SweepSearch.Random, MaxTrials = 2, Seed = 4,
        };
        var space = new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl), SweepDimension.LearningRate(3e-2, 1e-1));
        var sweep = ml.Transforms.UllmeGrlSweep(space, metric, options);
        Assert.Equal(space.Random(2, 4).Select(p => p.ToString()), sweep.Points().Select(p => p.ToString()));
        var result = sweep.Run(train);
        output.WriteLine(result.Leaderboard());

        Assert.Equal(3, calls);                                    // baseline + 2 trials
        Assert.Equal(2, result.Sweep.Trials.Count);
        Assert.All(result.Sweep.Trials, t => Assert.InRange(t.Metric, 0, 1));
        Assert.True(result.Sweep.Trials[0].Metric > result.Sweep.Trials[1].Metric, result.Leaderboard());   // distinct metrics, best first
        Assert.Equal(result.Best!.Metric, MacroAccuracy(ml, result.BestModel!, dev), 12);
        var loaded = (UllmeEmbeddingTransformer)ml.Model.Load(result.BestModelZip, out _);
        Assert.Equal(result.Best.Metric, MacroAccuracy(ml, loaded, dev), 12);
    }

    [Fact]
    public void A_lower_is_better_metric_ranks_ascending()
    {
        var ml = new MLContext(seed: 1);
        string model = TinyLlama();
        var train = GrlTrainerTestData.View(ml, GrlTrainerTestData.TinyTriplets(8));
        var texts = ml.Data.LoadFromEnumerable(Topics(2));
        // Mean Euclidean distance of the tuned embeddings from the base model's: lower = closer to the base.
        using var baseModel = UllmeModel.Load(model);
        var reference = new EmbeddingEngine(baseModel).Embed(Topics(2).Select(t => t.Text).ToArray(), new EmbeddingOptions { MaxLength = 24 });
        var metric = TransformerSweepMetric.OnDevData("drift", texts, (t, d) =>
        {
            var e = ml.Data.CreateEnumerable<FeaturesRow>(t.WithColumns("Features", "Text").Transform(d), reuseRowObject: false).ToList();
            return e.Select((r, i) => Math.Sqrt(r.Features.Zip(reference[i]).Sum(p => (double)(p.First - p.Second) * (p.First - p.Second)))).Average();
        }, higherIsBetter: false);
        var result = ml.Transforms.UllmeGrlSweep(baseModel, new SweepSpace(SweepDimension.LearningRate(1e-1, 1e-4)), metric,
            new GrlTrainerSweepOptions { Trainer = Trainer(model) }).Run(train);

        Assert.Equal(0, result.Sweep.BaselineMetric, 6);               // the untrained base does not drift
        Assert.Equal("0.0001", result.Best!.Point.Settings[0].Value);   // the tiny step drifts least
        Assert.True(result.Sweep.Trials[0].Metric < result.Sweep.Trials[1].Metric);
        Assert.Null(result.BestModelZip);
        Assert.Null(result.BestModelFolder);
        Assert.NotNull(result.BestModel);
    }

    [Fact]
    public void Bad_dev_or_training_columns_fail_before_training_and_name_the_column()
    {
        var ml = new MLContext(seed: 1);
        var sts = ml.Data.LoadFromEnumerable(StsPairs(8));
        var missing = Assert.Throws<UllmeException>(() => TransformerSweepMetric.StsSpearman(sts, scoreColumnName: "Similarity"));
        Assert.Contains("score column 'Similarity' not found", missing.Message);
        Assert.Contains("'Score'", missing.Message);
        var wrongType = Assert.Throws<UllmeException>(() => TransformerSweepMetric.StsSpearman(sts, sentence2ColumnName: "Score"));
        Assert.Contains("sentence 2 column 'Score' must be of type String (text), found Single", wrongType.Message);
        var textScore = Assert.Throws<UllmeException>(() => TransformerSweepMetric.StsSpearman(sts, scoreColumnName: "Sentence1"));
        Assert.Contains("score column 'Sentence1' must be numeric", textScore.Message);

        // A custom ML.NET evaluator reading a column the dev data lacks fails on the baseline, before any trial.
        string model = TinyLlama();
        var train = GrlTrainerTestData.View(ml, GrlTrainerTestData.TinyTriplets(8));
        var dev = ml.Data.LoadFromEnumerable(Topics(2));
        var trials = new List<SweepTrial>();
        var metric = TransformerSweepMetric.OnDevData("macro_accuracy", dev, (t, d) => ml.Data.CreateEnumerable<FeaturesRow>(t.WithColumns("Features", "Sentence").Transform(d), false).Count());
        var options = new GrlTrainerSweepOptions { Trainer = Trainer(model), Progress = new SyncProgress(trials.Add) };
        var space = new SweepSpace(SweepDimension.Temperature(0.05));
        var e = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeGrlSweep(space, metric, options).Run(train));
        Assert.Contains("dev metric 'macro_accuracy' failed on the untrained base model", e.Message);
        Assert.Contains("input column 'Sentence' not found", e.Message);
        Assert.Empty(trials);

        // Training columns are checked once, up front.
        var good = TransformerSweepMetric.StsSpearman(sts);
        var badTrain = ml.Data.LoadFromEnumerable(Topics(2));
        var t = Assert.Throws<UllmeException>(() => ml.Transforms.UllmeGrlSweep(space, good, options).Run(badTrain));
        Assert.Contains("query column 'Query' not found", t.Message);
        Assert.Empty(trials);

        Assert.Contains("MaxTrials is required", Assert.Throws<UllmeException>(() =>
            ml.Transforms.UllmeGrlSweep(space, good, new GrlTrainerSweepOptions { Trainer = Trainer(model), Search = SweepSearch.Random })).Message);
    }

    private sealed class SyncProgress(Action<SweepTrial> action) : IProgress<SweepTrial>
    {
        public void Report(SweepTrial value) => action(value);
    }
}

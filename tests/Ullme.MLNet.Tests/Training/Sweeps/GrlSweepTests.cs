using System.Text.Json.Nodes;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.Training.Integration;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Sweeps;
using Xunit.Abstractions;

namespace Ullme.MLNet.Tests.Training.Sweeps;

public sealed class SweepSpaceTests
{
    [Fact]
    public void Grid_lists_every_combination_with_the_last_dimension_fastest()
    {
        var space = new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl), SweepDimension.Temperature(0.02, 0.05, 0.1));
        Assert.Equal(6, space.GridSize);
        var grid = space.Grid();
        Assert.Equal(["strategy=Contrastive, temperature=0.02", "strategy=Contrastive, temperature=0.05", "strategy=Contrastive, temperature=0.1",
                      "strategy=Grl, temperature=0.02", "strategy=Grl, temperature=0.05", "strategy=Grl, temperature=0.1"], grid.Select(p => p.ToString()));
        var applied = grid[4].Apply(new FineTuneOptions { Weights = new LossWeights(1, 1, 1, 1) });
        Assert.Equal(TrainingStrategy.Grl, applied.Strategy);
        Assert.Null(applied.Weights);                  // a preset replaces free weights
        Assert.Equal(0.05, applied.Temperature);
    }

    [Fact]
    public void Random_search_draws_distinct_points_reproducibly()
    {
        var space = new SweepSpace(SweepDimension.LearningRate(1e-4, 3e-4, 1e-3), SweepDimension.Pooling(PoolingMode.Mean, PoolingMode.LastToken),
            SweepDimension.LoraRank(4, 8));
        var a = space.Random(5, seed: 7).Select(p => p.ToString()).ToList();
        Assert.Equal(5, a.Distinct().Count());
        Assert.Equal(a, space.Random(5, seed: 7).Select(p => p.ToString()));
        Assert.NotEqual(a, space.Random(5, seed: 8).Select(p => p.ToString()));
        Assert.Subset(space.Grid().Select(p => p.ToString()).ToHashSet(), a.ToHashSet());
        Assert.Equal(12, space.Random(100, seed: 1).Select(p => p.ToString()).Distinct().Count());
    }

    [Fact]
    public void Lora_rank_keeps_the_update_scale_and_bad_spaces_are_refused()
    {
        var o = SweepDimension.LoraRank(8).Apply(new FineTuneOptions { Lora = new LoraOptions { Rank = 16, Alpha = 32 } }, 8);
        Assert.Equal((8, 16.0), (o.Lora!.Rank, o.Lora.Alpha));
        Assert.Contains("needs LoRA", Assert.Throws<UllmeException>(() => SweepDimension.LoraRank(8).Apply(new FineTuneOptions { Lora = null }, 8)).Message);
        Assert.Contains("appears twice", Assert.Throws<UllmeException>(() => new SweepSpace(SweepDimension.Temperature(0.1), SweepDimension.Temperature(0.2))).Message);
        Assert.Contains("has no values", Assert.Throws<UllmeException>(() => SweepDimension.Temperature()).Message);
    }
}

[Collection(TorchCollection.Name)]
public sealed class GrlSweepTests(ITestOutputHelper output) : SingleThreaded
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-sweep-").FullName;

    public override void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
        base.Dispose();
    }

    private static readonly FineTuneOptions Base = new()
    {
        Lora = null, MaxLength = 48, BatchSize = 8, MaxSteps = 3, WarmupSteps = 0, Shuffle = false,
        Optimizer = new() { LearningRate = 1e-3 }, Seed = 5,
    };

    [AssetFact]
    public void A_tiny_grid_sweep_ranks_trials_records_failures_and_saves_a_best_model_that_reloads_with_its_metric()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var train = TrainingData.LoadJsonl(Assets.Path("data", "snli", "triplets.jsonl")).Take(24).ToList();
        var metric = StsSpearmanMetric.FromStsBenchmark(Assets.Path("data", "stsbenchmark", "sts-dev.csv"), limit: 150);
        var space = new SweepSpace(
            SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl),
            SweepDimension.Temperature(0.05, -1));                       // τ = -1 is invalid: those trials fail
        var seen = new List<SweepTrial>();
        var sweep = new GrlSweep(model, space, metric, new SweepOptions { BaseOptions = Base, OutputDirectory = _dir });
        var result = sweep.Run(train, new SyncProgress(seen.Add));
        output.WriteLine(result.Leaderboard());

        Assert.Equal([0, 1, 2, 3], seen.Select(t => t.Index));
        Assert.Equal(4, result.Trials.Count);
        var ok = result.Trials.Where(t => t.Succeeded).ToList();
        Assert.Equal(2, ok.Count);
        Assert.Equal(ok, result.Trials.Take(2));                              // failures rank last
        Assert.True(ok[0].Metric >= ok[1].Metric);
        Assert.All(result.Trials.Skip(2), t => Assert.Contains("Temperature must be a positive number", t.Error));
        Assert.All(ok, t => Assert.Equal(3, t.Training!.StepsDone));
        Assert.True(double.IsFinite(result.BaselineMetric));
        Assert.NotEqual(result.BaselineMetric, ok[0].Metric);

        // The best model folder reloads (its own pooling/attention defaults) to the reported metric.
        Assert.Equal(Path.Combine(_dir, "best"), result.BestModelFolder);
        using (var best = UllmeModel.Load(result.BestModelFolder))
        {
            var d = best.Defaults;
            double again = metric.Evaluate(best, new EmbeddingOptions { Pooling = d.Pooling, Attention = d.Attention, MaxLength = d.MaxLength, Normalize = d.Normalize });
            Assert.Equal(result.Best!.Metric, again, 12);
        }
        Assert.False(Directory.Exists(Path.Combine(_dir, "best.tmp")));

        // Leaderboard files: CSV header + one row per trial in rank order; JSON with the same order.
        var csv = File.ReadAllLines(Path.Combine(_dir, "leaderboard.csv"));
        Assert.Equal("rank,trial,strategy,temperature,sts_spearman,final_loss,steps,seconds,error", csv[0]);
        Assert.Equal(5, csv.Length);
        Assert.StartsWith($"1,{result.Trials[0].Index},", csv[1]);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "leaderboard.json")))!;
        Assert.Equal(result.Trials.Select(t => t.Index), json["trials"]!.AsArray().Select(t => t!["trial"]!.GetValue<int>()));
        Assert.Equal(result.Best!.Metric, json["trials"]![0]!["sts_spearman"]!.GetValue<double>());

        // Trials never see each other's weights: the last successful trial alone gives the same metric.
        var last = result.Trials.Where(t => t.Succeeded).MaxBy(t => t.Index)!;
        var alone = new GrlSweep(model, new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Grl), SweepDimension.Temperature(0.05)), metric,
            new SweepOptions { BaseOptions = Base }).Run(train);
        Assert.Equal("strategy=Grl, temperature=0.05", last.Point.ToString());
        Assert.Equal(last.Metric, alone.Trials[0].Metric);
        Assert.Null(alone.BestModelFolder);
    }

    private sealed class SyncProgress(Action<SweepTrial> action) : IProgress<SweepTrial>
    {
        public void Report(SweepTrial value) => action(value);
    }
}

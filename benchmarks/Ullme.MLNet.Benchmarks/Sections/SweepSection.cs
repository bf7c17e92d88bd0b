using System.Diagnostics;
using System.Globalization;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Model-based search against random search with the same budget (issue 18, point 6): <see cref="GrlSweep"/> over
/// stories260K with <see cref="SweepSearch.Random"/> and <see cref="SweepSearch.Bayesian"/>, the same space, the same
/// number of trials and the same search seeds; the best dev metric each reaches.
/// </summary>
public static class SweepSection
{
    public static void Run(BenchContext ctx)
    {
        string model = Path.Combine(ctx.AssetsRoot, "models", "stories260K");
        string triplets = Path.Combine(ctx.AssetsRoot, "data", "snli", "triplets.jsonl");
        string sts = Path.Combine(ctx.AssetsRoot, "data", "stsbenchmark", "sts-dev.csv");
        if (!File.Exists(Path.Combine(model, "model.safetensors")) || !File.Exists(triplets) || !File.Exists(sts))
        {
            ctx.Report.Notes.Add("Sweep search skipped: stories260K, SNLI triplets and STS-B dev (shared assets) are needed.");
            return;
        }
        int trials = ctx.Quick ? 4 : 8, seeds = ctx.Quick ? 1 : 3, steps = ctx.Quick ? 8 : 24;
        var train = TrainingData.LoadJsonl(triplets).Take(1024).ToList();
        var metric = StsSpearmanMetric.FromStsBenchmark(sts, 500);
        var space = new SweepSpace(
            SweepDimension.LearningRate(1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3),
            SweepDimension.Temperature(0.02, 0.05, 0.1),
            SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.ContrastiveLm));
        var baseOptions = new FineTuneOptions { Lora = null, MaxLength = 64, BatchSize = 32, MaxSteps = steps };
        string section = $"Sweep search: stories260K, {space.GridSize} settings (lr × τ × strategy), {trials} trials of {steps} steps × 32, STS-B dev (500 pairs) Spearman";
        Console.WriteLine(section);
        using var baseModel = UllmeModel.Load(model);
        var best = new Dictionary<SweepSearch, List<double>> { [SweepSearch.Random] = [], [SweepSearch.Bayesian] = [] };
        for (int seed = 1; seed <= seeds; seed++)
        {
            foreach (var search in new[] { SweepSearch.Random, SweepSearch.Bayesian })
            {
                var clock = Stopwatch.StartNew();
                var result = new GrlSweep(baseModel, space, metric, new SweepOptions { BaseOptions = baseOptions, Search = search, MaxTrials = trials, Seed = seed }).Run(train);
                double top = result.Best?.Metric ?? double.NaN;
                best[search].Add(top);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  seed {seed} {search}: best {top:F4} ({result.Best?.Point}) in {clock.Elapsed.TotalSeconds:F0} s"));
                ctx.Report.Add(section, string.Create(CultureInfo.InvariantCulture, $"seed {seed}, {search}"), new()
                {
                    ["best_spearman"] = top,
                    ["baseline_spearman"] = result.BaselineMetric,
                    ["seconds"] = clock.Elapsed.TotalSeconds,
                });
            }
        }
        int wins = best[SweepSearch.Bayesian].Zip(best[SweepSearch.Random]).Count(p => p.First > p.Second);
        int ties = best[SweepSearch.Bayesian].Zip(best[SweepSearch.Random]).Count(p => p.First == p.Second);
        ctx.Report.Add(section, "mean over seeds", new()
        {
            ["random_best"] = best[SweepSearch.Random].Average(),
            ["bayesian_best"] = best[SweepSearch.Bayesian].Average(),
            ["bayesian_wins"] = wins,
            ["ties"] = ties,
            ["seeds"] = seeds,
        });
    }
}

using System.Xml.Linq;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;

namespace Ullme.MLNet.Tests.Training.Sweeps;

/// <summary>AutoML-style search controls: the Bayesian tuner, the time budget, median stopping and the leaderboard plot.</summary>
public sealed class SweepSearchTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-sweep-search-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly double[] Rates = Enumerable.Range(0, 20).Select(i => 1e-5 * Math.Pow(1.5, i)).ToArray();

    /// <summary>A smooth metric of the learning rate's rank with its peak at rank 14 (and a strategy bonus).</summary>
    private static double Score(SweepPoint p)
    {
        int rank = Array.IndexOf(Rates, double.Parse(p.Settings.First(s => s.Key == "lr").Value, System.Globalization.CultureInfo.InvariantCulture));
        double x = rank / 19.0;
        double bonus = p.Settings.FirstOrDefault(s => s.Key == "strategy").Value == "Grl" ? 0.1 : 0;
        return 1 - (x - 14 / 19.0) * (x - 14 / 19.0) * 4 + bonus;
    }

    private static SweepResult Run(SweepSpace space, SweepOptions options, Func<FineTuneOptions, CancellationToken, double> trial, ISweepMetric? trainingMetric = null) =>
        SweepRunner.Run<object>(space, options with { BaseOptions = new FineTuneOptions() }, "score", true, 0,
            trial: (o, state, ct) => { state.Model = new object(); return trial(o, ct); },
            saveBest: null, release: _ => { }, keepBest: false, progress: null, log: null, CancellationToken.None, out _, trainingMetric);

    [Fact]
    public void TheBayesianSearchFindsTheOptimumOfASmoothMetricInFewTrials_WhereRandomSearchMostlyDoesNot()
    {
        var space = new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl), SweepDimension.LearningRate(Rates));
        double optimum = space.Grid().Max(Score);
        int bayesHits = 0, randomHits = 0;
        for (int seed = 0; seed < 6; seed++)
        {
            SweepResult Search(SweepSearch search)
            {
                SweepPoint? current = null;
                var result = SweepRunner.Run<object>(space, new SweepOptions { BaseOptions = new FineTuneOptions(), Search = search, MaxTrials = 10, Seed = seed },
                    "score", true, 0, trial: (o, state, _) =>
                    {
                        state.Model = new object();
                        current = space.Grid().First(p => p.Apply(new FineTuneOptions()).Optimizer.LearningRate == o.Optimizer.LearningRate && p.Apply(new FineTuneOptions()).Strategy == o.Strategy);
                        return Score(current);
                    }, saveBest: null, release: _ => { }, keepBest: false, progress: null, log: null, CancellationToken.None, out _);
                Assert.Equal(10, result.Trials.Count);
                Assert.Equal(10, result.Trials.Select(t => t.Point.ToString()).Distinct().Count());       // never a point twice
                return result;
            }
            if (Search(SweepSearch.Bayesian).Best!.Metric == optimum) bayesHits++;
            if (Search(SweepSearch.Random).Best!.Metric == optimum) randomHits++;
        }
        // 10 of 40 points: a random search hits the single best point with probability 1/4 per seed.
        Assert.True(bayesHits >= 5, $"Bayesian search found the optimum for {bayesHits} of 6 seeds (random: {randomHits})");
        Assert.True(bayesHits > randomHits, $"Bayesian {bayesHits} vs random {randomHits}");
        Assert.Contains("no list of points in advance", Assert.Throws<UllmeException>(() => SweepRunner.Points(space, new SweepOptions { Search = SweepSearch.Bayesian, MaxTrials = 3 })).Message);
    }

    [Fact]
    public void TheTimeBudgetStopsTheRunningTrialAndStartsNoMore()
    {
        var space = new SweepSpace(SweepDimension.Temperature(0.02, 0.05, 0.1));
        var result = Run(space, new SweepOptions { MaxTime = TimeSpan.FromMilliseconds(300) }, (_, ct) =>
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                Thread.Sleep(10);
            }
        });
        var only = Assert.Single(result.Trials);
        Assert.False(only.Succeeded);
        Assert.Contains("time budget", only.Error);
        Assert.Null(result.Best);
        Assert.Contains("SweepOptions.MaxTrials is required for a random search (or a time budget, SweepOptions.MaxTime)", Assert.Throws<UllmeException>(() => SweepRunner.Validate(new SweepOptions { Search = SweepSearch.Random })).Message);
    }

    /// <summary>The metric the runner wraps for median stopping: scores from a table, per trial and evaluation.</summary>
    private sealed class Curves(double[][] curves) : ISweepMetric
    {
        public int Trial { get; set; }
        private int _k;
        public string Name => "score";
        public bool HigherIsBetter => true;
        public double Evaluate(UllmeModel model, EmbeddingOptions embedding) => curves[Trial][_k++];
        public void Next() { Trial++; _k = 0; }
    }

    [Fact]
    public void MedianStoppingStopsATrialWorseThanTheMedianOfEarlierTrialsAtTheSameStep()
    {
        double[][] curves =
        [
            [0.30, 0.40, 0.50],
            [0.20, 0.30, 0.40],
            [0.25, 0.35, 0.45],
            [0.26, 0.10, 0.99],        // above the median (0.25) at step 5, below it (0.35) at step 10: stopped there
            [0.40, 0.50, 0.60],
        ];
        var metric = new Curves(curves);
        var space = new SweepSpace(SweepDimension.Temperature(0.01, 0.02, 0.03, 0.04, 0.05));
        var evaluateEvery = new List<int>();
        var result = Run(space, new SweepOptions { MedianStoppingEvery = 5 }, (o, ct) =>
        {
            evaluateEvery.Add(o.EvaluateEvery);
            double last = 0;
            try
            {
                for (int k = 0; k < 3; k++)               // what the training loop does at steps 5, 10, 15
                {
                    ct.ThrowIfCancellationRequested();
                    last = o.Evaluator!.Evaluate(null!, new EmbeddingOptions());
                }
                ct.ThrowIfCancellationRequested();
                return last;
            }
            finally
            {
                metric.Next();
            }
        }, metric);

        Assert.All(evaluateEvery, e => Assert.Equal(5, e));
        var byIndex = result.Trials.OrderBy(t => t.Index).ToList();
        Assert.All(byIndex.Where(t => t.Index != 3), t => Assert.True(t.Succeeded, t.Error));
        var stopped = byIndex[3];
        Assert.False(stopped.Succeeded);
        Assert.Equal(10, stopped.StoppedAtStep);
        Assert.Equal([0.26, 0.10], stopped.Evaluations);
        Assert.Contains("worse than the median 0.3500 of 3 earlier trials", stopped.Error);
        Assert.Equal(4, result.Best!.Index);
        Assert.Contains("\"stopped_at_step\": 10", result.ToJson());
        Assert.Throws<UllmeException>(() => Run(space, new SweepOptions { MedianStoppingEvery = 5 }, (_, _) => 0));   // no training metric
    }

    [Fact]
    public void TheLeaderboardPlotShowsEveryScoredTrialAndTheBestSoFar()
    {
        var space = new SweepSpace(SweepDimension.Temperature(0.01, 0.02, 0.03, -1));
        double[] scores = [0.3, 0.5, 0.4];
        int next = 0;
        var result = Run(space, new SweepOptions { OutputDirectory = _dir }, (o, _) =>
        {
            o.Validate();
            return scores[next++];
        });
        string svg = File.ReadAllText(Path.Combine(_dir, "leaderboard.svg"));
        Assert.Equal(svg, result.ToSvg());
        var doc = XDocument.Parse(svg);
        XNamespace ns = "http://www.w3.org/2000/svg";
        var circles = doc.Descendants(ns + "circle").ToList();
        Assert.Equal(3, circles.Count);                                          // the failed trial has no score
        Assert.Contains(circles, c => c.Element(ns + "title")!.Value.Contains("temperature=0.02 → 0.5", StringComparison.Ordinal));
        var best = doc.Descendants(ns + "polyline").Single().Attribute("points")!.Value.Split(' ');
        Assert.Equal(4, best.Length);
        Assert.Equal(best[1].Split(',')[1], best[2].Split(',')[1]);              // 0.5 stays the best after 0.4
        Assert.NotEqual(best[0].Split(',')[1], best[1].Split(',')[1]);
    }
}

/// <summary>The search controls through <see cref="GrlSweep"/> and the real trainer.</summary>
[Collection(Ullme.MLNet.Tests.Infrastructure.TorchCollection.Name)]
public sealed class GrlSweepSearchTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-grl-sweep-search-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Cosine of two fixed texts: a deterministic function of the weights.</summary>
    private sealed class PairCosine : ISweepMetric
    {
        public int Calls { get; private set; }
        public string Name => "pair_cosine";
        public bool HigherIsBetter => true;
        public double Evaluate(UllmeModel model, EmbeddingOptions embedding)
        {
            Calls++;
            var e = new EmbeddingEngine(model).Embed(["w1 w2 w3", "w4 w5 w6"], embedding);
            return e[0].Zip(e[1]).Sum(p => (double)p.First * p.Second);
        }
    }

    [Fact]
    public void ABayesianSweepWithMedianStoppingRunsRealTrials()
    {
        using var model = TinyDecoder.Load();
        var metric = new PairCosine();
        var space = new SweepSpace(SweepDimension.LearningRate(1e-3, 3e-3, 1e-2), SweepDimension.Temperature(0.05, 0.1));
        var options = new SweepOptions
        {
            BaseOptions = new FineTuneOptions { Strategy = TrainingStrategy.Contrastive, Lora = null, BatchSize = 4, MaxSteps = 4 },
            Search = SweepSearch.Bayesian, MaxTrials = 5, Seed = 2, MedianStoppingEvery = 2, MedianStoppingMinTrials = 1, OutputDirectory = _dir,
        };
        var result = new GrlSweep(model, space, metric, options).Run(TinyDecoder.Examples(16, 8));
        Assert.Equal(5, result.Trials.Count);
        Assert.Equal(5, result.Trials.Select(t => t.Point.ToString()).Distinct().Count());
        foreach (var t in result.Trials)
        {
            if (t.Succeeded)
            {
                Assert.Equal(2, t.Evaluations.Count);                             // steps 2 and 4
                Assert.Null(t.StoppedAtStep);
            }
            else
            {
                Assert.Equal(2, t.StoppedAtStep);
                Assert.Single(t.Evaluations);
                Assert.Contains("stopped early at step 2", t.Error);
            }
        }
        Assert.NotNull(result.Best);
        Assert.True(File.Exists(Path.Combine(_dir, "leaderboard.svg")));
        Assert.True(Directory.Exists(Path.Combine(_dir, "best")));
    }
}

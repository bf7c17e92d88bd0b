using System.Diagnostics;
using System.Globalization;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Training.Sweeps;

/// <summary>What one trial produced so far: the tuned model and its training run. A trial fills these in as it goes,
/// so a trial that fails after training still reports its losses and its model is released.</summary>
internal sealed class TrialState<TModel> where TModel : class
{
    public TModel? Model { get; set; }
    public FineTuneResult? Training { get; set; }
}

/// <summary>
/// The trial loop every sweep surface shares (<see cref="GrlSweep"/> over <see cref="UllmeFineTuner"/>, and the
/// ML.NET <c>GrlTrainerSweep</c> over <c>GrlTrainer</c>): pick the points, run each trial on the swept settings,
/// record a trial whose settings or training are refused (<see cref="UllmeException"/>) and go on, keep the leader,
/// save the best model whenever the leader changes, rank, and write the leaderboard files.
/// </summary>
internal static class SweepRunner
{
    /// <summary>The points a sweep with <paramref name="options"/> runs over <paramref name="space"/>, in order.</summary>
    public static IReadOnlyList<SweepPoint> Points(SweepSpace space, SweepOptions options) => options.Search switch
    {
        SweepSearch.Random => space.Random(options.MaxTrials ?? checked((int)space.GridSize), options.Seed),
        SweepSearch.Bayesian => throw new UllmeException("A Bayesian search picks each point after the trials before it; there is no list of points in advance."),
        _ => space.Grid().Take(options.MaxTrials ?? int.MaxValue).ToList(),
    };

    /// <summary>The most trials the sweep may run (the time budget may stop it sooner).</summary>
    public static int TrialCap(SweepSpace space, SweepOptions options) =>
        Math.Min(options.MaxTrials ?? int.MaxValue, checked((int)space.GridSize));

    /// <summary>Where the next point comes from: a list (grid, random) or the Bayesian tuner.</summary>
    private sealed class PointSource(SweepSpace space, SweepOptions options, bool higherIsBetter)
    {
        private readonly IReadOnlyList<SweepPoint>? _list = options.Search == SweepSearch.Bayesian ? null : Points(space, options);
        private readonly BayesianTuner? _tuner = options.Search == SweepSearch.Bayesian
            ? new BayesianTuner(space, higherIsBetter, options.Seed, options.InitialTrials) : null;

        public SweepPoint? Next(IReadOnlyList<SweepTrial> done)
        {
            if (_list is not null) return done.Count < _list.Count ? _list[done.Count] : null;
            var tried = done.Select(t => t.Point.FlatIndex).ToHashSet();
            var scored = done.Select(t => (t.Point.FlatIndex, Metric: t.Succeeded ? t.Metric : t.StoppedAtStep is not null && t.Evaluations.Count > 0 ? t.Evaluations[^1] : double.NaN))
                .Where(t => double.IsFinite(t.Metric)).ToList();
            return _tuner!.Next(tried, scored);
        }
    }

    /// <summary>
    /// The sweep's metric scored during a trial (<see cref="SweepOptions.MedianStoppingEvery"/>): it records each
    /// score and stops the trial (cancels its token) when the score is worse than the median of the earlier trials'
    /// scores at the same evaluation.
    /// </summary>
    private sealed class MedianStopper(ISweepMetric inner, IReadOnlyList<IReadOnlyList<double>> earlier, int minTrials, int every, CancellationTokenSource stop) : ISweepMetric
    {
        public int Every => every;
        public List<double> Scores { get; } = [];
        public int? StoppedAtStep { get; private set; }
        public string? Reason { get; private set; }
        public string Name => inner.Name;
        public bool HigherIsBetter => inner.HigherIsBetter;

        public double Evaluate(Inference.UllmeModel model, Inference.EmbeddingOptions embedding)
        {
            double score = inner.Evaluate(model, embedding);
            int k = Scores.Count;
            Scores.Add(score);
            if (StoppedAtStep is not null) return score;
            var atStep = earlier.Where(e => e.Count > k).Select(e => e[k]).Where(double.IsFinite).OrderBy(v => v).ToList();
            if (atStep.Count < minTrials) return score;
            double median = atStep.Count % 2 == 1 ? atStep[atStep.Count / 2] : (atStep[atStep.Count / 2 - 1] + atStep[atStep.Count / 2]) / 2;
            bool worse = !double.IsFinite(score) || (HigherIsBetter ? score < median : score > median);
            if (!worse) return score;
            StoppedAtStep = (k + 1) * every;
            Reason = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"stopped early at step {StoppedAtStep}: {Name} {score:F4} is worse than the median {median:F4} of {atStep.Count} earlier trials at that step");
            stop.Cancel();
            return score;
        }
    }

    /// <summary>Checks the search settings; errors name the option.</summary>
    public static void Validate(SweepOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.BaseOptions is null) throw new UllmeException("SweepOptions.BaseOptions is null.");
        options.BaseOptions.Validate();
        if (options.Search is SweepSearch.Random or SweepSearch.Bayesian && options.MaxTrials is null && options.MaxTime is null)
            throw new UllmeException($"SweepOptions.MaxTrials is required for a {options.Search.ToString().ToLowerInvariant()} search (or a time budget, SweepOptions.MaxTime).");
        if (options.MaxTime is { } t && t <= TimeSpan.Zero) throw new UllmeException($"SweepOptions.MaxTime must be positive, got {t}.");
        if (options.InitialTrials is < 1) throw new UllmeException($"SweepOptions.InitialTrials must be at least 1, got {options.InitialTrials}.");
        if (options.MedianStoppingEvery < 0) throw new UllmeException($"SweepOptions.MedianStoppingEvery must be 0 or more, got {options.MedianStoppingEvery}.");
        if (options.MedianStoppingMinTrials < 1) throw new UllmeException($"SweepOptions.MedianStoppingMinTrials must be at least 1, got {options.MedianStoppingMinTrials}.");
        if (options.MaxTrials is < 1) throw new UllmeException($"SweepOptions.MaxTrials must be at least 1, got {options.MaxTrials}.");
        if (options.OutputDirectory is { } d && string.IsNullOrWhiteSpace(d)) throw new UllmeException("SweepOptions.OutputDirectory is empty (use null to write nothing).");
    }

    /// <summary>
    /// Runs the trials. <paramref name="trial"/> trains and scores one point (the options are the point applied to the
    /// base options, with LoRA merged and checkpointing off, already validated) and returns the metric.
    /// <paramref name="saveBest"/> writes the new leader under the output directory (called only when one is set);
    /// <paramref name="release"/> frees a model that is no longer needed. With <paramref name="keepBest"/> the
    /// leader's model is kept and returned in <paramref name="bestModel"/> (the caller owns it); otherwise it is
    /// released right after it was saved.
    /// </summary>
    public static SweepResult Run<TModel>(
        SweepSpace space, SweepOptions options, string metricName, bool higherIsBetter, double baseline,
        Func<FineTuneOptions, TrialState<TModel>, CancellationToken, double> trial,
        Action<TModel, FineTuneOptions, string>? saveBest, Action<TModel> release, bool keepBest,
        IProgress<SweepTrial>? progress, Action<string>? log, CancellationToken cancellationToken, out TModel? bestModel,
        ISweepMetric? trainingMetric = null)
        where TModel : class
    {
        if (options.MedianStoppingEvery > 0 && trainingMetric is null)
            throw new UllmeException("SweepOptions.MedianStoppingEvery needs a metric that scores the model during training; this sweep has none (use GrlSweep).");
        var source = new PointSource(space, options, higherIsBetter);
        int cap = TrialCap(space, options);
        var clock = Stopwatch.StartNew();
        string? output = options.OutputDirectory is { } o ? Path.GetFullPath(o) : null;
        if (output is not null) Directory.CreateDirectory(output);

        var trials = new List<SweepTrial>();
        SweepTrial? leader = null;
        TModel? leaderModel = null;
        try
        {
            for (int i = 0; i < cap; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                TimeSpan? left = options.MaxTime is { } budget ? budget - clock.Elapsed : null;
                if (left is { } l && l <= TimeSpan.Zero)
                {
                    log?.Invoke($"time budget of {options.MaxTime} used: no more trials");
                    break;
                }
                if (source.Next(trials) is not { } point) break;
                log?.Invoke($"trial {i + 1}/{cap}: {point}");
                var state = new TrialState<TModel>();
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                if (left is { } remaining) stop.CancelAfter(remaining);
                var stopper = options.MedianStoppingEvery > 0
                    ? new MedianStopper(trainingMetric!, trials.Select(t => t.Evaluations).ToList(), options.MedianStoppingMinTrials, options.MedianStoppingEvery, stop)
                    : null;
                var result = RunTrial(i, point, options.BaseOptions, metricName, trial, state, release, stopper, stop.Token, cancellationToken);
                trials.Add(result);
                log?.Invoke(result.Succeeded
                    ? string.Create(CultureInfo.InvariantCulture, $"trial {i + 1}/{cap}: {metricName} {result.Metric:F4} ({result.Elapsed.TotalSeconds:F1} s)")
                    : $"trial {i + 1}/{cap} failed: {result.Error}");
                if (stop.IsCancellationRequested && stopper?.StoppedAtStep is null && !cancellationToken.IsCancellationRequested)
                {
                    progress?.Report(result);
                    break;                                                                      // the time budget ran out
                }
                var model = state.Model;
                if (model is null) { progress?.Report(result); continue; }
                if (result.Succeeded && (leader is null || (higherIsBetter ? result.Metric > leader.Metric : result.Metric < leader.Metric)))
                {
                    leader = result;
                    if (leaderModel is not null) release(leaderModel);
                    leaderModel = model;
                    if (output is not null && saveBest is not null) saveBest(model, result.Point.Apply(options.BaseOptions), output);
                    if (!keepBest) { release(model); leaderModel = null; }
                }
                else release(model);
                progress?.Report(result);
            }
        }
        catch
        {
            if (leaderModel is not null) release(leaderModel);
            throw;
        }

        var ranked = trials.OrderBy(t => t.Succeeded ? 0 : 1)
            .ThenBy(t => t.Succeeded ? (higherIsBetter ? -t.Metric : t.Metric) : 0)
            .ThenBy(t => t.Index).ToList();
        string? bestFolder = output is not null && leader is not null && saveBest is not null ? Path.Combine(output, "best") : null;
        var sweep = new SweepResult(metricName, higherIsBetter, baseline, ranked, bestFolder);
        if (sweep.BaselineNote is { } note)
        {
            Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(options.Logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, "{Note}", note);
        }
        if (output is not null)
        {
            AtomicFile.WriteAllText(Path.Combine(output, "leaderboard.csv"), sweep.ToCsv());
            AtomicFile.WriteAllText(Path.Combine(output, "leaderboard.json"), sweep.ToJson());
            AtomicFile.WriteAllText(Path.Combine(output, "leaderboard.txt"), sweep.Leaderboard() + Environment.NewLine);
            AtomicFile.WriteAllText(Path.Combine(output, "leaderboard.svg"), sweep.ToSvg());
        }
        bestModel = leaderModel;
        return sweep;
    }

    private static SweepTrial RunTrial<TModel>(int index, SweepPoint point, FineTuneOptions baseOptions, string metricName,
        Func<FineTuneOptions, TrialState<TModel>, CancellationToken, double> trial, TrialState<TModel> state, Action<TModel> release,
        MedianStopper? stopper, CancellationToken ct, CancellationToken sweepToken) where TModel : class
    {
        var clock = Stopwatch.StartNew();
        IReadOnlyList<double> Scores() => stopper?.Scores.ToList() ?? [];
        try
        {
            var options = point.Apply(baseOptions) with { MergeLoraAtEnd = true, CheckpointDirectory = null, Resume = false };
            if (stopper is not null) options = options with { EvaluateEvery = stopper.Every, Evaluator = stopper, KeepBest = false };
            options.Validate();
            double metric = trial(options, state, ct);
            return new SweepTrial(index, point, metric, state.Training, clock.Elapsed, double.IsFinite(metric) ? null : $"{metricName} is not a number") { Evaluations = Scores() };
        }
        catch (UllmeException e)
        {
            return new SweepTrial(index, point, double.NaN, state.Training, clock.Elapsed, e.Message) { Evaluations = Scores() };
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested && !sweepToken.IsCancellationRequested)
        {
            // Stopped by median stopping or by the time budget: recorded, not ranked; its half-trained model is dropped.
            if (state.Model is { } m) release(m);
            state.Model = null;
            var scores = Scores();
            return new SweepTrial(index, point, scores.Count > 0 ? scores[^1] : double.NaN, state.Training, clock.Elapsed,
                stopper?.Reason ?? "stopped: the time budget (SweepOptions.MaxTime) ran out")
            {
                StoppedAtStep = stopper?.StoppedAtStep,
                Evaluations = scores,
            };
        }
        catch
        {
            if (state.Model is { } m) release(m);
            state.Model = null;
            throw;
        }
    }


    /// <summary>Replaces <paramref name="folder"/> by what <paramref name="write"/> puts in a staging folder next to
    /// it, so a crash never leaves a half-written best model (<see cref="AtomicFolder"/>).</summary>
    public static void ReplaceFolder(string folder, Action<string> write) => AtomicFolder.Write(folder, write);

    /// <summary>Replaces <paramref name="file"/> by what <paramref name="write"/> puts in a temporary file next to it
    /// (<see cref="AtomicFile"/>).</summary>
    public static void ReplaceFile(string file, Action<Stream> write) => AtomicFile.Write(file, write);
}

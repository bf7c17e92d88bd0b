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
        SweepSearch.Random => space.Random(options.MaxTrials!.Value, options.Seed),
        _ => space.Grid().Take(options.MaxTrials ?? int.MaxValue).ToList(),
    };

    /// <summary>Checks the search settings; errors name the option.</summary>
    public static void Validate(SweepOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.BaseOptions is null) throw new UllmeException("SweepOptions.BaseOptions is null.");
        options.BaseOptions.Validate();
        if (options.Search == SweepSearch.Random && options.MaxTrials is null)
            throw new UllmeException("SweepOptions.MaxTrials is required for a random search.");
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
        IProgress<SweepTrial>? progress, Action<string>? log, CancellationToken cancellationToken, out TModel? bestModel)
        where TModel : class
    {
        var points = Points(space, options);
        string? output = options.OutputDirectory is { } o ? Path.GetFullPath(o) : null;
        if (output is not null) Directory.CreateDirectory(output);

        var trials = new List<SweepTrial>();
        SweepTrial? leader = null;
        TModel? leaderModel = null;
        try
        {
            for (int i = 0; i < points.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                log?.Invoke($"trial {i + 1}/{points.Count}: {points[i]}");
                var state = new TrialState<TModel>();
                var result = RunTrial(i, points[i], options.BaseOptions, metricName, trial, state, release, cancellationToken);
                trials.Add(result);
                log?.Invoke(result.Succeeded
                    ? string.Create(CultureInfo.InvariantCulture, $"trial {i + 1}/{points.Count}: {metricName} {result.Metric:F4} ({result.Elapsed.TotalSeconds:F1} s)")
                    : $"trial {i + 1}/{points.Count} failed: {result.Error}");
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
        }
        bestModel = leaderModel;
        return sweep;
    }

    private static SweepTrial RunTrial<TModel>(int index, SweepPoint point, FineTuneOptions baseOptions, string metricName,
        Func<FineTuneOptions, TrialState<TModel>, CancellationToken, double> trial, TrialState<TModel> state, Action<TModel> release,
        CancellationToken ct) where TModel : class
    {
        var clock = Stopwatch.StartNew();
        try
        {
            var options = point.Apply(baseOptions) with { MergeLoraAtEnd = true, CheckpointDirectory = null, Resume = false };
            options.Validate();
            double metric = trial(options, state, ct);
            return new SweepTrial(index, point, metric, state.Training, clock.Elapsed, double.IsFinite(metric) ? null : $"{metricName} is not a number");
        }
        catch (UllmeException e)
        {
            return new SweepTrial(index, point, double.NaN, state.Training, clock.Elapsed, e.Message);
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

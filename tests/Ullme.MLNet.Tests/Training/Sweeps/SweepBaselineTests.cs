using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;

namespace Ullme.MLNet.Tests.Training.Sweeps;

/// <summary>A sweep whose trials all score no better than the untrained model says so plainly, instead of
/// presenting a "best" model without comment.</summary>
public sealed class SweepBaselineTests
{
    private static (SweepResult Result, CapturingLogger Log) Sweep(double baseline, double[] metrics, bool higherIsBetter = true)
    {
        var space = new SweepSpace(SweepDimension.Temperature(0.02, 0.05));
        var log = new CapturingLogger();
        int next = 0;
        var result = SweepRunner.Run<object>(space, new SweepOptions { BaseOptions = new FineTuneOptions(), Logger = log }, "cosine_spearman",
            higherIsBetter, baseline,
            trial: (_, state, _) => { state.Model = new object(); return metrics[next++]; },
            saveBest: null, release: _ => { }, keepBest: false, progress: null, log: null, CancellationToken.None, out _);
        return (result, log);
    }

    [Fact]
    public void NoTrialBeatingTheBaselineIsSaidPlainly()
    {
        var (result, log) = Sweep(baseline: 0.50, metrics: [0.41, 0.50]);
        Assert.NotNull(result.Best);
        Assert.False(result.BeatBaseline);
        Assert.Contains("No trial beat the untrained baseline", result.BaselineNote);
        Assert.Contains("0.5000", result.BaselineNote);
        Assert.Contains("WARNING: No trial beat the untrained baseline", result.Leaderboard());
        Assert.Contains("\"beat_baseline\": false", result.ToJson());
        Assert.Contains(log.Warnings, w => w.Contains("No trial beat the untrained baseline", StringComparison.Ordinal));

        // Lower-is-better metrics compare the other way.
        var (lower, _) = Sweep(baseline: 0.30, metrics: [0.35, 0.31], higherIsBetter: false);
        Assert.False(lower.BeatBaseline);
    }

    [Fact]
    public void ATrialBeatingTheBaselineGivesNoWarning()
    {
        var (result, log) = Sweep(baseline: 0.40, metrics: [0.39, 0.45]);
        Assert.True(result.BeatBaseline);
        Assert.Null(result.BaselineNote);
        Assert.DoesNotContain("WARNING", result.Leaderboard());
        Assert.Contains("\"beat_baseline\": true", result.ToJson());
        Assert.Empty(log.Warnings);
    }
}

using System.Diagnostics;
using Ullme.MLNet;

namespace Ullme.Cli.Training;

/// <summary>
/// TEST-ONLY fault hook of the CLI, the twin of the library's (same variable): with
/// <c>ULLME_TEST_KILL_AT=&lt;phase&gt;[:&lt;n&gt;]</c> the process kills itself with SIGKILL the n-th time (default: the
/// first) it reaches <c>phase</c>. Phases of <c>ullme train</c>: <c>step</c> (a step's loss row logged, its checkpoint
/// not yet written), <c>export-staging</c> (the tuned model written into the staging folder, not yet published),
/// <c>export-publish</c> (the old output moved aside, the staging folder not yet in its place),
/// <c>export-checkpoints</c> (the new output in place, the checkpoints not yet moved back into it). Used by
/// tests/…/Cli/TrainFaultTests.cs and docs/scripts/kill-resume-trials.sh.
/// </summary>
internal static class FaultInjection
{
    public const string Variable = "ULLME_TEST_KILL_AT";

    private static readonly Lazy<(string Phase, int Count)?> Target = new(() => Parse(Environment.GetEnvironmentVariable(Variable)));
    private static int _reached;

    public static void Reach(string phase)
    {
        if (Target.Value is not { } t || t.Phase != phase) return;
        if (Interlocked.Increment(ref _reached) == t.Count)
        {
            using var self = Process.GetCurrentProcess();
            self.Kill();
            Thread.Sleep(Timeout.Infinite);
        }
    }

    private static (string, int)? Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) return null;
        int colon = value.LastIndexOf(':');
        if (colon < 0) return (value.Trim(), 1);
        return int.TryParse(value[(colon + 1)..], out int n) && n >= 1
            ? (value[..colon].Trim(), n)
            : throw new UllmeException($"{Variable} '{value}' is not <phase> or <phase>:<n> with n ≥ 1.");
    }
}

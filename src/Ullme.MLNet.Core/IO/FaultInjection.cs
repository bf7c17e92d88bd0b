using System.Diagnostics;

namespace Ullme.MLNet.IO;

/// <summary>
/// TEST-ONLY fault hook: with the environment variable <c>ULLME_TEST_KILL_AT=&lt;phase&gt;[:&lt;n&gt;]</c>, the process
/// kills itself with SIGKILL (as <c>kill -9</c> would, no clean-up of any kind) the n-th time (default: the first)
/// it reaches <c>phase</c>. Phases of the library: <c>checkpoint-files</c> (a checkpoint's weights written, the rest
/// not), <c>checkpoint-commit</c> (all files and the manifest written, not yet renamed into place),
/// <c>checkpoint-swap</c> (re-saving a step: the old folder moved aside, the new one not yet in place),
/// <c>checkpoint-prune</c> (committed, older checkpoints not yet pruned), <c>result-write</c> (an evaluation result file's
/// temporary copy written, not yet renamed over the result); of <c>ullme train</c>: <c>step</c> (a step's loss row logged,
/// its checkpoint not yet written), <c>export-staging</c> (the tuned model in the staging folder, not yet published),
/// <c>export-publish</c> (the old output moved aside, the staging folder not yet in its place),
/// <c>export-checkpoints</c> (the new output in place, the checkpoints not yet moved back into it); of <c>ullme embed</c>: <c>embed-row</c> (a row
/// written to the output's temporary file, the rest not yet). Used by the fault tests
/// (tests/…/Cli/TrainFaultTests.cs, OutputFaultTests.cs) and docs/scripts/kill-resume-trials.sh; unset, it costs a string compare.
/// </summary>
internal static class FaultInjection
{
    public const string Variable = "ULLME_TEST_KILL_AT";

    private static readonly Lazy<(string Phase, int Count)?> Target = new(() => Parse(Environment.GetEnvironmentVariable(Variable)));
    private static int _reached;

    /// <summary>Marks that the process reached <paramref name="phase"/>; kills it if that is the configured moment.</summary>
    public static void Reach(string phase)
    {
        if (Target.Value is not { } t || t.Phase != phase) return;
        if (Interlocked.Increment(ref _reached) == t.Count)
        {
            using var self = Process.GetCurrentProcess();
            self.Kill();    // SIGKILL on Unix, TerminateProcess on Windows
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

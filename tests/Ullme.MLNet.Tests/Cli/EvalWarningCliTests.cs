using System.Diagnostics;
using Ullme.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Cli;

/// <summary><c>ullme eval --limit 50</c> on Banking77 (77 labels): the degenerate score is called out on stderr.</summary>
[Collection(TorchCollection.Name)]
public sealed class EvalWarningCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-evalwarn-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>In its own process: stderr is the real one, not a Console.SetError that parallel tests could swap.</summary>
    [AssetFact]
    public async Task LimitBelowTheLabelCountWarnsOnStderrAndInTheResultFile()
    {
        var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, "eval", "--model", Assets.Stories260K,
            "--tasks", "Banking77Clustering", "--data-dir", Assets.Path("data"), "--output", _dir, "--limit", "50",
            "--instructions", "off", "--threads", "1"]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var errTask = p.StandardError.ReadToEndAsync();
        var outTask = p.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await p.WaitForExitAsync(timeout.Token);
        string err = await errTask;
        await outTask;
        Assert.True(p.ExitCode == 0, err);
        Assert.Contains("warning:", err);
        Assert.Contains("Banking77Clustering", err);
        Assert.Contains("50 rows but the task has 77 labels", err.ReplaceLineEndings(" ").Replace("  ", " ", StringComparison.Ordinal));
        string result = Directory.GetFiles(_dir, "Banking77Clustering.json", SearchOption.AllDirectories).Single();
        Assert.Contains("\"warnings\": [", File.ReadAllText(result));
    }
}

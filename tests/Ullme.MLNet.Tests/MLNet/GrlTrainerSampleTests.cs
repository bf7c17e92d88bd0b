using System.Diagnostics;
using System.Reflection;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// The <c>grl-trainer</c> sample on little data (40 triplets: 2 optimizer steps at batch 32). It used to fix
/// WarmupSteps = 9 and stop with "WarmupSteps (9) exceeds TotalSteps (2)"; the warm-up is now derived from the run.
/// </summary>
public sealed class GrlTrainerSampleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-grl-sample-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [AssetFact]
    public async Task RunsOnSmallData()
    {
        string triplets = Path.Combine(_dir, "triplets.jsonl"), sts = Path.Combine(_dir, "sts-dev.csv");
        File.WriteAllLines(triplets, File.ReadLines(Assets.Path("data", "snli", "triplets.jsonl")).Take(40));
        File.WriteAllLines(sts, File.ReadLines(Assets.Path("data", "stsbenchmark", "sts-dev.csv")).Take(30));
        string samples = typeof(GrlTrainerSampleTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "UllmeSamplesDll").Value!;
        var psi = new ProcessStartInfo("dotnet", ["exec", samples, "grl-trainer", Assets.Stories260K, triplets, sts, Path.Combine(_dir, "out")])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await process.WaitForExitAsync(timeout.Token);
        string output = await stdout + await stderr;
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}:\n{output}");
        Assert.Contains("trained 2 steps", output);
        Assert.DoesNotContain("exceeds TotalSteps", output);
        Assert.True(File.Exists(Path.Combine(_dir, "out", "tuned.zip")));
    }
}

using System.Diagnostics;
using System.Text.Json;
using Ullme.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>
/// <c>ullme embed</c> and <c>ullme eval</c> killed with SIGKILL while writing their outputs: the output name never
/// holds a partial file (it keeps the previous complete one), and the next run finishes the job and leaves no
/// temporary file behind.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class OutputFaultTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-output-fault-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static ProcessStartInfo Child(string[] args, string? killAt = null)
    {
        var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, .. args]) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment.Remove("ULLME_TEST_KILL_AT");
        if (killAt is not null) psi.Environment["ULLME_TEST_KILL_AT"] = killAt;
        return psi;
    }

    private static (int Code, string Err) RunChild(string[] args, string? killAt = null)
    {
        using var p = Process.Start(Child(args, killAt))!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    private string[] Embed(string input, string output) =>
        ["embed", "-m", Assets.Stories260K, "--input", input, "--output", output, "--threads", "1", "--batch-size", "8"];

    /// <summary>Runs embed into out.npy over an earlier complete out.npy and kills it (SIGKILL) while the output is
    /// being streamed into its temporary file (ULLME_TEST_KILL_AT=embed-row:500). Returns the folder's files after the kill.</summary>
    private (byte[] Before, string[] AfterKill) EmbedAndKillMidWrite(string output)
    {
        File.WriteAllLines(PathOf("a.txt"), File.ReadLines(Assets.Path("data", "snli", "s1.dev")).Take(200));
        File.WriteAllLines(PathOf("b.txt"), File.ReadLines(Assets.Path("data", "snli", "s2.dev")).Take(1000));
        var (code, err) = RunChild(Embed(PathOf("a.txt"), output));
        Assert.True(code == 0, err);
        byte[] before = File.ReadAllBytes(output);

        // Killed by the fault hook after its 500th of 1,000 rows went into the temporary file (polling for the file and
        // killing from here raced the run, which could finish first).
        (code, err) = RunChild(Embed(PathOf("b.txt"), output), killAt: "embed-row:500");
        Assert.True(code == 137 || code < 0, $"expected the hook to SIGKILL embed mid-write, exit {code}: {err}");
        return (before, Directory.GetFiles(_dir).Select(Path.GetFileName).OfType<string>().Order().ToArray());
    }

    [AssetFact]
    public void AKilledEmbedNeverLeavesAPartialFileUnderTheOutputName()
    {
        string output = PathOf("out.npy");
        var (before, afterKill) = EmbedAndKillMidWrite(output);
        // The output name still holds the previous complete file; the partial one only ever had a temporary name.
        Assert.Equal(before, File.ReadAllBytes(output));
        Assert.Single(afterKill, f => f.StartsWith(".out.npy.", StringComparison.Ordinal) && f.EndsWith(".tmp", StringComparison.Ordinal));

        // The next run completes to exactly what an uninterrupted run writes.
        var (code, err) = RunChild(Embed(PathOf("b.txt"), output));
        Assert.True(code == 0, err);
        (code, err) = RunChild(Embed(PathOf("b.txt"), PathOf("reference.npy")));
        Assert.True(code == 0, err);
        Assert.Equal(File.ReadAllBytes(PathOf("reference.npy")), File.ReadAllBytes(output));
    }

    [AssetFact]
    public void AKilledEmbedLeavesNoTemporaryFileAfterTheNextRun()
    {
        string output = PathOf("out.npy");
        EmbedAndKillMidWrite(output);
        var (code, err) = RunChild(Embed(PathOf("b.txt"), output));
        Assert.True(code == 0, err);
        Assert.Empty(Directory.GetFiles(_dir, ".out.npy.*"));
    }

    [AssetFact]
    public void AKilledEvalNeverLeavesAPartialResultAndTheNextRunRemovesItsTemporaryFile()
    {
        string results = PathOf("results");
        string[] args = ["eval", "--model", Assets.Stories260K, "--tasks", "STSBenchmark", "--data-dir", Assets.Path("data"), "--output", results,
            "--limit", "20", "--instructions", "off", "--revision", "r1", "--threads", "1"];
        var (code, err) = RunChild(args);
        Assert.True(code == 0, err);
        string folder = Directory.GetDirectories(results).Single();
        folder = Directory.GetDirectories(folder).Single();
        string task = Path.Combine(folder, "STSBenchmark.json");
        byte[] before = File.ReadAllBytes(task);

        // Killed with model_meta.json replaced and STSBenchmark.json's new content in its temporary file only.
        (code, err) = RunChild(args, killAt: "result-write:2");
        Assert.True(code == 137 || code < 0, $"expected the hook to SIGKILL eval, exit {code}: {err}");
        Assert.Equal(before, File.ReadAllBytes(task));
        Assert.Single(Directory.GetFiles(folder, ".STSBenchmark.json.*.tmp"));

        (code, err) = RunChild(args);
        Assert.True(code == 0, err);
        Assert.Empty(Directory.GetFiles(folder, ".*.tmp"));
        foreach (string f in Directory.GetFiles(folder, "*.json"))
            JsonDocument.Parse(File.ReadAllText(f)).Dispose();
    }
}

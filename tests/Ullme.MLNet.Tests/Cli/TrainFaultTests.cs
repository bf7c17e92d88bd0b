using System.Diagnostics;
using System.Text.RegularExpressions;
using Ullme.Cli;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>
/// <c>ullme train</c> killed with SIGKILL at chosen moments (the test-only hook <c>ULLME_TEST_KILL_AT</c> makes the
/// child process kill itself there: mid-run between a step and its checkpoint, while a checkpoint is being written,
/// while the tuned model is being published), then resumed with <c>--resume</c>: the final <c>model.safetensors</c>
/// is byte-identical to an uninterrupted run, <c>losses.csv</c> identical in every column but the two wall-clock
/// ones, nothing temporary is left, and a damaged checkpoint is reported and never resumed. The 20-random-moments
/// version is docs/scripts/kill-resume-trials.sh.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class TrainFaultTests(TrainFaultTests.ReferenceRun reference) : IDisposable, IClassFixture<TrainFaultTests.ReferenceRun>
{
    /// <summary>The training data and the uninterrupted run (a child process too, the same code path as the killed
    /// ones), made once for the class.</summary>
    public sealed class ReferenceRun : IDisposable
    {
        private readonly string _root = Directory.CreateTempSubdirectory("ullme-train-fault-").FullName;
        private readonly Lazy<string> _output;

        public ReferenceRun()
        {
            Data = Path.Combine(_root, "d.jsonl");
            _output = new(() =>
            {
                File.WriteAllLines(Data, File.ReadLines(Assets.Path("data", "snli", "triplets.jsonl")).Take(24));
                string output = Path.Combine(_root, "whole");
                var (code, err) = RunChild(Args(Data, output));
                Assert.True(code == 0, err);
                return output;
            });
        }

        public string Data { get; }

        public string Output => _output.Value;

        public void Dispose() => Directory.Delete(_root, recursive: true);
    }

    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-train-fault-case-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string[] Args(string output) => Args(reference.Data, output);

    private static string[] Args(string data, string output) =>
    [
        "train", "-m", Assets.Stories260K, "--data", data, "--strategy", "grl", "--output", output, "--steps", "6", "--batch-size", "4",
        "--max-length", "32", "--lora-rank", "4", "--lora-dropout", "0.1", "--lr", "5e-3", "--seed", "3", "--checkpoint-every", "1",
        "--threads", "1", "--no-plot",
    ];

    private static (int Code, string Err) RunChild(string[] args, string? killAt = null)
    {
        var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, .. args])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        psi.Environment.Remove("ULLME_TEST_KILL_AT");
        if (killAt is not null) psi.Environment["ULLME_TEST_KILL_AT"] = killAt;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    /// <summary>losses.csv without its wall-clock columns (samples_per_s, elapsed_s), as text.</summary>
    private static List<string> DeterministicLosses(string output)
    {
        var lines = File.ReadAllLines(Path.Combine(output, "losses.csv"));
        var header = lines[0].Split(',');
        var keep = Enumerable.Range(0, header.Length).Where(i => header[i] is not ("samples_per_s" or "elapsed_s")).ToArray();
        Assert.Equal(header.Length - 2, keep.Length);
        return lines.Select(l => string.Join(',', keep.Select(i => l.Split(',')[i]))).ToList();
    }

    /// <summary>After the resumed run: the output matches the reference, and nothing temporary is left anywhere.</summary>
    private void AssertFinishedLikeTheReference(string output)
    {
        Assert.Equal(File.ReadAllBytes(Path.Combine(reference.Output, "model.safetensors")), File.ReadAllBytes(Path.Combine(output, "model.safetensors")));
        Assert.Equal(DeterministicLosses(reference.Output), DeterministicLosses(output));
        Assert.True(File.Exists(Path.Combine(output, "training.json")));
        Assert.Equal([Path.GetFileName(output)], Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).OfType<string>().ToArray());
        var checkpoints = Directory.GetFileSystemEntries(Path.Combine(output, "checkpoints")).Select(Path.GetFileName).OfType<string>().Order().ToArray();
        Assert.Equal(["checkpoint-0000005", "checkpoint-0000006", "losses.csv"], checkpoints);
        foreach (var c in Directory.GetDirectories(Path.Combine(output, "checkpoints")))
            Assert.Null(TrainingCheckpoint.Validate(c));
    }

    [AssetTheory]
    [InlineData("step:3")]               // between step 3's loss row and its checkpoint
    [InlineData("checkpoint-files:4")]   // the 4th checkpoint half-written (weights only)
    [InlineData("checkpoint-commit:2")]  // the 2nd checkpoint complete with its manifest, not yet renamed into place
    [InlineData("checkpoint-prune:5")]   // the 5th committed, the older ones not yet pruned
    [InlineData("export-staging")]       // the tuned model written to staging, not published
    [InlineData("export-publish")]       // the old output (with the checkpoints) moved aside, the new one not in place
    public void AKillAtAnyPhaseThenResumeGivesTheUninterruptedModelAndLosses(string killAt)
    {
        _ = reference.Output;
        string output = Path.Combine(_dir, "k");
        var (code, err) = RunChild(Args(output), killAt);
        Assert.True(code == 137 || code < 0, $"expected the hook to SIGKILL the run at {killAt}, exit {code}: {err}");
        // Whatever the moment, the output never holds a partial model.
        Assert.False(File.Exists(Path.Combine(output, "model.safetensors")), "a model was published before the run finished");

        (code, err) = RunChild([.. Args(output), "--resume"]);
        Assert.True(code == 0, err);
        AssertFinishedLikeTheReference(output);
    }

    [AssetFact]
    public void ABitFlippedNewestCheckpointIsReportedAndTheRunResumesFromThePreviousOne()
    {
        _ = reference.Output;
        string output = Path.Combine(_dir, "k");
        var (code, err) = RunChild(Args(output), "step:5");
        Assert.True(code == 137 || code < 0, err);
        string newest = Path.Combine(output, "checkpoints", "checkpoint-0000004");
        string weights = Path.Combine(newest, "weights.bin");
        var bytes = File.ReadAllBytes(weights);
        bytes[bytes.Length / 2] ^= 0x04;
        File.WriteAllBytes(weights, bytes);

        (code, err) = RunChild([.. Args(output), "--resume"]);
        Assert.True(code == 0, err);
        string flat = Regex.Replace(err, @"\s+", "");
        Assert.Contains("Skippingdamagedcheckpoint", flat);
        Assert.Contains("checkpoint-0000004", flat);
        Assert.Contains("SHA-256", flat);
        Assert.Contains("Resumingfromstep3", flat);
        AssertFinishedLikeTheReference(output);
    }

    [AssetFact]
    public void ATruncatedNewestCheckpointIsReplacedByTheIntactPreviousOne()
    {
        _ = reference.Output;
        string output = Path.Combine(_dir, "k");
        var (code, err) = RunChild(Args(output), "step:5");
        Assert.True(code == 137 || code < 0, err);
        using (var f = new FileStream(Path.Combine(output, "checkpoints", "checkpoint-0000004", "optimizer.bin"), FileMode.Open))
            f.SetLength(f.Length - 100);

        (code, err) = RunChild([.. Args(output), "--resume"]);
        Assert.True(code == 0, err);
        string flat = Regex.Replace(err, @"\s+", "");
        Assert.Contains("optimizer.bin", flat);
        Assert.Contains("Resumingfromstep3", flat);
        AssertFinishedLikeTheReference(output);
    }
}

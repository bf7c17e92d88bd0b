using System.Diagnostics;
using System.Text;
using Ullme.Cli;
using Ullme.MLNet.IO;
using Ullme.Cli.Commands;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>
/// Ctrl+C and SIGTERM sent to a real <c>ullme</c> process (<c>dotnet ullme.dll</c>, signalled with <c>kill</c>):
/// training writes a checkpoint at the next step boundary, prints the exact resume command and exits 130 / 143;
/// <c>embed</c> stops with no output and no temporary file; leftovers of a killed process are removed by the next run.
/// The model is the committed tiny random Llama (no shared assets needed).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class SignalTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(3);
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-signal-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A child <c>ullme</c> whose stderr is collected line by line.</summary>
    private sealed class Child : IDisposable
    {
        private readonly StringBuilder _err = new();
        private readonly Process _process;

        public Child(ProcessStartInfo psi)
        {
            psi.RedirectStandardError = true;
            psi.RedirectStandardOutput = true;
            _process = new Process { StartInfo = psi };
            _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_err) _err.AppendLine(e.Data); };
            _process.OutputDataReceived += (_, _) => { };
            _process.Start();
            _process.BeginErrorReadLine();
            _process.BeginOutputReadLine();
        }

        public static Child Ullme(params string[] args) => new(new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, .. args]));

        public int Id => _process.Id;

        public string Err { get { lock (_err) return _err.ToString(); } }

        /// <summary>Waits until <paramref name="ready"/> holds; fails if the process ends first.</summary>
        public void WaitUntil(Func<bool> ready, string what)
        {
            var clock = Stopwatch.StartNew();
            while (!ready())
            {
                if (_process.HasExited)
                {
                    _process.WaitForExit();
                    Assert.Fail($"ullme exited ({_process.ExitCode}) before {what}:\n{Err}");
                }
                Assert.True(clock.Elapsed < Patience, $"timed out waiting for {what}:\n{Err}");
                Thread.Sleep(20);
            }
        }

        public void Signal(string signal)
        {
            using var kill = Process.Start("kill", [$"-{signal}", Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
            kill.WaitForExit();
            Assert.Equal(0, kill.ExitCode);
        }

        public int WaitForExit()
        {
            Assert.True(_process.WaitForExit(Patience), $"ullme did not stop after the signal:\n{Err}");
            _process.WaitForExit();   // drains the redirected streams
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.Dispose();
        }
    }

    [Fact]
    public async Task SigIntDuringAHubDownloadStopsItAndTheNextRunResumesIt()
    {
        // A Hugging Face id not yet cached: the first SIGINT must stop the download (it used to run to its end), keep
        // the part for the next run, write no output, and exit 130; the next run resumes the part and embeds.
        using var repos = new Ullme.MLNet.Tests.Hub.HubTestRepos();
        await using var hub = new Ullme.MLNet.Tests.Hub.FakeHub();
        hub.Publish(Ullme.MLNet.Tests.Hub.HubTestRepos.RepoId, repos.MainFolder);
        hub.StallAt = ("model.safetensors", 1000);
        await hub.StartAsync();
        string cache = PathOf("hub"), input = PathOf("in.txt"), output = PathOf("out.npy");
        File.WriteAllLines(input, Ullme.MLNet.Tests.Hub.HubTestRepos.Texts);
        ProcessStartInfo Psi()
        {
            var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, "embed", "--model", Ullme.MLNet.Tests.Hub.HubTestRepos.RepoId, "--input", input, "--output", output]);
            psi.Environment["HF_ENDPOINT"] = hub.Endpoint;
            psi.Environment["HF_HUB_CACHE"] = cache;
            psi.Environment["HF_HOME"] = PathOf("hf-home");
            psi.Environment.Remove("HF_TOKEN");
            psi.Environment.Remove("HF_HUB_OFFLINE");
            // No read timeout to end the stalled transfer for us: only the signal can stop it before Patience runs out.
            psi.Environment["HF_HUB_DOWNLOAD_TIMEOUT"] = "3600";
            return psi;
        }
        string blobs = Path.Combine(cache, "models--tiny-org--tiny-llama", "blobs");
        bool PartKept() => Directory.Exists(blobs) && Directory.EnumerateFiles(blobs, "*.incomplete").Any(f => new FileInfo(f).Length >= 1000);
        bool Stalled() => hub.BytesServed.TryGetValue("model.safetensors", out long served) && served >= 1000
                          && Directory.Exists(blobs) && Directory.EnumerateFiles(blobs, "*.incomplete").Any();
        using (var child = new Child(Psi()))
        {
            child.WaitUntil(Stalled, "the weights download to start");
            child.Signal("INT");
            int code = child.WaitForExit();
            Assert.True(code == CliInterrupt.SigIntExitCode, $"exit {code}:\n{child.Err}");
            Assert.Contains("interrupted by SIGINT", child.Err);
        }
        Assert.False(File.Exists(output));
        Assert.True(PartKept(), "the part of the download is kept for the next run");
        Assert.Empty(Directory.EnumerateFiles(_dir, ".*.tmp"));

        hub.StallAt = null;
        using (var again = new Child(Psi()))
        {
            int code = again.WaitForExit();
            Assert.True(code == 0, $"exit {code}:\n{again.Err}");
        }
        Assert.True(File.Exists(output));
        Assert.Contains(hub.Requests, r => r.Contains("bytes=", StringComparison.Ordinal));
    }

    /// <summary>Triplets in the tiny model's alphabet.</summary>
    private string TinyTriplets(int count)
    {
        string path = PathOf("triplets.jsonl");
        string[] words = ["a cat", "the dog", "a man plays", "two women talk", "it rains", "the sun is out", "kids run", "a bird sings"];
        File.WriteAllLines(path, Enumerable.Range(0, count).Select(i =>
            $"{{\"query\": \"{words[i % words.Length]} {i}\", \"positive\": \"{words[(i + 1) % words.Length]}\", \"negatives\": [\"{words[(i + 3) % words.Length]}\"]}}"));
        return path;
    }

    /// <summary>The pid of a process that has ended (for planting a leftover of a killed run).</summary>
    private static int DeadProcessId()
    {
        using var p = Process.Start(new ProcessStartInfo("true"))!;
        p.WaitForExit();
        return p.Id;
    }

    private static string[] TemporaryFiles(string dir) =>
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Where(f => Path.GetFileName(f).EndsWith(".tmp", StringComparison.Ordinal)).ToArray();

    [Fact]
    public void SigIntDuringTrainingCheckpointsAtTheNextStepPrintsTheResumeCommandAndExits130()
    {
        string output = PathOf("tuned");
        string checkpoints = Path.Combine(output, "checkpoints");
        string[] args =
        [
            "train", "-m", TinyScoringModel.Folder, "--data", TinyTriplets(16), "--strategy", "contrastive", "--full", "--output", output,
            "--steps", "100000", "--batch-size", "2", "--max-length", "16", "--lr", "1e-3", "--checkpoint-every", "0", "--no-plot", "--threads", "1",
        ];
        string resumeLine;
        using (var child = Child.Ullme(args))
        {
            child.WaitUntil(() => child.Err.Contains("step 1/100000"), "the first training step");
            child.Signal("INT");
            int code = child.WaitForExit();
            string err = child.Err;
            Assert.True(code == 130, $"exit code {code}:\n{err}");
            Assert.Contains("SIGINT received", err);
            Assert.Contains("interrupted by SIGINT: training stopped; checkpoint at step", err);

            // The checkpoint exists (no checkpoint was due before step 100000: it was written because of the signal).
            var saved = Directory.GetDirectories(checkpoints, "checkpoint-*").Where(d => !d.Contains(".tmp-")).ToArray();
            Assert.Single(saved);
            int step = MLNet.Training.TrainingCheckpoint.ReadState(saved[0]).Step;
            Assert.InRange(step, 1, 99999);
            Assert.Contains($"checkpoint at step {step} written to '{saved[0]}'", err);

            // The exact command: this program, the same arguments, plus --resume.
            var lines = err.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
            int at = lines.FindIndex(l => l.EndsWith("To resume, run:", StringComparison.Ordinal));
            Assert.True(at >= 0 && at + 1 < lines.Count, err);
            resumeLine = lines[at + 1].Trim();
            string expectedTail = $" {typeof(UllmeCli).Assembly.Location} {string.Join(' ', args.Select(TrainCommand.ShellQuote))} --resume";
            Assert.EndsWith(expectedTail, resumeLine);
            Assert.Equal("dotnet", Path.GetFileNameWithoutExtension(resumeLine[..^expectedTail.Length]));

            // Nothing was published, nothing temporary is left.
            Assert.False(File.Exists(Path.Combine(output, "model.safetensors")));
            Assert.False(File.Exists(Path.Combine(output, "training.json")));
            Assert.Empty(TemporaryFiles(_dir));
            Assert.Empty(Directory.GetDirectories(_dir, ".*"));
        }

        // The printed command continues the run (through a shell, as a user pastes it); SIGTERM stops it with 143.
        using (var resumed = new Child(new ProcessStartInfo("bash", ["-c", "exec " + resumeLine])))
        {
            resumed.WaitUntil(() => resumed.Err.Contains("Resuming from step"), "the resume");
            resumed.WaitUntil(() => resumed.Err.Contains("step ") && resumed.Err.Contains("/100000 epoch"), "a resumed step");
            resumed.Signal("TERM");
            int code = resumed.WaitForExit();
            Assert.True(code == 143, $"exit code {code}:\n{resumed.Err}");
            Assert.Contains("interrupted by SIGTERM: training stopped; checkpoint at step", resumed.Err);
        }
    }

    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public void ASignalDuringEmbedLeavesNoOutputAndNoTemporaryFile(string signal, int expectedCode)
    {
        string input = PathOf("long.txt");
        using (var w = new StreamWriter(input))
            for (int i = 0; i < 400_000; i++) w.WriteLine($"a man plays a guitar number {i % 1000} in the park.");
        string output = PathOf("out.npy");
        // A leftover of an earlier, killed run (its process is gone) and one of a live process (this test's).
        string stale = PathOf($".out.npy.{DeadProcessId()}.tmp");
        string live = PathOf($".out.npy.{Environment.ProcessId}.tmp");
        File.WriteAllText(stale, "partial");
        File.WriteAllText(live, "in progress");

        using var child = Child.Ullme("embed", "-m", TinyScoringModel.Folder, "--input", input, "--output", output, "--batch-size", "64", "--threads", "1");
        string own = PathOf($".out.npy.{child.Id}.tmp");
        child.WaitUntil(() => File.Exists(own), "the output's temporary file");
        Assert.False(File.Exists(stale), "the leftover of a dead process was not removed");
        child.Signal(signal);
        int code = child.WaitForExit();
        Assert.True(code == expectedCode, $"exit code {code}:\n{child.Err}");
        Assert.Contains($"interrupted by SIG{signal}: stopped; no output was written.", child.Err);
        Assert.False(File.Exists(output));
        Assert.False(File.Exists(own));
        Assert.True(File.Exists(live), "a live process's temporary was removed");
        Assert.Equal([live], TemporaryFiles(_dir));
    }

    [Fact]
    public void StaleTemporariesAreRecognisedByNameAndLiveness()
    {
        Assert.Equal(123, AtomicFile.ProcessIdOf(".x.npy.123.tmp", "x.npy"));
        Assert.Equal(123, AtomicFile.ProcessIdOf(".x.npy.123.tmp", null));
        Assert.Null(AtomicFile.ProcessIdOf(".y.npy.123.tmp", "x.npy"));
        Assert.Null(AtomicFile.ProcessIdOf(".x.npy.abc.tmp", "x.npy"));
        Assert.Null(AtomicFile.ProcessIdOf("x.npy.123.tmp", "x.npy"));

        int dead = DeadProcessId();
        Directory.CreateDirectory(PathOf("results/sub"));
        string[] stale = [PathOf($"results/.a.json.{dead}.tmp"), PathOf($"results/sub/.b.json.{dead}.tmp")];
        string[] kept = [PathOf($"results/.a.json.{Environment.ProcessId}.tmp"), PathOf("results/.notes.tmp"), PathOf($"results/a.json.{dead}.tmp")];
        foreach (string f in stale.Concat(kept)) File.WriteAllText(f, "x");
        var removed = AtomicFile.RemoveStaleTemporaries(PathOf("results"), recursive: true);
        Assert.Equal(stale.Order(), removed.Order());
        Assert.All(kept, f => Assert.True(File.Exists(f), f));
    }

    [Fact]
    public void TheResumeCommandQuotesArgumentsForTheShell()
    {
        Assert.Equal("abc", TrainCommand.ShellQuote("abc"));
        Assert.Equal("./a/b-c_d.jsonl", TrainCommand.ShellQuote("./a/b-c_d.jsonl"));
        Assert.Equal("'two words'", TrainCommand.ShellQuote("two words"));
        Assert.Equal("'it'\\''s'", TrainCommand.ShellQuote("it's"));
        Assert.Equal("''", TrainCommand.ShellQuote(""));
        string command = TrainCommand.ResumeCommand(["train", "--output", "my out", "--resume"]);
        Assert.EndsWith("train --output 'my out' --resume", command);
        Assert.Single(command.Split(' '), p => p == "--resume");
    }
}

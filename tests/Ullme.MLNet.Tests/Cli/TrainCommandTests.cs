using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Ullme.Cli;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>
/// <c>ullme train</c> as a user runs it: the output folder (model, losses.csv, losses.png, training.json), flag
/// checks, NaN steps, and recovery of a run killed for real (a child process killed with SIGKILL, then resumed).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class TrainCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-train-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>Runs the CLI in this process (with --threads 1 when given; torch's thread count is restored).</summary>
    private static (int Code, string Err) Run(params string[] args)
    {
        var err = new StringWriter();
        var saved = Console.Error;
        int threads = get_num_threads();
        Console.SetError(err);
        try
        {
            return (UllmeCli.Run(args), err.ToString());
        }
        finally
        {
            Console.SetError(saved);
            set_num_threads(threads);
        }
    }

    /// <summary>The first <paramref name="count"/> SNLI triplets as a JSONL file.</summary>
    private string SnliData(int count)
    {
        string path = PathOf($"snli-{count}.jsonl");
        File.WriteAllLines(path, File.ReadLines(Assets.Path("data", "snli", "triplets.jsonl")).Take(count));
        return path;
    }

    private static JsonElement Summary(string output) => JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "training.json"))).RootElement;

    private static List<string[]> Csv(string path) => File.ReadAllLines(path).Select(l => l.Split(',')).ToList();

    [AssetFact]
    public void TrainWritesALoadableTunedModelWithLossesPlotAndSummary()
    {
        string sts = PathOf("sts.csv");
        File.WriteAllLines(sts, File.ReadLines(Assets.Path("data", "stsbenchmark", "sts-dev.csv")).Take(20));
        string output = PathOf("out");
        var (code, err) = Run("train", "-m", Assets.Stories260K, "--data", SnliData(12), "--strategy", "contrastive-lm", "--output", output,
            "--steps", "3", "--batch-size", "4", "--max-length", "48", "--lora-rank", "4", "--lr", "5e-3", "--attention", "causal",
            "--pooling", "last-token", "--eval-sts", sts, "--threads", "1");
        Assert.True(code == 0, err);

        // The model folder loads, keeps the training's embedding settings, and embeds differently from the base.
        using (var tuned = UllmeModel.Load(output))
        using (var base_ = UllmeModel.Load(Assets.Stories260K))
        {
            Assert.Equal(MLNet.Modeling.AttentionMode.Causal, tuned.Defaults.Attention);
            Assert.Equal(MLNet.Pooling.PoolingMode.LastToken, tuned.Defaults.Pooling);
            Assert.Equal(48, tuned.Defaults.MaxLength);
            var a = new EmbeddingEngine(tuned).Embed(["A man is playing a guitar."])[0];
            var b = new EmbeddingEngine(base_).Embed(["A man is playing a guitar."], new EmbeddingOptions { Attention = MLNet.Modeling.AttentionMode.Causal, Pooling = MLNet.Pooling.PoolingMode.LastToken })[0];
            Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, "training changed nothing");
            Assert.DoesNotContain(tuned.Backbone.named_parameters(), p => p.name.Contains("lora", StringComparison.OrdinalIgnoreCase));
        }

        // losses.csv: one row per step with the trained terms only.
        var csv = Csv(Path.Combine(output, "losses.csv"));
        Assert.Equal(["step", "epoch", "lr", "total", "contrastive", "lm", "grad_norm", "applied", "samples_per_s", "elapsed_s"], csv[0]);
        Assert.Equal(["1", "2", "3"], csv.Skip(1).Select(r => r[0]));
        foreach (var row in csv.Skip(1))
        {
            double total = double.Parse(row[3], CultureInfo.InvariantCulture);
            double sum = double.Parse(row[4], CultureInfo.InvariantCulture) + double.Parse(row[5], CultureInfo.InvariantCulture);
            Assert.Equal(sum, total, 5);
            Assert.True(double.Parse(row[8], CultureInfo.InvariantCulture) > 0);
        }

        var png = File.ReadAllBytes(Path.Combine(output, "losses.png"));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);

        var summary = Summary(output);
        Assert.Equal("ContrastiveLm", summary.GetProperty("strategy").GetString());
        Assert.Equal(3, summary.GetProperty("steps").GetInt32());
        Assert.Equal(double.Parse(csv[^1][3], CultureInfo.InvariantCulture), summary.GetProperty("final_losses").GetProperty("total").GetDouble(), 9);
        double before = summary.GetProperty("sts").GetProperty("spearman_before").GetDouble();
        double after = summary.GetProperty("sts").GetProperty("spearman_after").GetDouble();
        Assert.InRange(before, -1, 1);
        Assert.NotEqual(before, after);
        Assert.True(summary.GetProperty("peak_rss_mib").GetDouble() > 0);
        // Nothing half-written or temporary is left next to the output.
        Assert.Equal(["out", "snli-12.jsonl", "sts.csv"], Directory.GetFileSystemEntries(_dir).Select(p => Path.GetFileName(p)!).Order().ToArray());
    }

    [AssetFact]
    public void ExportOnnxAfterTrainingWritesTheTunedModelForOnnxRuntime()
    {
        string output = PathOf("tuned");
        var (code, err) = Run("train", "-m", Assets.Stories260K, "--data", SnliData(8), "--strategy", "contrastive", "--output", output,
            "--steps", "2", "--batch-size", "4", "--max-length", "32", "--full", "--lr", "5e-3", "--export-onnx", "int8", "--threads", "1", "--no-plot");
        Assert.True(code == 0, err);
        string onnx = Path.Combine(output, "onnx");
        Assert.True(File.Exists(Path.Combine(onnx, "model.onnx")), err);
        Assert.Contains("int8", File.ReadAllText(Path.Combine(onnx, "ullme.json")));
        using var tuned = UllmeModel.Load(output);
        using var exported = UllmeModel.Load(onnx);
        Assert.Equal(InferenceBackend.OnnxRuntime, exported.Backend);
        var a = new EmbeddingEngine(tuned).Embed(["A man is playing a guitar."])[0];
        var b = new EmbeddingEngine(exported).Embed(["A man is playing a guitar."])[0];
        double cos = a.Zip(b).Sum(p => (double)p.First * p.Second) / Math.Sqrt(a.Sum(x => (double)x * x) * b.Sum(x => (double)x * x));
        Assert.True(cos > 0.95, $"the exported int8 model drifts from the tuned one: cosine {cos}");
    }

    [Fact]
    public void StepsAndEpochsAreMutuallyExclusive()
    {
        var (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"), "--steps", "3", "--epochs", "1");
        Assert.Equal(1, code);
        Assert.Contains("--steps and --epochs", err);
        Assert.False(Directory.Exists(PathOf("o")));
    }

    [Fact]
    public void BadTrainingDataIsOneLineNamingFileAndLine()
    {
        File.WriteAllLines(PathOf("d.jsonl"), ["{\"query\": \"a\", \"positive\": \"b\"}", "{\"query\": \"a\"}"]);
        var (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"));
        Assert.Equal(1, code);
        Assert.Contains("d.jsonl' line 2", err);
        Assert.Contains("positive", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(Directory.Exists(PathOf("o")));
    }

    [Fact]
    public void TheUnsupervisedStrategiesReadPlainTextAndNameABadLineOrFlag()
    {
        File.WriteAllLines(PathOf("t.jsonl"), ["{\"text\": \"a cat\"}", "{\"query\": \"a\", \"positive\": \"b\"}"]);
        var (code, err) = Run("train", "--strategy", "simcse", "--data", PathOf("t.jsonl"), "--output", PathOf("o"));
        Assert.Equal(1, code);
        Assert.Contains("t.jsonl' line 2", err);
        Assert.Contains("this is a training triple", err);
        Assert.False(Directory.Exists(PathOf("o")));

        File.WriteAllLines(PathOf("t.txt"), ["a cat sat", "", "a dog ran"]);
        (code, err) = Run("train", "--strategy", "mntp", "--data", PathOf("t.txt"), "--output", PathOf("o"), "--lambda-cl", "1");
        Assert.Equal(1, code);
        Assert.Contains("--lambda-cl", err);
        (code, err) = Run("train", "--from", _dir, "--strategy", "simcse", "--data", PathOf("t.txt"), "--output", PathOf("o"));
        Assert.Equal(1, code);
        Assert.Contains("training.json", err);
        (code, err) = Run("train", "--from", PathOf("missing"), "--strategy", "simcse", "--data", PathOf("t.txt"), "--output", PathOf("o"));
        Assert.Contains("does not exist", err);
        (code, err) = Run("train", "--strategy", "contrastive", "--mask-ratio", "0.5", "--data", PathOf("t.txt"), "--output", PathOf("o"));
        Assert.Contains("--mask-ratio applies to --strategy mntp only", err);
        (code, err) = Run("train", "--strategy", "contrastive", "--data", PathOf("t.txt"), "--output", PathOf("o"));
        Assert.Contains("Plain text (one text a line) trains with --strategy mntp or simcse", err);
        Assert.False(Directory.Exists(PathOf("o")));
    }

    [Fact]
    public void EvalEveryAndKeepBestNeedEachOtherAndAMetric()
    {
        File.WriteAllLines(PathOf("d.jsonl"), ["{\"query\": \"a\", \"positive\": \"b\"}"]);
        var (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"), "--keep-best");
        Assert.Equal(1, code);
        Assert.Contains("--eval-every", err);
        (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"), "--eval-every", "5");
        Assert.Equal(1, code);
        Assert.Contains("--eval-task", err);
        (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"), "--eval-task", "STSBenchmark");
        Assert.Equal(1, code);
        Assert.Contains("--eval-every", err);
        Assert.False(Directory.Exists(PathOf("o")));
    }

    [AssetFact]
    public void EvalEveryScoresTheTaskIntoLossesCsv_AndKeepBestWritesTheBestStepsModel()
    {
        string output = PathOf("best");
        var (code, err) = Run("train", "-m", Assets.Stories260K, "--strategy", "contrastive", "--data", SnliData(96), "--output", output,
            "--full", "--lr", "3e-3", "--steps", "6", "--batch-size", "16", "--max-length", "48", "--eval-every", "2", "--eval-task", "STSBenchmark",
            "--eval-data-dir", Assets.Path("data"), "--eval-limit", "150", "--keep-best", "--threads", "1");
        Assert.True(code == 0, err);
        var csv = Csv(Path.Combine(output, "losses.csv"));
        int column = Array.IndexOf(csv[0], "eval_STSBenchmark_cosine_spearman");
        Assert.True(column > 0, string.Join(',', csv[0]));
        var scores = csv.Skip(1).Select(r => r[column]).ToList();
        Assert.Equal(["", "x", "", "x", "", "x"], scores.Select(v => v.Length == 0 ? "" : "x"));
        var evaluation = Summary(output).GetProperty("evaluation");
        double best = evaluation.GetProperty("best").GetDouble();
        int bestStep = evaluation.GetProperty("best_step").GetInt32();
        Assert.Equal(scores.Where(v => v.Length > 0).Max(v => double.Parse(v, CultureInfo.InvariantCulture)), best, 6);
        Assert.Equal(bestStep != 6, evaluation.GetProperty("restored_best").GetBoolean());

        // The written model scores the best evaluation's value, whichever step that was.
        using var tuned = UllmeModel.Load(output);
        var metric = new MLNet.Training.Sweeps.TaskMetric(MLNet.Evaluation.BuiltInTasks.Create("STSBenchmark", Assets.Path("data")), limit: 150);
        double again = metric.Evaluate(tuned, new EmbeddingOptions { Pooling = tuned.Defaults.Pooling, Attention = tuned.Defaults.Attention, MaxLength = 48 });
        Assert.Equal(best, again, 4);
    }

    [AssetFact]
    public void Llm2VecStagesChain_MntpThenSimCseFromItsOutput_ThenSupervised()
    {
        string texts = PathOf("texts.txt");
        File.WriteAllLines(texts, File.ReadLines(Assets.Path("data", "snli", "s1.dev")).Take(64));
        string mntp = PathOf("mntp"), simcse = PathOf("simcse"), supervised = PathOf("supervised");
        var (code, err) = Run("train", "-m", Assets.Stories260K, "--strategy", "mntp", "--data", texts, "--output", mntp, "--full", "--steps", "3",
            "--batch-size", "8", "--lr", "1e-3", "--mask-ratio", "0.3", "--threads", "1");
        Assert.True(code == 0, err);
        var csv = Csv(Path.Combine(mntp, "losses.csv"));
        Assert.Equal(["step", "epoch", "lr", "total", "mntp"], csv[0][..5]);
        Assert.Equal(4, csv.Count);
        Assert.True(double.Parse(csv[1][4], CultureInfo.InvariantCulture) > 0);
        var summary = Summary(mntp);
        Assert.Equal("Mntp", summary.GetProperty("strategy").GetString());
        Assert.Equal(0.3, summary.GetProperty("options").GetProperty("MaskRatio").GetDouble());

        (code, err) = Run("train", "--from", mntp, "--strategy", "simcse", "--data", texts, "--output", simcse, "--full", "--steps", "2",
            "--batch-size", "8", "--lr", "1e-3", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Equal(Path.GetFullPath(mntp), Summary(simcse).GetProperty("from").GetString());
        Assert.Equal(["step", "epoch", "lr", "total", "contrastive"], Csv(Path.Combine(simcse, "losses.csv"))[0][..5]);
        Assert.Contains("dropout as the augmentation", err);

        (code, err) = Run("train", "--from", simcse, "--strategy", "contrastive", "--data", SnliData(8), "--output", supervised, "--full", "--steps", "1",
            "--batch-size", "8", "--threads", "1");
        Assert.True(code == 0, err);

        // Each stage starts from the previous one's weights, and the unsupervised stages leave a bidirectional model.
        using var base_ = UllmeModel.Load(Assets.Stories260K);
        using var m1 = UllmeModel.Load(mntp);
        using var m2 = UllmeModel.Load(simcse);
        Assert.Equal(MLNet.Modeling.AttentionMode.Bidirectional, m1.Defaults.Attention);
        Assert.Equal(MLNet.Modeling.AttentionMode.Bidirectional, m2.Defaults.Attention);
        string text = "A man is playing a guitar.";
        var options = new EmbeddingOptions { Attention = MLNet.Modeling.AttentionMode.Bidirectional, Pooling = MLNet.Pooling.PoolingMode.Mean };
        var e0 = new EmbeddingEngine(base_).Embed([text], options)[0];
        var e1 = new EmbeddingEngine(m1).Embed([text], options)[0];
        var e2 = new EmbeddingEngine(m2).Embed([text], options)[0];
        Assert.True(e0.Zip(e1).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, "MNTP changed nothing");
        Assert.True(e1.Zip(e2).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, "SimCSE changed nothing");
    }

    [Fact]
    public void ANonEmptyOutputFolderIsOnlyReplacedOnRequest()
    {
        File.WriteAllLines(PathOf("d.jsonl"), ["{\"query\": \"a\", \"positive\": \"b\"}"]);
        Directory.CreateDirectory(PathOf("o"));
        File.WriteAllText(PathOf("o/notes.txt"), "mine");
        var (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"));
        Assert.Equal(1, code);
        Assert.Contains("--overwrite", err);
        (code, err) = Run("train", "--data", PathOf("d.jsonl"), "--output", PathOf("o"), "--resume");
        Assert.Equal(1, code);
        Assert.Contains("holds no ullme training run", err);
        Assert.Equal("mine", File.ReadAllText(PathOf("o/notes.txt")));
    }

    [AssetFact]
    public void ANonFiniteLossSkipsItsStepWithAWarningAndAllSkippedStepsWriteNoModel()
    {
        // A copy of stories260K whose embedding row of one token is NaN: every text holding that token embeds to NaN.
        string poisoned = PathOf("poisoned");
        const string bad = "Xylophones quizzically vex jumpy zebras.";
        const string good = "A man is walking.";
        using (var model = UllmeModel.Load(Assets.Stories260K))
        {
            var goodIds = model.Tokenizer.Encode(good + " " + "A man walks.", addSpecialTokens: false).ToHashSet();
            int token = model.Tokenizer.Encode(bad, addSpecialTokens: false).First(t => !goodIds.Contains(t));
            using (no_grad())
            {
                var embed = model.Backbone.named_parameters().First(p => p.name.EndsWith("embed_tokens.weight", StringComparison.Ordinal)).parameter;
                embed[token].fill_(double.NaN);
            }
            model.SaveFolder(poisoned);
        }
        File.WriteAllLines(PathOf("d.jsonl"), [
            $"{{\"query\": \"{bad}\", \"positive\": \"A quiet xylophone.\"}}",
            $"{{\"query\": \"{good}\", \"positive\": \"A man walks.\"}}",
        ]);
        string output = PathOf("out");
        var (code, err) = Run("train", "-m", poisoned, "--data", PathOf("d.jsonl"), "--strategy", "contrastive", "--full", "--lr", "1e-2",
            "--steps", "2", "--batch-size", "1", "--output", output, "--no-plot", "--threads", "1", "--allow-non-finite-weights");
        Assert.True(code == 0, err);
        Assert.Contains("skipped", err);
        Assert.Contains("NaN", err);
        Assert.Equal(1, Summary(output).GetProperty("steps_skipped").GetInt32());
        var rows = Csv(Path.Combine(output, "losses.csv")).Skip(1).ToList();
        Assert.Single(rows, r => r[^3] == "0" && r[3] == "NaN");
        Assert.Single(rows, r => r[^3] == "1" && double.IsFinite(double.Parse(r[3], CultureInfo.InvariantCulture)));
        // The step that did apply left finite weights everywhere but the poisoned row's own token.
        using (var tuned = UllmeModel.Load(output, new ModelLoadOptions { AllowNonFiniteWeights = true }))
            Assert.All(tuned.Backbone.named_parameters().Where(p => !p.name.Contains("embed_tokens") && !p.name.Contains("lm_head")),
                p => Assert.False(p.parameter.isnan().any().item<bool>(), p.name));

        // Only poisoned examples: every step is skipped, the run fails and writes no model.
        File.WriteAllLines(PathOf("bad.jsonl"), [$"{{\"query\": \"{bad}\", \"positive\": \"A quiet xylophone.\"}}"]);
        (code, err) = Run("train", "-m", poisoned, "--data", PathOf("bad.jsonl"), "--strategy", "contrastive", "--full", "--steps", "2",
            "--batch-size", "1", "--output", PathOf("out2"), "--no-plot", "--threads", "1", "--allow-non-finite-weights");
        Assert.Equal(1, code);
        Assert.Contains("Every training step was skipped", err);
        Assert.False(File.Exists(PathOf("out2/model.safetensors")));
    }

    // ------------------------------------------------------------------------------------------------------------
    // A real kill.
    // ------------------------------------------------------------------------------------------------------------

    private static Process Start(string[] args, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo("dotnet", [typeof(UllmeCli).Assembly.Location, .. args])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        return Process.Start(psi)!;
    }

    private static (int Code, string Err) RunProcess(string[] args)
    {
        using var p = Start(args);
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, err.Result);
    }

    [AssetFact]
    public void TrainSpinsTheOpenMpThreadsUnlessTheEnvironmentChoseAPolicy_AndNoShuffleKeepsFileOrder()
    {
        string data = SnliData(8);
        string[] Args(string output) =>
        [
            "train", "-m", Assets.Stories260K, "--data", data, "--strategy", "contrastive", "--full", "--output", output, "--steps", "2",
            "--batch-size", "4", "--max-length", "32", "--threads", "1", "--no-plot", "--checkpoint-every", "0", "--no-shuffle",
        ];
        bool own = Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null || Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is not null;

        // A fresh process: `ullme train` lifts the library's PASSIVE default before libtorch loads.
        var (code, err) = RunProcess(Args(PathOf("spin")));
        Assert.True(code == 0, err);
        var spin = Summary(PathOf("spin"));
        if (!own) Assert.Equal("libgomp default (spin, then sleep)", spin.GetProperty("omp_wait_policy").GetString());
        Assert.False(spin.GetProperty("options").GetProperty("Shuffle").GetBoolean());

        // The environment's choice stands.
        using (var p = Start(Args(PathOf("passive")), ("OMP_WAIT_POLICY", "PASSIVE")))
        {
            var output = p.StandardOutput.ReadToEndAsync();
            string e = p.StandardError.ReadToEnd();
            p.WaitForExit();
            _ = output.Result;
            Assert.True(p.ExitCode == 0, e);
        }
        Assert.Equal("PASSIVE", Summary(PathOf("passive")).GetProperty("omp_wait_policy").GetString());

        // File order: the same first batches, so the same first loss both times.
        Assert.Equal(Csv(PathOf("spin/losses.csv"))[1][3], Csv(PathOf("passive/losses.csv"))[1][3]);
    }

    [AssetFact]
    public void ARunKilledMidwayResumesToTheSameLossesAsAnUninterruptedRun()
    {
        string data = SnliData(32);
        string[] Args(string output) =>
        [
            "train", "-m", Assets.Stories260K, "--data", data, "--strategy", "grl", "--output", output, "--steps", "8", "--batch-size", "4",
            "--max-length", "32", "--lora-rank", "4", "--lora-dropout", "0.1", "--lr", "5e-3", "--seed", "3", "--checkpoint-every", "1",
            "--threads", "1", "--no-plot",
        ];

        // The uninterrupted reference runs in this process (same code, one thread: deterministic).
        var (code, err) = Run(Args(PathOf("whole")));
        Assert.True(code == 0, err);

        // Start the same run and kill the process (SIGKILL, no chance to clean up) once its first checkpoint exists.
        string killed = PathOf("killed");
        string checkpoints = Path.Combine(killed, "checkpoints");
        using (var p = Start(Args(killed)))
        {
            _ = p.StandardError.ReadToEndAsync();
            _ = p.StandardOutput.ReadToEndAsync();
            while (!p.HasExited && !(Directory.Exists(checkpoints) && Directory.GetDirectories(checkpoints, "checkpoint-*").Any(d => !d.Contains(".tmp-"))))
                Thread.Sleep(10);
            Assert.False(p.HasExited, "the run finished before it could be killed");
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
        Assert.False(File.Exists(Path.Combine(killed, "training.json")));
        Assert.False(File.Exists(Path.Combine(killed, "model.safetensors")));

        (code, err) = RunProcess([.. Args(killed), "--resume"]);
        Assert.True(code == 0, err);
        var resumed = Summary(killed);
        int from = resumed.GetProperty("resumed_from_step").GetInt32();
        Assert.InRange(from, 1, 7);

        // Every step's losses, those logged before the kill and those after the resume, match the uninterrupted run.
        var whole = Csv(PathOf("whole/losses.csv"));
        var again = Csv(Path.Combine(killed, "losses.csv"));
        Assert.Equal(whole[0], again[0]);
        Assert.Equal(9, again.Count);
        for (int i = 1; i < whole.Count; i++)
            for (int c = 0; c < 8; c++)   // step, epoch, lr, total, contrastive, preference, kl, grad_norm
                Assert.Equal(double.Parse(whole[i][c], CultureInfo.InvariantCulture), double.Parse(again[i][c], CultureInfo.InvariantCulture), 5);
        Assert.Equal(Summary(PathOf("whole")).GetProperty("final_losses").GetProperty("total").GetDouble(),
            resumed.GetProperty("final_losses").GetProperty("total").GetDouble(), 6);

        // And the exported models embed identically.
        using var a = UllmeModel.Load(PathOf("whole"));
        using var b = UllmeModel.Load(killed);
        var texts = new[] { "A dog runs in the park.", "Two women are talking." };
        var ea = new EmbeddingEngine(a).Embed(texts);
        var eb = new EmbeddingEngine(b).Embed(texts);
        for (int i = 0; i < texts.Length; i++)
            for (int j = 0; j < ea[i].Length; j++)
                Assert.Equal(ea[i][j], eb[i][j], 5);
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Ullme.Cli;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Training speed against PyTorch on the same recipe (issue 18, point 7), side by side in one run: <c>ullme train</c>
/// and the independent eager PyTorch script <c>docs/scripts/train_reference.py</c> (Debian's python3-torch and
/// python3-sentencepiece; <c>ULLME_PYTHON</c> names another interpreter), each in its own process, alternating,
/// 2 threads: stories260K fully fine-tuned on the 2,943 SNLI triplets for one epoch (92 steps of 32), lr 1e-3, batches
/// in file order (<c>--no-shuffle</c>) so that both see the same batches and their losses can be compared step by
/// step; contrastive and GRL. With <c>ULLME_QWEN_FOLDER</c> (a folder from the samples' <c>make-qwen2-random</c>), also
/// the Qwen2-0.5B-shaped LoRA step (r 16, batch 8 pairs × 128 tokens, 3 steps; the first is not counted).
/// Train seconds are the step loop as each side reports it, plus for ullme's GRL the reference log-prob cache it
/// computes before the loop (the script runs its frozen reference inside each step).
/// </summary>
public static class TrainVsPyTorchSection
{
    private static readonly string Ullme = typeof(UllmeCli).Assembly.Location;

    public static void Run(BenchContext ctx)
    {
        string model = Path.Combine(ctx.AssetsRoot, "models", "stories260K");
        string triplets = Path.Combine(ctx.AssetsRoot, "data", "snli", "triplets.jsonl");
        string? script = FindScript();
        string python = Environment.GetEnvironmentVariable("ULLME_PYTHON") ?? "/usr/bin/python3";
        if (!File.Exists(Path.Combine(model, "model.safetensors")) || !File.Exists(triplets))
        {
            ctx.Report.Notes.Add("Training vs PyTorch skipped: stories260K and the SNLI triplets (shared assets) are needed.");
            return;
        }
        if (script is null || !PythonHasTorch(python))
        {
            ctx.Report.Notes.Add($"Training vs PyTorch skipped: {(script is null ? "docs/scripts/train_reference.py not found" : $"{python} cannot import torch and sentencepiece (apt-get install python3-torch python3-sentencepiece)")}.");
            return;
        }
        string dir = Directory.CreateTempSubdirectory("ullme-bench-train-pt-").FullName;
        try
        {
            string[] strategies = ctx.Quick ? ["contrastive"] : ["contrastive", "grl"];
            string[] steps = ctx.Quick ? ["--steps", "20"] : ["--epochs", "1"];
            foreach (string strategy in strategies)
            {
                string section = $"Training vs PyTorch: stories260K, full fine-tuning, {strategy}, {(ctx.Quick ? "20 steps" : "one epoch of 2,943 SNLI triplets")} × 32, 2 threads";
                Console.WriteLine(section);
                var ours = new List<double>();
                var theirs = new List<double>();
                (double First, double Last) oursLoss = default, theirLoss = default;
                for (int round = 0; round < (ctx.Quick ? 1 : 2); round++)
                {
                    string output = Path.Combine(dir, $"{strategy}-{round}");
                    RunChecked("dotnet", [Ullme, "train", "-m", model, "--data", triplets, "--strategy", strategy, "--full", "--lr", "1e-3", .. steps,
                        "--batch-size", "32", "--threads", "2", "--no-shuffle", "--checkpoint-every", "0", "--no-plot", "--output", output]);
                    // The step loop plus, for GRL, the reference log-prob cache computed before it (PyTorch runs its
                    // reference forward inside each step).
                    using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "training.json"))))
                        ours.Add(summary.RootElement.GetProperty("train_seconds").GetDouble() + summary.RootElement.GetProperty("reference_cache_seconds").GetDouble());
                    var csv = File.ReadAllLines(Path.Combine(output, "losses.csv"));
                    oursLoss = (Total(csv[1]), Total(csv[^1]));

                    var lines = RunChecked(python, [script, "--model", model, "--data", triplets, "--strategy", strategy, "--lr", "1e-3",
                        .. steps, "--batch-size", "32", "--threads", "2", "--no-shuffle", "--log-steps"]);
                    var steps1 = lines.Where(l => l.StartsWith("{\"step\"", StringComparison.Ordinal)).ToList();
                    using (var first = JsonDocument.Parse(steps1[0]))
                    using (var last = JsonDocument.Parse(lines[^1]))
                    {
                        theirLoss = (first.RootElement.GetProperty("total").GetDouble(), last.RootElement.GetProperty("final_loss").GetDouble());
                        theirs.Add(last.RootElement.GetProperty("train_seconds").GetDouble());
                    }
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  round {round}: ullme {ours[^1]:F1} s, PyTorch {theirs[^1]:F1} s"));
                }
                ctx.Report.Add(section, "ullme train", new() { ["train_seconds_best"] = ours.Min(), ["first_loss"] = oursLoss.First, ["final_loss"] = oursLoss.Last });
                ctx.Report.Add(section, "PyTorch 1.13 eager (train_reference.py)", new() { ["train_seconds_best"] = theirs.Min(), ["first_loss"] = theirLoss.First, ["final_loss"] = theirLoss.Last });
                ctx.Report.AddRatio($"training speed vs PyTorch, stories260K {strategy}", theirs.Min() / ours.Min(), "PyTorch train seconds / ullme train seconds, best of the rounds",
                    "per-operator dispatch of a 260K-parameter model; both sides share the batches (losses equal)");
            }
            if (Environment.GetEnvironmentVariable("ULLME_QWEN_FOLDER") is { } qwen && Directory.Exists(qwen))
                QwenLora(ctx, qwen, python, script, dir, triplets);
            else
                ctx.Report.Notes.Add("Training vs PyTorch, Qwen2-0.5B shape: set ULLME_QWEN_FOLDER to a folder written by the samples' make-qwen2-random to measure it.");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void QwenLora(BenchContext ctx, string qwen, string python, string script, string dir, string triplets)
    {
        const string section = "Training vs PyTorch: Qwen2-0.5B shape (random weights), LoRA r16 (dropout 0.1), contrastive, batch 8 pairs × 128 tokens, 2 threads";
        Console.WriteLine(section);
        // Texts long enough to fill 128 tokens: 12 SNLI sentences each.
        var rows = File.ReadLines(triplets).Take(24 * 12).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        string data = Path.Combine(dir, "long-pairs.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 24).Select(i => JsonSerializer.Serialize(new
        {
            query = string.Join(' ', rows.Skip(i * 12).Take(12).Select(r => r.GetProperty("query").GetString())),
            positive = string.Join(' ', rows.Skip(i * 12).Take(12).Select(r => r.GetProperty("positive").GetString())),
        })));
        string output = Path.Combine(dir, "qwen");
        RunChecked("dotnet", [Ullme, "train", "-m", qwen, "--data", data, "--strategy", "contrastive", "--lora-rank", "16", "--steps", "3", "--batch-size", "8",
            "--max-length", "128", "--threads", "2", "--no-shuffle", "--checkpoint-every", "0", "--no-plot", "--output", output]);
        var elapsed = File.ReadAllLines(Path.Combine(output, "losses.csv")).Skip(1).Select(l => double.Parse(l.Split(',')[^1], CultureInfo.InvariantCulture)).ToArray();
        double ours = (elapsed[^1] - elapsed[0]) / (elapsed.Length - 1);
        // PyTorch: the same shapes from random ids (no Qwen tokenizer in Python here); glibc's mmap threshold as ours.
        var lines = RunChecked(python, [script, "--model", qwen, "--data", data, "--random-ids", "128", "--lora-rank", "16", "--steps", "3", "--batch-size", "8", "--threads", "2"],
            ("MALLOC_MMAP_THRESHOLD_", "1048576"));
        using var last = JsonDocument.Parse(lines[^1]);
        var stepSeconds = last.RootElement.GetProperty("step_seconds").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        double theirs = stepSeconds.Skip(1).Average();
        ctx.Report.Add(section, "ullme train", new() { ["seconds_per_step"] = ours });
        ctx.Report.Add(section, "PyTorch 1.13 eager (train_reference.py)", new() { ["seconds_per_step"] = theirs });
        ctx.Report.AddRatio("training speed vs PyTorch, Qwen2-0.5B shape LoRA", theirs / ours, "PyTorch s/step / ullme s/step, steps 2-3", "float32 GEMMs of a 494M-parameter model");
    }

    private static double Total(string csvLine) => double.Parse(csvLine.Split(',')[3], CultureInfo.InvariantCulture);

    private static string? FindScript()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "docs", "scripts", "train_reference.py");
            if (File.Exists(candidate)) return candidate;
        }
        string cwd = Path.Combine(Directory.GetCurrentDirectory(), "docs", "scripts", "train_reference.py");
        return File.Exists(cwd) ? cwd : null;
    }

    private static bool PythonHasTorch(string python)
    {
        try
        {
            RunChecked(python, ["-c", "import torch, sentencepiece"]);
            return true;
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    private static string[] RunChecked(string file, string[] args, params (string Name, string Value)[] environment)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{Path.GetFileName(file)} {string.Join(' ', args.Take(3))} failed ({p.ExitCode}): {err.Result}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }
}

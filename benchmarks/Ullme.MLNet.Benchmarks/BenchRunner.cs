using System.Diagnostics;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Benchmarks.Sections;
using Ullme.MLNet.Inference;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>The end-to-end benchmark: every figure of docs/performance.md from one process on one machine.</summary>
public static class BenchRunner
{
    private static readonly string[] AllSections = ["gemm", "minilm", "tokenizers", "mfu", "training", "scaling", "onnx", "cluster", "sweeps", "train-pytorch"];

    /// <summary>What a run without --only measures (sweeps and the PyTorch comparison take minutes of training: on
    /// request only).</summary>
    private static readonly string[] DefaultSections = [.. AllSections.Where(s => s is not ("sweeps" or "train-pytorch"))];

    public static int Run(string[] args)
    {
        bool quick = args.Contains("--quick");
        int threads = Option(args, "--threads") is { } t ? int.Parse(t, System.Globalization.CultureInfo.InvariantCulture) : Environment.ProcessorCount;
        string outDir = Path.GetFullPath(Option(args, "--out") ?? Path.Combine("docs", "performance"));
        string assets = BenchTexts.AssetsRoot(Option(args, "--assets"));
        var only = (Option(args, "--only") ?? string.Join(',', DefaultSections)).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
        foreach (var s in only)
            if (!AllSections.Contains(s)) { Console.Error.WriteLine($"unknown section '{s}'; use {string.Join(',', AllSections)}"); return 2; }
        Directory.CreateDirectory(outDir);

        // One thread setting for everything: libtorch intra-op and inter-op pools, and every ONNX Runtime session.
        UllmeRuntime.SetThreads(threads);
        var texts = BenchTexts.Load(assets, quick ? 256 : 1000, quick ? 32 : 128);
        var report = new BenchReport { Machine = Machine.Describe(threads), Mode = quick ? "quick" : "full", Texts = $"{texts.ShortTexts.Count} short + {texts.LongTexts.Count} long; {texts.Source}" };
        var ctx = new BenchContext(report, threads, quick, texts, outDir, assets);
        var clock = Stopwatch.StartNew();
        Console.WriteLine($"ullme bench ({report.Mode}): {threads} threads, load {Machine.LoadAverage()}, output {outDir}");

        // GEMM peak is needed by MFU and training; always measured.
        Section(ctx, "gemm", GemmSection.Run);
        if (only.Contains("minilm")) Section(ctx, "minilm", MiniLmSection.Run);
        if (only.Contains("tokenizers")) Section(ctx, "tokenizers", TokenizerSection.Run);
        if (only.Contains("mfu")) Section(ctx, "mfu", MfuSection.Run);
        if (only.Contains("training")) Section(ctx, "training", TrainingSection.Run);
        if (only.Contains("scaling")) Section(ctx, "scaling", ScalingSection.Run);
        if (only.Contains("onnx")) Section(ctx, "onnx", OnnxSection.Run);
        if (only.Contains("cluster")) Section(ctx, "cluster", ClusterSection.Run);
        if (only.Contains("sweeps")) Section(ctx, "sweeps", SweepSection.Run);
        if (only.Contains("train-pytorch")) Section(ctx, "train-pytorch", TrainVsPyTorchSection.Run);
        HeadlinePlot(ctx);

        report.Machine["load_average_at_end"] = Machine.LoadAverage();
        report.Machine["run_seconds"] = Math.Round(clock.Elapsed.TotalSeconds);
        report.WriteJson(Path.Combine(outDir, "results.json"));
        File.WriteAllText(Path.Combine(outDir, "results.md"), report.ToMarkdown());
        Console.WriteLine($"done in {clock.Elapsed.TotalSeconds:F0} s: {Path.Combine(outDir, "results.md")}");
        return 0;
    }

    /// <summary>Runs one section and records its wall time and the load average after it in the machine table.</summary>
    private static void Section(BenchContext ctx, string name, Action<BenchContext> run)
    {
        var clock = Stopwatch.StartNew();
        run(ctx);
        ctx.Report.Machine[$"section_{name}_seconds"] = Math.Round(clock.Elapsed.TotalSeconds);
        ctx.Report.Machine[$"load_average_after_{name}"] = Machine.LoadAverage();
        Console.WriteLine($"  ({name}: {clock.Elapsed.TotalSeconds:F0} s, load {Machine.LoadAverage()})");
    }

    /// <summary>Texts/s of the three MiniLM engines on short and long texts, side by side.</summary>
    private static void HeadlinePlot(BenchContext ctx)
    {
        var rows = ctx.Report.Measurements.Where(m => m.Section.StartsWith("MiniLM end to end", StringComparison.Ordinal)).ToList();
        if (rows.Count == 0) return;
        var sets = rows.Select(r => r.Section).Distinct().ToList();
        var engines = rows.Select(r => r.Name).Distinct().ToList();
        var series = engines.Select(e => (e, sets.Select(s => rows.First(r => r.Section == s && r.Name == e).Values["texts/s"]).ToArray())).ToList();
        ctx.Report.Plots.Insert(0, Plots.Bars(Path.Combine(ctx.OutDir, "minilm-vs-ort.png"), $"all-MiniLM-L6-v2 end to end, {ctx.Threads} threads",
            "texts/s", sets.Select(s => s.Replace("MiniLM end to end, ", "", StringComparison.Ordinal)).ToList(), series));
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

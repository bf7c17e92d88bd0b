using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.ML;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Extensions.AI;
using Ullme.MLNet.Inference;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Reliability;

/// <summary>
/// Soak (issue 14 point 3): N single-text calls (default 10,000) through the Microsoft.Extensions.AI generator, then N
/// through an ML.NET <c>PredictionEngine</c> over <c>mlContext.Transforms.UllmeEmbed()</c>, default model, each text
/// a different STS-B sentence (cycling when N exceeds them). Every N/10 calls: the live TorchSharp tensor count
/// (<c>torch.Tensor.TotalCount</c>: tensors created and not yet disposed or finalized, all threads), RSS (VmRSS of
/// /proc/self/status) and the managed heap, read first as they are, then after a full GC with finalizers. Goals:
/// the live tensor count at call N equals the count at call N/10; RSS at call N within 50 MiB of RSS at call N/10.
/// </summary>
public static class Soak
{
    public sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    public sealed class FeaturesRow
    {
        public float[] Features { get; set; } = [];
    }

    private readonly record struct Reading(int Call, long Tensors, long TensorsAfterGc, long Rss, long RssAfterGc, long Managed, double MsPerCall);

    private const double RssBudgetMib = 50;

    public static int Run(string[] args)
    {
        int calls = Option(args, "--calls") is { } c ? int.Parse(c, CultureInfo.InvariantCulture) : args.Contains("--quick") ? 2000 : 10_000;
        if (calls < 10) { Console.Error.WriteLine("--calls must be at least 10"); return 2; }
        int threads = Option(args, "--threads") is { } t ? int.Parse(t, CultureInfo.InvariantCulture) : Environment.ProcessorCount;
        string only = Option(args, "--only") ?? "generator,prediction-engine";
        string assets = BenchTexts.AssetsRoot(Option(args, "--assets"));
        UllmeRuntime.SetThreads(threads);
        var texts = BenchTexts.Load(assets, 12_000, 1);
        var pool = texts.ShortTexts;
        int every = calls / 10;
        Console.WriteLine($"ullme soak: {calls:N0} single-text calls per surface, readings every {every:N0}; {threads} libtorch threads, " +
                          $"{Environment.ProcessorCount} cores, load {Machine.LoadAverage()}; {pool.Count:N0} texts ({texts.Source})");
        var clock = Stopwatch.StartNew();
        bool ok = true;
        var report = new StringBuilder();

        if (only.Contains("generator", StringComparison.Ordinal))
        {
            using var generator = UllmeEmbeddingGenerator.Load(UllmeModel.DefaultModelName);
            var readings = Loop("Microsoft.Extensions.AI generator: GenerateAsync([text])", calls, every, i =>
            {
                var e = generator.GenerateAsync([pool[i % pool.Count]]).GetAwaiter().GetResult();
                if (e.Count != 1 || e[0].Vector.Length != 384) throw new InvalidOperationException($"call {i}: unexpected result");
            });
            ok &= Summarise("generator", readings, report);
        }
        if (only.Contains("prediction-engine", StringComparison.Ordinal))
        {
            var ml = new MLContext(seed: 1);
            var transformer = ml.Transforms.UllmeEmbed().Fit(ml.Data.LoadFromEnumerable(new[] { new TextRow() }));
            using var engine = ml.Model.CreatePredictionEngine<TextRow, FeaturesRow>(transformer);
            var row = new TextRow();
            var readings = Loop("ML.NET PredictionEngine over UllmeEmbed(): Predict(row)", calls, every, i =>
            {
                row.Text = pool[i % pool.Count];
                var f = engine.Predict(row);
                if (f.Features.Length != 384) throw new InvalidOperationException($"call {i}: unexpected result");
            });
            ok &= Summarise("prediction-engine", readings, report);
        }
        Console.WriteLine();
        Console.Write(report);
        Console.WriteLine($"done in {clock.Elapsed.TotalSeconds:F0} s; load {Machine.LoadAverage()}; {(ok ? "all goals met" : "GOAL NOT MET")}");
        return ok ? 0 : 1;
    }

    private static List<Reading> Loop(string title, int calls, int every, Action<int> call)
    {
        Console.WriteLine($"{title}");
        Console.WriteLine($"  {"call",7} {"tensors",8} {"after GC",8} {"RSS MiB",8} {"after GC",8} {"managed MiB",11} {"ms/call",8}");
        var readings = new List<Reading>();
        var interval = Stopwatch.StartNew();
        for (int i = 1; i <= calls; i++)
        {
            call(i - 1);
            if (i % every != 0) continue;
            double ms = interval.Elapsed.TotalMilliseconds / every;
            long tensors = Tensor.TotalCount, rss = Memory.RssBytes(), managed = GC.GetTotalMemory(false);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            var r = new Reading(i, tensors, Tensor.TotalCount, rss, Memory.RssBytes(), managed, ms);
            readings.Add(r);
            Console.WriteLine($"  {r.Call,7} {r.Tensors,8} {r.TensorsAfterGc,8} {Memory.Mib(r.Rss),8} {Memory.Mib(r.RssAfterGc),8} {Memory.Mib(r.Managed),11} {r.MsPerCall,8:F1}");
            interval.Restart();
        }
        return readings;
    }

    /// <summary>The goals between the first reading (call N/10) and the last (call N).</summary>
    private static bool Summarise(string name, List<Reading> readings, StringBuilder report)
    {
        var first = readings[0];
        var last = readings[^1];
        long tensorDelta = last.Tensors - first.Tensors, tensorDeltaGc = last.TensorsAfterGc - first.TensorsAfterGc;
        double rssDelta = (last.Rss - first.Rss) / (1024.0 * 1024.0), rssDeltaGc = (last.RssAfterGc - first.RssAfterGc) / (1024.0 * 1024.0);
        bool ok = tensorDelta == 0 && tensorDeltaGc == 0 && Math.Abs(rssDelta) <= RssBudgetMib;
        report.AppendLine(CultureInfo.InvariantCulture,
            $"{name}: live tensors at call {first.Call:N0} / {last.Call:N0}: {first.Tensors} / {last.Tensors} (after GC {first.TensorsAfterGc} / {last.TensorsAfterGc}); " +
            $"RSS {Memory.Mib(first.Rss)} / {Memory.Mib(last.Rss)} MiB (delta {rssDelta:+0.0;-0.0;0} MiB; after GC {rssDeltaGc:+0.0;-0.0;0} MiB); " +
            $"max RSS over the run {Memory.Mib(readings.Max(r => r.Rss))} MiB; {readings.Average(r => r.MsPerCall):F1} ms/call; {(ok ? "goals met" : "GOAL NOT MET")}");
        return ok;
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

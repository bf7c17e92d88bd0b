using System.Diagnostics;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Samples;

/// <summary>
/// Measures resident memory (Linux /proc) of one embedding call of <c>batch</c> texts of exactly <c>tokens</c> tokens:
/// RSS after loading, then the peak (VmHWM, reset just before the call) while embedding. This is the figure quoted
/// in docs/mlnet.md; it is a measurement tool, not a test.
/// </summary>
public static class MemorySample
{
    public static int Run(string model, int batch, int tokens, string dtype)
    {
        long before = Rss();
        var options = new ModelLoadOptions { DType = dtype.Equals("bfloat16", StringComparison.OrdinalIgnoreCase) ? ModelDType.BFloat16 : ModelDType.Float32 };
        using var m = UllmeModel.Load(model, options);
        var engine = new EmbeddingEngine(m);
        long loaded = Rss();

        // Texts long enough to be truncated to exactly `tokens` tokens.
        string word = "embedding ";
        var texts = Enumerable.Range(0, batch).Select(i => $"text {i}: " + string.Concat(Enumerable.Repeat(word, tokens * 2))).ToList();
        var eo = new EmbeddingOptions { BatchSize = batch, MaxLength = tokens };
        engine.Embed(texts.Take(2).ToList(), eo); // warm-up (lazy allocations, JIT)
        GC.Collect();
        long baseline = Rss();
        ResetPeak();
        var sw = Stopwatch.StartNew();
        long seenTokens = 0;
        engine.Embed(texts, eo, new Progress(p => seenTokens = p.Tokens));
        sw.Stop();
        long peak = Peak();
        Console.WriteLine($"model {m.ModelId}: {m.Config.ModelType}, hidden {m.EmbeddingDimension}, {m.Config.NumHiddenLayers} layers, {options.DType}");
        Console.WriteLine($"RSS before load {Mb(before)}, after load {Mb(loaded)}, before batch {Mb(baseline)}");
        Console.WriteLine($"batch {batch} x {tokens} tokens ({seenTokens} tokens): peak RSS {Mb(peak)} (+{Mb(peak - baseline)} over the loaded model), {sw.ElapsedMilliseconds} ms");
        return 0;
    }

    private sealed class Progress(Action<EngineProgress> a) : IProgress<EngineProgress>
    {
        public void Report(EngineProgress value) => a(value);
    }

    private static string Mb(long bytes) => $"{bytes / (1024.0 * 1024.0):F0} MiB";

    private static long Rss() => Status("VmRSS:");
    private static long Peak() => Status("VmHWM:");

    private static long Status(string key)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }

    /// <summary>Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).</summary>
    private static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");
}

using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Throughput of all-MiniLM-L6-v2 (ours float32 / bfloat16, ONNX Runtime) as a function of batch size, sequence
/// length (texts cut to exactly that many tokens) and thread count (1 vs the run's count), plotted as PNGs.
/// </summary>
public static class ScalingSection
{
    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("Scaling");
        using var f32 = UllmeModel.Load(UllmeModel.DefaultModelName, new ModelLoadOptions { DType = ModelDType.Float32 });
        using var bf16 = UllmeModel.Load(UllmeModel.DefaultModelName, new ModelLoadOptions { DType = ModelDType.BFloat16 });
        // bfloat16 only where the CPU has it natively (emulated it is ~5-10x slower and would dominate the run time).
        var engines = Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16
            ? new (string Name, EmbeddingEngine Engine)[] { ("ours float32", new EmbeddingEngine(f32)), ("ours bfloat16", new EmbeddingEngine(bf16)) }
            : [("ours float32", new EmbeddingEngine(f32))];
        if (!Ullme.MLNet.Inference.UllmeRuntime.CpuHasNativeBFloat16)
            ctx.Report.Notes.Add("Scaling: bfloat16 series left out, the CPU has no native bfloat16 (see the MiniLM and GEMM tables for its speed).");
        var shortTexts = ctx.Texts.ShortTexts.Take(ctx.Quick ? 128 : 512).ToList();
        double budget = ctx.Quick ? 0.5 : 2.0;

        // Batch size.
        int[] batchSizes = ctx.Quick ? [1, 8, 32] : [1, 4, 16, 32, 64, 128];
        var batchSeries = new List<(string, double[], double[])>();
        using (var ort = new OrtMiniLm(ctx.Threads))
        {
            var ys = batchSizes.Select(bs => shortTexts.Count / Timing.Measure(() => ort.Embed(shortTexts, bs, out _), budget, 1, 5).MedianSeconds).ToArray();
            batchSeries.Add(("ONNX Runtime float32", batchSizes.Select(b => (double)b).ToArray(), ys));
        }
        foreach (var (name, engine) in engines)
        {
            var ys = batchSizes.Select(bs => shortTexts.Count / Timing.Measure(() => engine.Embed(shortTexts, new EmbeddingOptions { BatchSize = bs }), budget, 1, 5).MedianSeconds).ToArray();
            batchSeries.Add((name, batchSizes.Select(b => (double)b).ToArray(), ys));
        }
        foreach (var (name, xs, ys) in batchSeries)
            for (int i = 0; i < xs.Length; i++)
                ctx.Report.Add("Scaling: batch size (MiniLM, short texts)", $"{name}, batch {xs[i]}", new() { ["texts/s"] = ys[i] });
        ctx.Report.Plots.Add(Plots.Lines(Path.Combine(ctx.OutDir, "scaling-batch.png"), $"all-MiniLM-L6-v2, STS-B sentences, {ctx.Threads} threads",
            "batch size", "texts/s", batchSeries));

        // Sequence length: texts long enough to be cut to exactly L tokens.
        int[] lengths = ctx.Quick ? [32, 128] : [16, 32, 64, 128, 256];
        int count = ctx.Quick ? 32 : 128;
        var longTexts = Enumerable.Range(0, count).Select(i => string.Join(' ', Enumerable.Range(0, 24).Select(k => ctx.Texts.ShortTexts[(i * 24 + k) % ctx.Texts.ShortTexts.Count]))).ToList();
        var seqSeries = new List<(string, double[], double[])>();
        foreach (var (name, engine) in engines)
        {
            var ys = lengths.Select(l =>
            {
                var t = Timing.Measure(() => engine.Embed(longTexts, new EmbeddingOptions { BatchSize = 32, MaxLength = l }), budget, 1, 5);
                return count * (double)l / t.MedianSeconds;
            }).ToArray();
            seqSeries.Add((name, lengths.Select(l => (double)l).ToArray(), ys));
        }
        foreach (var (name, xs, ys) in seqSeries)
            for (int i = 0; i < xs.Length; i++)
                ctx.Report.Add("Scaling: sequence length (MiniLM, batch 32)", $"{name}, {xs[i]} tokens", new() { ["tokens/s"] = ys[i], ["texts/s"] = ys[i] / xs[i] });
        ctx.Report.Plots.Add(Plots.Lines(Path.Combine(ctx.OutDir, "scaling-seqlen.png"), $"all-MiniLM-L6-v2, batch 32, {ctx.Threads} threads",
            "tokens per text", "tokens/s", seqSeries));

        // Threads: 1 vs the run's count (and 2 when the run uses more).
        int[] threadCounts = ctx.Threads > 1 ? [1, ctx.Threads] : [1];
        var threadSeries = new List<(string, double[])>();
        var ortRates = new List<double>();
        foreach (int th in threadCounts)
        {
            using var ort = new OrtMiniLm(th);
            ortRates.Add(shortTexts.Count / Timing.Measure(() => ort.Embed(shortTexts, 32, out _), budget, 1, 5).MedianSeconds);
        }
        threadSeries.Add(("ONNX Runtime float32", ortRates.ToArray()));
        foreach (var (name, engine) in engines)
        {
            var rates = new List<double>();
            foreach (int th in threadCounts)
            {
                set_num_threads(th);
                rates.Add(shortTexts.Count / Timing.Measure(() => engine.Embed(shortTexts, new EmbeddingOptions { BatchSize = 32 }), budget, 1, 5).MedianSeconds);
            }
            set_num_threads(ctx.Threads);
            threadSeries.Add((name, rates.ToArray()));
        }
        foreach (var (name, ys) in threadSeries)
        {
            for (int i = 0; i < threadCounts.Length; i++)
                ctx.Report.Add("Scaling: threads (MiniLM, short texts, batch 32)", $"{name}, {threadCounts[i]} thread(s)", new() { ["texts/s"] = ys[i] });
            if (threadCounts.Length > 1)
                ctx.Report.AddRatio($"thread scaling {name}: {threadCounts[^1]} / 1 threads", ys[^1] / ys[0], "texts/s", "cores actually free (shared host), memory bandwidth");
        }
        ctx.Report.Plots.Add(Plots.Bars(Path.Combine(ctx.OutDir, "scaling-threads.png"), "all-MiniLM-L6-v2, STS-B sentences, batch 32", "texts/s",
            threadCounts.Select(t => $"{t} thread(s)").ToList(), threadSeries));
    }
}

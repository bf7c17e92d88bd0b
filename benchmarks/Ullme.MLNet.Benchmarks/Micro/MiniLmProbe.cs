using System.Diagnostics;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>`probe-minilm [threads...]`: where the time of one MiniLM embedding call goes (tokenize, bare forward,
/// engine, ORT), for quick before/after checks of engine changes.</summary>
public static class MiniLmProbe
{
    public static int Run(string[] args)
    {
        var texts = BenchTexts.Load(BenchTexts.AssetsRoot(null), 256, 0).ShortTexts;
        using var model = UllmeModel.Load("default");
        var engine = new EmbeddingEngine(model);
        var eo = new EmbeddingOptions { BatchSize = 32 };
        foreach (int th in args.Length > 0 ? args.Select(int.Parse) : [1, 2])
        {
            UllmeRuntime.SetThreads(th);
            using var ort = new OrtMiniLm(th);
            var tok = Timing.Measure(() => { foreach (var t in texts) engine.Encode(t, eo); }, 1, 3);
            var enc = texts.Select(t => engine.Encode(t, eo)).OrderByDescending(e => e.Length).ToArray();
            var batches = enc.Chunk(32).Select(c =>
            {
                int len = c.Max(e => e.Length);
                var ids = new long[c.Length * len]; var mask = new long[c.Length * len];
                for (int b = 0; b < c.Length; b++) for (int j = 0; j < c[b].Length; j++) { ids[b * len + j] = c[b].Ids[j]; mask[b * len + j] = 1; }
                return (tensor(ids, [c.Length, len]), tensor(mask, [c.Length, len]));
            }).ToList();
            var bare = Timing.Measure(() => { using var ng = no_grad(); foreach (var (i, m) in batches) { using var s = NewDisposeScope(); model.Backbone.Forward(i, m, Modeling.AttentionMode.Bidirectional); } }, 2, 3);
            var full = Timing.Measure(() => engine.Embed(texts, eo), 2, 3);
            var o = Timing.Measure(() => ort.Embed(texts, 32, out _), 2, 3);
            Console.WriteLine($"threads {th}: tokenize {tok.MedianSeconds * 1000:F0} ms, bare forward {bare.MedianSeconds * 1000:F0} ms, engine {full.MedianSeconds * 1000:F0} ms ({texts.Count / full.MedianSeconds:F0} texts/s), ORT {o.MedianSeconds * 1000:F0} ms ({texts.Count / o.MedianSeconds:F0} texts/s); load {Machine.LoadAverage()}");
        }
        return 0;
    }
}

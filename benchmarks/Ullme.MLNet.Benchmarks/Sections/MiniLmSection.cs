using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// all-MiniLM-L6-v2 end to end (texts in, normalised embeddings out): ONNX Runtime + HF tokenizers vs our engine in
/// float32 and bfloat16, on short (STS-B) and long (SciFact, truncated at 256 tokens) texts, same texts, same batch
/// size (32), same thread count. Also the cost of our pipeline over a bare forward of the same modules at the same
/// padded shapes, directly and through an ML.NET IDataView.
/// </summary>
public static class MiniLmSection
{
    private const int BatchSize = 32;

    public sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("all-MiniLM-L6-v2: ours vs ONNX Runtime");
        var report = ctx.Report;
        using var ort = new OrtMiniLm(ctx.Threads);
        using var f32 = UllmeModel.Load(UllmeModel.DefaultModelName, new ModelLoadOptions { DType = ModelDType.Float32 });
        using var bf16 = UllmeModel.Load(UllmeModel.DefaultModelName, new ModelLoadOptions { DType = ModelDType.BFloat16 });
        var ours32 = new EmbeddingEngine(f32);
        var ours16 = new EmbeddingEngine(bf16);
        var eo = new EmbeddingOptions { BatchSize = BatchSize };

        foreach (var (setName, texts) in new[] { ("short (STS-B)", ctx.Texts.ShortTexts), ("long (SciFact, ≤256 tok)", ctx.Texts.LongTexts) })
        {
            float[][]? refOrt = null, ref32 = null, ref16 = null;
            long tokens = 0;
            var rates = new Dictionary<string, double>();
            void Time(string name, Func<(float[][] E, long Tokens)> run, string? note = null, int? textCount = null)
            {
                int n = textCount ?? texts.Count;
                Memory.ResetPeak();
                long baseline = Memory.RssBytes();
                (float[][] E, long Tokens) last = default;
                var t = Timing.Measure(() => last = run(), ctx.Budget, minRepeats: 2);
                long peak = Memory.PeakBytes();
                tokens = last.Tokens;
                rates[name] = n / t.MedianSeconds;
                report.Add($"MiniLM end to end, {setName}", name, new()
                {
                    ["texts/s"] = n / t.MedianSeconds,
                    ["tokens/s"] = last.Tokens / t.MedianSeconds,
                    ["texts/s best"] = n / t.BestSeconds,
                    ["peak MiB over baseline"] = Memory.Mib(peak - baseline),
                    ["texts"] = n,
                    ["repeats"] = t.Repeats,
                }, note);
                if (name.StartsWith("ONNX", StringComparison.Ordinal)) refOrt = last.E;
                else if (name.Contains("float32", StringComparison.Ordinal)) ref32 = last.E;
                else ref16 = last.E;
            }
            Time("ONNX Runtime 1.30 + HF tokenizers, float32", () => (ort.Embed(texts, BatchSize, out long n), n), "graph optimisations on");
            Time("ours, float32", () => { var r = ours32.EmbedDetailed(texts, eo); return (r.Embeddings, r.TokenCount); });
            // Without native bfloat16 the emulated GEMMs are ~10x slower: time a prefix of the same texts (rates are per
            // text, so the ratio stays meaningful) instead of letting bfloat16 dominate the run.
            var texts16 = !UllmeRuntime.CpuHasNativeBFloat16 && !ctx.Quick ? texts.Take(Math.Max(32, texts.Count / 8)).ToList() : texts;
            Time("ours, bfloat16", () => { var r = ours16.EmbedDetailed(texts16, eo); return (r.Embeddings, r.TokenCount); },
                texts16.Count < texts.Count ? $"first {texts16.Count} of the {texts.Count} texts (emulated bfloat16)" : null, texts16.Count);

            var (meanOrt, minOrt) = Cosines(ref32!, refOrt!);
            var (mean16, min16) = Cosines(ref16!, ref32!.Take(ref16!.Length).ToArray());
            report.Add($"MiniLM accuracy, {setName}", "ours float32 vs ONNX Runtime", new() { ["mean cosine"] = meanOrt, ["min cosine"] = minOrt });
            report.Add($"MiniLM accuracy, {setName}", "ours bfloat16 vs ours float32", new() { ["mean cosine"] = mean16, ["min cosine"] = min16 });
            report.AddRatio($"MiniLM {setName}: ours float32 / ORT", rates["ours, float32"] / rates["ONNX Runtime 1.30 + HF tokenizers, float32"],
                "texts/s, same texts, batch 32, same threads", "GEMM (fp32) + framework overhead per op");
            report.AddRatio($"MiniLM {setName}: ours bfloat16 / ORT", rates["ours, bfloat16"] / rates["ONNX Runtime 1.30 + HF tokenizers, float32"],
                $"texts/s; accuracy cost: cosine to float32 mean {mean16:F5}, min {min16:F5}", "bf16 GEMM peak; conversions at norms");

            if (setName.StartsWith("short", StringComparison.Ordinal))
                Overhead(ctx, f32, ours32, texts, eo, setName);
        }
    }

    /// <summary>Our pipeline (tokenize, sort, batch, pool, normalise; and the ML.NET IDataView path) vs a bare forward
    /// of the same backbone over the same padded batches.</summary>
    private static void Overhead(BenchContext ctx, UllmeModel model, EmbeddingEngine engine, IReadOnlyList<string> texts, EmbeddingOptions eo, string setName)
    {
        var o = engine.Resolve(eo);
        var encoded = texts.Select(t => engine.Encode(t, eo)).ToArray();
        var order = Enumerable.Range(0, encoded.Length).OrderByDescending(i => encoded[i].Length).ToArray();
        var batches = new List<(Tensor Ids, Tensor Mask)>();
        for (int s = 0; s < order.Length; s += o.BatchSize)
        {
            var rows = order.Skip(s).Take(o.BatchSize).Select(i => encoded[i].Ids).ToArray();
            int len = rows.Max(r => r.Length);
            var ids = new long[rows.Length * len];
            var mask = new long[rows.Length * len];
            for (int b = 0; b < rows.Length; b++)
                for (int j = 0; j < rows[b].Length; j++) { ids[b * len + j] = rows[b][j]; mask[b * len + j] = 1; }
            batches.Add((tensor(ids, [rows.Length, len]), tensor(mask, [rows.Length, len])));
        }
        try
        {
            var bare = Timing.Measure(() =>
            {
                using var noGrad = no_grad();
                foreach (var (ids, mask) in batches)
                {
                    using var scope = NewDisposeScope();
                    model.Backbone.Forward(ids, mask, o.Attention);
                }
            }, ctx.Budget, minRepeats: 2);
            var full = Timing.Measure(() => engine.Embed(texts, eo), ctx.Budget, minRepeats: 2);
            var overlapped = Timing.Measure(() => engine.Embed(texts, eo with { OverlapTokenization = true }), ctx.Budget, minRepeats: 2);
            var globalSort = Timing.Measure(() => engine.Embed(texts, eo with { SortWindow = 0 }), ctx.Budget, minRepeats: 2);
            var tokenizeOnly = Timing.Measure(() => { foreach (string t in texts) engine.Encode(t, eo); }, ctx.Budget, minRepeats: 2);

            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t }).ToList());
            var transformer = ml.Transforms.UllmeEmbed(model, "Features", "Text", new Transforms.UllmeEmbeddingOptions { BatchSize = o.BatchSize }).Fit(data);
            var viaMl = Timing.Measure(() =>
            {
                var output = transformer.Transform(data);
                using var cursor = output.GetRowCursor(output.Schema.Where(c => c.Name == "Features"));
                var getter = cursor.GetGetter<VBuffer<float>>(output.Schema["Features"]);
                VBuffer<float> v = default;
                while (cursor.MoveNext()) getter(ref v);
            }, ctx.Budget, minRepeats: 2);

            var r = ctx.Report;
            string section = $"Pipeline overhead (MiniLM float32, {setName})";
            r.Add(section, "bare backbone forward, pre-padded sorted batches", new() { ["seconds"] = bare.MedianSeconds, ["texts/s"] = texts.Count / bare.MedianSeconds });
            r.Add(section, "engine.Embed (tokenize, sort, batch, forward, pool, normalise)", new() { ["seconds"] = full.MedianSeconds, ["texts/s"] = texts.Count / full.MedianSeconds });
            r.Add(section, "engine.Embed, tokenization overlapped (OverlapTokenization)", new() { ["seconds"] = overlapped.MedianSeconds, ["texts/s"] = texts.Count / overlapped.MedianSeconds });
            r.Add(section, "engine.Embed, whole input sorted at once (no window)", new() { ["seconds"] = globalSort.MedianSeconds, ["texts/s"] = texts.Count / globalSort.MedianSeconds });
            r.Add(section, "tokenization alone (warm word cache)", new() { ["seconds"] = tokenizeOnly.MedianSeconds, ["texts/s"] = texts.Count / tokenizeOnly.MedianSeconds });
            r.Add(section, "ML.NET UllmeEmbed transform, cursor over IDataView", new() { ["seconds"] = viaMl.MedianSeconds, ["texts/s"] = texts.Count / viaMl.MedianSeconds },
                "sorts within its read-ahead window (8 x batch), like the engine");
            r.AddRatio("pipeline overhead: engine.Embed / bare forward", full.MedianSeconds / bare.MedianSeconds, "time, same padded shapes", "tokenizer, pooling, host copies");
            r.AddRatio("tokenization overlap: time without / with", full.MedianSeconds / overlapped.MedianSeconds,
                $"engine.Embed, sort window {o.SortWindow} texts", "tokenization share of the time; cores left free by the forward");
            r.AddRatio("pipeline overhead: ML.NET IDataView / bare forward", viaMl.MedianSeconds / bare.MedianSeconds, "time; windowed sort pads more", "read-ahead window padding, cursor plumbing");
        }
        finally
        {
            foreach (var (ids, mask) in batches) { ids.Dispose(); mask.Dispose(); }
        }
    }

    /// <summary>Mean and minimum cosine between corresponding rows.</summary>
    public static (double Mean, double Min) Cosines(float[][] a, float[][] b)
    {
        double sum = 0, min = double.MaxValue;
        for (int i = 0; i < a.Length; i++)
        {
            double dot = 0, na = 0, nb = 0;
            for (int d = 0; d < a[i].Length; d++) { dot += a[i][d] * b[i][d]; na += a[i][d] * a[i][d]; nb += b[i][d] * b[i][d]; }
            double c = dot / Math.Sqrt(na * nb);
            sum += c;
            min = Math.Min(min, c);
        }
        return (sum / a.Length, min);
    }
}

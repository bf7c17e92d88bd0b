using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Onnx.Export;

namespace Ullme.MLNet.Benchmarks;

/// <summary>probe-onnx-graph: the operators ONNX Runtime runs after its graph optimisations, for the stock
/// all-MiniLM ONNX and our export (float32, int8), so fusions that fire on one and not the other show.</summary>
public static class OnnxGraphProbe
{
    /// <summary>Per-operator-type time of 100 runs of a [32, 16] batch (ONNX Runtime's own profiler), in ms per run.</summary>
    private static void Profile(string name, byte[] bytes)
    {
        string prefix = Path.Combine(Path.GetTempPath(), $"ullme-profile-{name}");
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = Environment.ProcessorCount, EnableProfiling = true, ProfileOutputPathPrefix = prefix };
        using var session = new InferenceSession(bytes, options);
        const int b = 32, t = 16, runs = 100;
        var ids = Enumerable.Range(0, b * t).Select(i => (long)(1000 + i % 5000)).ToArray();
        var mask = Enumerable.Repeat(1L, b * t).ToArray();
        var feeds = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [b, t]),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [b, t]),
        };
        if (session.InputMetadata.ContainsKey("token_type_ids")) feeds["token_type_ids"] = OrtValue.CreateTensorValueFromMemory(new long[b * t], [b, t]);
        if (session.InputMetadata.ContainsKey("pooling_mask")) feeds["pooling_mask"] = OrtValue.CreateTensorValueFromMemory(mask, [b, t]);
        string output = session.OutputMetadata.Keys.First();
        for (int i = 0; i < runs; i++) { using var r = session.Run(new RunOptions(), feeds, [output]); }
        string file = session.EndProfiling();
        var events = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file)).RootElement.EnumerateArray()
            .Where(e => e.GetProperty("cat").GetString() == "Node" && e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal))
            .Select(e => (Op: e.GetProperty("args").GetProperty("op_name").GetString()!, Us: e.GetProperty("dur").GetDouble()));
        var byOp = events.GroupBy(e => e.Op).Select(gr => (gr.Key, Ms: gr.Sum(x => x.Us) / 1000.0 / runs)).OrderByDescending(x => x.Ms).ToList();
        double total = byOp.Sum(x => x.Ms);
        Console.WriteLine($"  {name} [{b}, {t}]: {total:F2} ms of kernels per run: " + string.Join(", ", byOp.Take(8).Select(x => $"{x.Key} {x.Ms:F2} ({100 * x.Ms / total:F0}%)")));
        foreach (var v in feeds.Values) v.Dispose();
        File.Delete(file);
    }

    public static int Run(string[] args)
    {
        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        var settings = OnnxGraphExport.Resolve(model.Backbone, model.Defaults, new OnnxExportOptions());
        var graphs = new (string Name, byte[] Bytes)[]
        {
            ("stock", DefaultModel.ReadResource(DefaultModel.OnnxResourceName)),
            ("ours-fp32", OnnxGraphExport.ToBytes(model.Backbone, model.Config, settings, "m")),
            ("ours-int8", OnnxGraphExport.ToBytes(model.Backbone, model.Config, settings with { Quantize = OnnxQuantization.Int8 }, "m")),
        };
        foreach (var (name, bytes) in graphs)
        {
            string path = Path.Combine(Path.GetTempPath(), $"ullme-probe-{name}.optimized.onnx");
            using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = path })
            using (new InferenceSession(bytes, options)) { }
            var optimized = Ullme.MLNet.Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
            var counts = optimized.Graph.Node.GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).Select(g => $"{g.Key} {g.Count()}");
            Console.WriteLine($"{name}: {optimized.Graph.Node.Count} nodes after optimisation: {string.Join(", ", counts)}");
            if (args.Contains("--profile")) Profile(name, bytes);
        }
        return 0;
    }
}

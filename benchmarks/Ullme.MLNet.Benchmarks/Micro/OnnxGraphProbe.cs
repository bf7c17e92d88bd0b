using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Onnx.Export;

namespace Ullme.MLNet.Benchmarks;

/// <summary>probe-onnx-graph: the operators ONNX Runtime runs after its graph optimisations, for the stock
/// all-MiniLM ONNX and our export (float32, int8), so fusions that fire on one and not the other show.</summary>
public static class OnnxGraphProbe
{
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
        }
        return 0;
    }
}

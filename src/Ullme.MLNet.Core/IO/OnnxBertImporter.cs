using static TorchSharp.torch;

namespace Ullme.MLNet.IO;

/// <summary>
/// Recovers Hugging Face BERT checkpoint keys and tensors from an ONNX export of <c>BertModel</c> (as made by
/// <c>torch.onnx.export</c> or Optimum).
/// <para>
/// Exporters keep the names of parameters that the graph uses as they are (embeddings, LayerNorms, biases) but
/// fold every <c>nn.Linear</c> into <c>MatMul(x, Wᵀ)</c> with the transposed weight stored as a new, anonymous
/// initializer (<c>"927"</c>, <c>"onnx::MatMul_1234"</c>). Which Linear such a weight belonged to is still written in
/// the graph: the MatMul's output goes straight into an <c>Add</c> with that Linear's bias, whose name survives
/// (<c>encoder.layer.3.attention.self.key.bias</c>). So each anonymous MatMul weight is named after the bias it is
/// added to (<c>…key.weight</c>) and transposed back to PyTorch's [out, in]. <c>Gemm</c> nodes (the pooler, some
/// exporters' Linears) are handled the same way, honouring <c>transB</c>.
/// </para>
/// </summary>
internal static class OnnxBertImporter
{
    /// <summary>
    /// The float weights of <paramref name="model"/> under HF <c>BertModel</c> keys (no <c>bert.</c> prefix), as new
    /// float32 CPU tensors the caller owns. Integer buffers (<c>embeddings.position_ids</c>) and anonymous
    /// constants that are not Linear weights are left out.
    /// </summary>
    /// <exception cref="UllmeException">A Linear weight cannot be traced to a named bias, or two weights map to
    /// the same key.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(OnnxModel model, string sourceName = "ONNX model")
    {
        var graph = model.Graph;
        var init = graph.InitializersByName;

        // value name → the nodes that read it
        var consumers = new Dictionary<string, List<OnnxNode>>();
        foreach (var node in graph.Nodes)
            foreach (var input in node.Inputs)
            {
                if (!consumers.TryGetValue(input, out var list)) consumers[input] = list = [];
                list.Add(node);
            }

        // Linear weights found by tracing: HF key → (initializer, needs transposing).
        var traced = new Dictionary<string, (OnnxTensor Tensor, bool Transpose)>();
        void AddTraced(string key, OnnxTensor tensor, bool transpose, OnnxNode node)
        {
            if (traced.TryGetValue(key, out var existing) && existing.Tensor.Name != tensor.Name)
                throw new UllmeException($"'{sourceName}': both '{existing.Tensor.Name}' and '{tensor.Name}' (node {node.Name}) trace to weight '{key}'.");
            traced[key] = (tensor, transpose);
        }

        foreach (var node in graph.Nodes)
        {
            if (node.OpType == "MatMul" && node.Inputs.Count == 2
                && init.TryGetValue(node.Inputs[1], out var w) && w.Dims.Count == 2 && w.IsFloatingPoint
                && !IsHfName(w.Name))
            {
                // y = x · W with W [in, out]; the bias Add that follows names the Linear.
                string? biasName = (consumers.GetValueOrDefault(node.Outputs[0]) ?? [])
                    .Where(c => c.OpType == "Add")
                    .SelectMany(c => c.Inputs)
                    .FirstOrDefault(i => init.TryGetValue(i, out var b) && IsHfName(i) && i.EndsWith(".bias", StringComparison.Ordinal)
                        && b.Dims.Count == 1 && b.Dims[0] == w.Dims[1]);
                if (biasName is null)
                    throw new UllmeException($"'{sourceName}': cannot tell which layer the MatMul weight '{w.Name}' (node '{node.Name}', shape [{string.Join(", ", w.Dims)}]) belongs to: its output is not added to a named bias.");
                AddTraced(StripPrefix(biasName[..^".bias".Length]) + ".weight", w, transpose: true, node);
            }
            else if (node.OpType == "Gemm" && node.Inputs.Count >= 3
                && init.TryGetValue(node.Inputs[1], out var gw) && gw.Dims.Count == 2 && gw.IsFloatingPoint
                && !IsHfName(gw.Name) && IsHfName(node.Inputs[2]) && node.Inputs[2].EndsWith(".bias", StringComparison.Ordinal))
            {
                // Gemm computes A·op(B) + C; with transB = 1, B is already [out, in].
                bool transB = node.Attribute("transB")?.Int == 1;
                AddTraced(StripPrefix(node.Inputs[2][..^".bias".Length]) + ".weight", gw, transpose: !transB, node);
            }
        }

        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var tensor in graph.Initializers)
            {
                if (!tensor.IsFloatingPoint || !IsHfName(tensor.Name)) continue;
                string key = StripPrefix(tensor.Name);
                if (result.ContainsKey(key) || traced.ContainsKey(key))
                    throw new UllmeException($"'{sourceName}': weight '{key}' occurs twice.");
                result[key] = ToFloat32(tensor, transpose: false);
            }
            foreach (var (key, (tensor, transpose)) in traced)
            {
                if (result.ContainsKey(key))
                    throw new UllmeException($"'{sourceName}': weight '{key}' is both named and traced from '{tensor.Name}'.");
                result[key] = ToFloat32(tensor, transpose);
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>A parameter name as PyTorch writes it ("encoder.layer.0.output.dense.bias"), as opposed to an
    /// exporter's generated value name ("927", "onnx::MatMul_1234").</summary>
    private static bool IsHfName(string name) =>
        name.Contains('.') && !name.Contains("::", StringComparison.Ordinal) && !name.StartsWith("/", StringComparison.Ordinal)
        && char.IsLetter(name[0]);

    private static string StripPrefix(string key) =>
        key.StartsWith("bert.", StringComparison.Ordinal) ? key["bert.".Length..] : key;

    private static Tensor ToFloat32(OnnxTensor tensor, bool transpose)
    {
        using var scope = NewDisposeScope();
        var t = tensor.ToTorch();
        if (t.dtype != ScalarType.Float32) t = t.to(ScalarType.Float32);
        if (transpose) t = t.t().contiguous();
        return t.MoveToOuterDisposeScope();
    }
}

using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Onnx.Export;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Onnx;

/// <summary>Exports a backbone in memory and runs the graph on ONNX Runtime next to the TorchSharp forward.</summary>
internal static class OnnxTestSupport
{
    public static InferenceSession Session(EmbeddingBackbone backbone, ModelConfig config, AttentionMode mode, PoolingMode pooling,
        bool normalize, OnnxQuantization quantize = OnnxQuantization.None, int opset = 17, bool poolingMaskInput = true)
    {
        var settings = new OnnxGraphSettings(mode, pooling, normalize, poolingMaskInput, quantize, opset, backbone.HiddenSize);
        byte[] bytes = OnnxGraphExport.ToBytes(backbone, config, settings, "test");
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 1 };
        return new InferenceSession(bytes, options);
    }

    /// <summary>Runs the graph; returns sentence_embedding [B, H] and token_embeddings [B, T, H] as torch tensors.</summary>
    public static (Tensor Sentence, Tensor Tokens) Run(InferenceSession session, Tensor ids, Tensor mask, Tensor? poolingMask)
    {
        long[] shape = [ids.shape[0], ids.shape[1]];
        var inputs = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(Longs(ids), shape),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(Longs(mask), shape),
        };
        if (session.InputMetadata.ContainsKey("pooling_mask"))
            inputs["pooling_mask"] = OrtValue.CreateTensorValueFromMemory(Longs(poolingMask ?? mask), shape);
        try
        {
            using var results = session.Run(new RunOptions(), inputs, ["sentence_embedding", "token_embeddings"]);
            return (ToTensor(results[0]), ToTensor(results[1]));
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    private static Tensor ToTensor(OrtValue value) =>
        tensor(value.GetTensorDataAsSpan<float>().ToArray(), value.GetTensorTypeAndShape().Shape);

    public static long[] Longs(Tensor t)
    {
        using var c = t.to(ScalarType.Int64).contiguous();
        return c.data<long>().ToArray();
    }

    /// <summary>Max |a − b| over the real positions of [B, T, H] states.</summary>
    public static double MaxDiffAtRealTokens(Tensor a, Tensor b, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(ScalarType.Float64).unsqueeze(-1);
        return ((a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs() * m).max().item<double>();
    }

    public static double MaxDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();
    }
}

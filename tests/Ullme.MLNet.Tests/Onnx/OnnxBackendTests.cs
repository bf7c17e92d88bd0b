using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Ullme.MLNet.IO;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Onnx;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Ullme.MLNet.Tests.Onnx;

/// <summary>
/// The public interfaces of issue 16: <see cref="UllmeOnnx.Export"/> writes a loadable folder; <see cref="UllmeModel.Load"/>
/// uses its model.onnx directly, or exports in memory with <see cref="ModelLoadOptions.Backend"/> = OnnxRuntime; the
/// engine's embeddings on ONNX Runtime equal TorchSharp's (bundled MiniLM, stories260K), instructions stay out of
/// pooling, a pooling other than the exported one falls back to the token states; int8 and int4 graphs hold quantized
/// operators and stay close to float32; external data; and what is refused.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class OnnxBackendTests(ITestOutputHelper output) : IDisposable
{
    private const double Tolerance = 1e-4;
    private readonly TemporaryFolder _tmp = new();

    private static readonly string[] Texts =
    [
        "A man is playing a guitar on the stage.",
        "Two dogs run across a snowy field",
        "hi",
        "The quarterly report shows revenue grew by twelve percent while costs stayed flat, which pleased the board of directors.",
    ];

    public void Dispose() => _tmp.Dispose();

    private static double MaxDiff(float[][] a, float[][] b) =>
        a.Zip(b, (x, y) => x.Zip(y, (p, q) => Math.Abs(p - q)).Max()).Max();

    private static double MinCosine(float[][] a, float[][] b) =>
        a.Zip(b, (x, y) => x.Zip(y, (p, q) => (double)p * q).Sum() / Math.Sqrt(x.Sum(v => (double)v * v) * y.Sum(v => (double)v * v))).Min();

    [Fact]
    public void ExportedDefaultModelFolderLoadsOnOnnxRuntimeAndMatchesTorch()
    {
        using var torchModel = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "minilm-onnx");
        var result = UllmeOnnx.Export(torchModel, dir);
        Assert.True(File.Exists(Path.Combine(dir, "model.onnx")));
        Assert.Null(result.ExternalDataFile);
        Assert.Equal(36, result.LinearLayers);                       // 6 layers x (q, k, v, o, intermediate, output)
        Assert.True(File.Exists(Path.Combine(dir, "vocab.txt")) || File.Exists(Path.Combine(dir, "tokenizer.json")), "no tokenizer files");
        foreach (string f in new[] { "config.json", "ullme.json", "modules.json", "1_Pooling/config.json" })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        var ullme = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "ullme.json")))!;
        Assert.Equal("model.onnx", (string?)ullme["onnx"]!["file"]);
        Assert.Equal("none", (string?)ullme["onnx"]!["quantize"]);

        using var onnxModel = UllmeModel.Load(dir);
        Assert.Equal(InferenceBackend.OnnxRuntime, onnxModel.Backend);
        Assert.Equal(torchModel.EmbeddingDimension, onnxModel.EmbeddingDimension);
        var expected = new EmbeddingEngine(torchModel).Embed(Texts, new EmbeddingOptions { BatchSize = 3 });
        var actual = new EmbeddingEngine(onnxModel).Embed(Texts, new EmbeddingOptions { BatchSize = 3 });
        double diff = MaxDiff(expected, actual);
        output.WriteLine($"MiniLM folder: max abs diff {diff:E2}");
        Assert.True(diff < Tolerance, $"ONNX Runtime embeddings differ from TorchSharp's by {diff}");

        // Instruction kept out of pooling, on both backends alike.
        var instructed = new EmbeddingOptions { Instruction = "Represent this sentence for retrieval: ", BatchSize = 4 };
        double diffInstructed = MaxDiff(new EmbeddingEngine(torchModel).Embed(Texts, instructed), new EmbeddingEngine(onnxModel).Embed(Texts, instructed));
        Assert.True(diffInstructed < Tolerance, $"with an instruction: {diffInstructed}");
        // A pooling other than the exported one: pooled by the engine from token_embeddings.
        var cls = new EmbeddingOptions { Pooling = PoolingMode.FirstToken, Normalize = false };
        double diffCls = MaxDiff(new EmbeddingEngine(torchModel).Embed(Texts, cls), new EmbeddingEngine(onnxModel).Embed(Texts, cls));
        Assert.True(diffCls < Tolerance, $"first-token pooling: {diffCls}");
    }

    [Fact]
    public void BackendOnnxRuntimeExportsInMemory()
    {
        using var torchModel = UllmeModel.Load("default");
        using var onnxModel = UllmeModel.Load("default", new ModelLoadOptions { Backend = InferenceBackend.OnnxRuntime });
        Assert.Equal(InferenceBackend.OnnxRuntime, onnxModel.Backend);
        double diff = MaxDiff(new EmbeddingEngine(torchModel).Embed(Texts), new EmbeddingEngine(onnxModel).Embed(Texts));
        Assert.True(diff < Tolerance, $"{diff}");
    }

    [AssetFact]
    public void DecoderExportKeepsItsAttentionModeAndRefusesTheOther()
    {
        using var torchModel = UllmeModel.Load(Assets.Stories260K);
        string dir = Path.Combine(_tmp.Path, "stories-causal");
        UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { Attention = AttentionMode.Causal, Pooling = PoolingMode.LastToken });
        using var onnxModel = UllmeModel.Load(dir);
        var options = new EmbeddingOptions { Attention = AttentionMode.Causal, Pooling = PoolingMode.LastToken };
        double diff = MaxDiff(new EmbeddingEngine(torchModel).Embed(Texts, options), new EmbeddingEngine(onnxModel).Embed(Texts, options));
        output.WriteLine($"stories260K causal last-token: {diff:E2}");
        Assert.True(diff < Tolerance, $"{diff}");
        // The folder's defaults are the export's, so a plain call works; the other mode is refused with the way out.
        Assert.Equal(AttentionMode.Causal, onnxModel.Defaults.Attention);
        var e = Assert.Throws<UllmeException>(() => new EmbeddingEngine(onnxModel).Embed(Texts, new EmbeddingOptions { Attention = AttentionMode.Bidirectional }));
        Assert.Contains("--attention bidirectional", e.Message);
    }

    [Fact]
    public void Int8GraphQuantizesEveryLinearLayerAndStaysClose()
    {
        using var torchModel = UllmeModel.Load("default");
        string fp32 = Path.Combine(_tmp.Path, "fp32"), int8 = Path.Combine(_tmp.Path, "int8");
        var r32 = UllmeOnnx.Export(torchModel, fp32);
        var r8 = UllmeOnnx.Export(torchModel, int8, new OnnxExportOptions { Quantize = OnnxQuantization.Int8 });
        Assert.Equal(OnnxQuantization.Int8, r8.Quantize);
        output.WriteLine($"weights: fp32 {r32.WeightBytes:N0} B, int8 {r8.WeightBytes:N0} B");
        // The word embeddings (30522 x 384 floats) stay float32; every linear layer shrinks to a quarter.
        Assert.True(r8.WeightBytes < r32.WeightBytes * 0.75, $"{r8.WeightBytes} vs {r32.WeightBytes}");
        Assert.Equal(36, CountOps(Path.Combine(int8, "model.onnx"), "DynamicQuantizeMatMul"));
        Assert.Equal(0, CountOps(Path.Combine(int8, "model.onnx"), "MatMulInteger") + CountOps(Path.Combine(fp32, "model.onnx"), "DynamicQuantizeMatMul"));
        using var q = UllmeModel.Load(int8);
        var expected = new EmbeddingEngine(torchModel).Embed(Texts);
        var actual = new EmbeddingEngine(q).Embed(Texts);
        double cos = MinCosine(expected, actual);
        for (int i = 0; i < Texts.Length; i++) output.WriteLine($"row {i}: cosine {MinCosine([expected[i]], [actual[i]]):F5}");
        output.WriteLine($"int8 vs float32: min cosine {cos:F5}, max abs diff {MaxDiff(expected, actual):E2}");
        // Dynamic int8 (activations quantized per tensor at run time) measured 0.993 on sentences, 0.980 on "hi";
        // a wrong scale or layout gives cosines far below 0.9.
        double mean = Enumerable.Range(0, Texts.Length).Average(i => MinCosine([expected[i]], [actual[i]]));
        Assert.True(cos > 0.97 && mean > 0.985, $"int8 embeddings drift from float32: min cosine {cos}, mean {mean}");
        Assert.True(MaxDiff(expected, actual) > 1e-6, "int8 embeddings are bit-identical to float32: nothing was quantized");
    }

    [AssetFact]
    public void Int4GraphUsesMatMulNBitsAndStaysClose()
    {
        using var torchModel = UllmeModel.Load(Assets.Stories260K);
        string dir = Path.Combine(_tmp.Path, "int4");
        var r = UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { Quantize = OnnxQuantization.Int4, Int4BlockSize = 16 });
        Assert.Equal(r.LinearLayers, CountOps(Path.Combine(dir, "model.onnx"), "MatMulNBits"));
        using var q = UllmeModel.Load(dir);
        var expected = new EmbeddingEngine(torchModel).Embed(Texts);
        var actual = new EmbeddingEngine(q).Embed(Texts);
        double cos = MinCosine(expected, actual);
        output.WriteLine($"int4 vs float32 (stories260K): min cosine {cos:F5}");
        Assert.True(cos > 0.95, $"int4 embeddings drift from float32: cosine {cos}");
        Assert.True(MaxDiff(expected, actual) > 1e-6);
    }

    [Fact]
    public void LargeWeightsGoToExternalData()
    {
        using var torchModel = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "external");
        var r = UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { ExternalDataThreshold = 0 });
        Assert.NotNull(r.ExternalDataFile);
        Assert.True(new FileInfo(Path.Combine(dir, "model.onnx.data")).Length > 80_000_000);
        Assert.True(new FileInfo(Path.Combine(dir, "model.onnx")).Length < 1_000_000);
        using var onnxModel = UllmeModel.Load(dir);
        double diff = MaxDiff(new EmbeddingEngine(torchModel).Embed(Texts), new EmbeddingEngine(onnxModel).Embed(Texts));
        Assert.True(diff < Tolerance, $"{diff}");
    }

    [Fact]
    public void InvalidExportsAreRefusedAndLeaveNothing()
    {
        using var torchModel = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "refused");
        var e = Assert.Throws<UllmeException>(() => UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { Attention = AttentionMode.Causal }));
        Assert.Contains("Attention", e.Message);
        Assert.Contains("17 and 21", Assert.Throws<UllmeException>(() => UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { Opset = 13 })).Message);
        Assert.Contains("Int4BlockSize", Assert.Throws<UllmeException>(() => UllmeOnnx.Export(torchModel, dir, new OnnxExportOptions { Int4BlockSize = 48 })).Message);
        Assert.False(Directory.Exists(dir));
        Assert.Empty(Directory.GetFileSystemEntries(_tmp.Path));
        // Exporting an ONNX-backed model is refused (there are no TorchSharp weights to export).
        using var onnxModel = UllmeModel.Load("default", new ModelLoadOptions { Backend = InferenceBackend.OnnxRuntime });
        Assert.Contains("Torch backend", Assert.Throws<UllmeException>(() => UllmeOnnx.Export(onnxModel, dir)).Message);
        Assert.Contains("float32", Assert.Throws<UllmeException>(() =>
            UllmeModel.Load("default", new ModelLoadOptions { Backend = InferenceBackend.OnnxRuntime, DType = ModelDType.BFloat16 })).Message);
    }

    [Fact]
    public void AForeignOnnxFileIsRefusedWithItsInterface()
    {
        using var torchModel = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "foreign");
        UllmeOnnx.Export(torchModel, dir);
        // The stock all-MiniLM ONNX (outputs last_hidden_state) in place of ours.
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), DefaultModel.ReadResource(DefaultModel.OnnxResourceName));
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(dir));
        Assert.Contains("sentence_embedding", e.Message);
        Assert.Contains("export-onnx", e.Message);
    }

    [Fact]
    public void ADamagedModelOnnxIsOneErrorNamingTheFile()
    {
        using var torchModel = UllmeModel.Load("default");
        string dir = Path.Combine(_tmp.Path, "damaged");
        UllmeOnnx.Export(torchModel, dir);
        string file = Path.Combine(dir, "model.onnx");
        byte[] bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes.AsSpan(0, bytes.Length / 3).ToArray());      // truncated mid-weights
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(dir));
        Assert.Contains(file, e.Message);
        File.WriteAllBytes(file, "not a protobuf at all"u8.ToArray());
        e = Assert.Throws<UllmeException>(() => UllmeModel.Load(dir));
        Assert.Contains(file, e.Message);
    }

    internal static int CountOps(string modelFile, string op)
    {
        var model = Ullme.MLNet.Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelFile));
        return model.Graph.Node.Count(n => n.OpType == op);
    }
}

using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>`ullme export-onnx` and `--backend onnx` as a user types them.</summary>
[Collection(TorchCollection.Name)]
public sealed class OnnxCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-onnx-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static readonly string[] Lines = ["A man is playing a guitar.", "Two dogs run in the snow", "hi"];

    [Fact]
    public void ExportThenEmbedAndRerankOnOnnxRuntimeMatchTorch()
    {
        File.WriteAllLines(PathOf("t.txt"), Lines);
        var (code, err) = CliTests.Run("export-onnx", "--model", "default", "--output", PathOf("m"), "--opset", "18");
        Assert.True(code == 0, err);
        Assert.Contains("36 linear layers", err);
        Assert.True(File.Exists(PathOf("m/model.onnx")));

        Assert.Equal(0, CliTests.Run("embed", "--model", "default", "--input", PathOf("t.txt"), "--output", PathOf("torch.npy")).Code);
        (code, err) = CliTests.Run("embed", "--model", PathOf("m"), "--input", PathOf("t.txt"), "--output", PathOf("folder.npy"));
        Assert.True(code == 0, err);
        (code, err) = CliTests.Run("embed", "--model", "default", "--backend", "onnx", "--input", PathOf("t.txt"), "--output", PathOf("memory.npy"));
        Assert.True(code == 0, err);
        var torch = CliTests.ReadNpy(PathOf("torch.npy"));
        foreach (var other in new[] { CliTests.ReadNpy(PathOf("folder.npy")), CliTests.ReadNpy(PathOf("memory.npy")) })
            for (int i = 0; i < Lines.Length; i++)
                for (int j = 0; j < 384; j++)
                    Assert.True(Math.Abs(torch[i, j] - other[i, j]) < 1e-4, $"row {i} dim {j}: {torch[i, j]} vs {other[i, j]}");

        File.WriteAllText(PathOf("q.jsonl"), JsonSerializer.Serialize(new { query = "a guitar player", candidates = Lines }) + "\n");
        (code, err) = CliTests.Run("rerank", "--model", PathOf("m"), "--input", PathOf("q.jsonl"), "--output", PathOf("r.jsonl"), "--by", "representation");
        Assert.True(code == 0, err);
        var ranking = JsonDocument.Parse(File.ReadAllLines(PathOf("r.jsonl"))[0]).RootElement.GetProperty("ranking");
        Assert.Equal(0, ranking[0].GetProperty("index").GetInt32());
        // Generation scores need a language-model head: refused, nothing written.
        (code, err) = CliTests.Run("rerank", "--model", PathOf("m"), "--input", PathOf("q.jsonl"), "--output", PathOf("g.jsonl"), "--by", "generation");
        Assert.NotEqual(0, code);
        Assert.False(File.Exists(PathOf("g.jsonl")));
    }

    [Fact]
    public void BadFlagsAreOneLineErrorsNamingTheFlag()
    {
        var (code, err) = CliTests.Run("export-onnx", "--model", "default", "--output", PathOf("x"), "--quantize", "int3");
        Assert.NotEqual(0, code);
        Assert.Contains("--quantize", err);
        (code, err) = CliTests.Run("export-onnx", "--model", "default", "--output", PathOf("x"), "--opset", "12");
        Assert.NotEqual(0, code);
        Assert.Contains("17 and 21", err);
        File.WriteAllLines(PathOf("t.txt"), Lines);
        (code, err) = CliTests.Run("embed", "--model", "default", "--backend", "tensorrt", "--input", PathOf("t.txt"), "--output", PathOf("o.npy"));
        Assert.NotEqual(0, code);
        Assert.Contains("--backend", err);
        Assert.False(Directory.Exists(PathOf("x")));
        Assert.False(File.Exists(PathOf("o.npy")));
    }
}

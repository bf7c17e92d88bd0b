using TorchSharp;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>
/// Helpers shared by the decoder tests: the committed fixtures (tests/Ullme.MLNet.Tests/Fixtures/decoders, written by
/// tests/reference/decoder_reference.py), a minimal safetensors reader for them, and small tensor utilities.
/// </summary>
internal static class DecoderTestSupport
{
    /// <summary>The architectures with a reference fixture.</summary>
    public static readonly string[] FixtureNames = ["llama", "llama_linear", "mistral", "qwen2", "phi3", "gemma2"];

    public static string FixtureFolder(string name) => Path.Combine(RepositoryRoot(), "tests", "Ullme.MLNet.Tests", "Fixtures", "decoders", name);

    public static ModelConfig FixtureConfig(string name) => ModelConfig.Load(FixtureFolder(name));

    /// <summary>A fixture's model with the reference weights loaded (through the library's checkpoint loader).</summary>
    public static DecoderModel LoadFixtureModel(string name, ScalarType dtype = ScalarType.Float32) =>
        LoadModel(FixtureConfig(name), FixtureFolder(name), dtype);

    /// <summary>The stories260K model from the shared assets.</summary>
    public static DecoderModel LoadStories260K() =>
        LoadModel(ModelConfig.Load(Infrastructure.Assets.Stories260K), Infrastructure.Assets.Stories260K, ScalarType.Float32);

    /// <summary>A decoder for <paramref name="config"/> with the weights of <paramref name="weightsFolder"/>.</summary>
    public static DecoderModel LoadModel(ModelConfig config, string weightsFolder, ScalarType dtype = ScalarType.Float32)
    {
        var model = DecoderModel.Create(config, dtype, initializeWeights: false);
        CheckpointLoader.Load(model, weightsFolder, dtype, CPU);
        model.eval();
        return model;
    }

    /// <summary>The expected outputs a fixture's reference wrote (caller disposes).</summary>
    public static Dictionary<string, Tensor> FixtureExpected(string name) =>
        SafeTensors.LoadAll(Path.Combine(FixtureFolder(name), "expected.safetensors"));

    /// <summary>The tensor names stored in a fixture's checkpoint.</summary>
    public static string[] FixtureCheckpointKeys(string name)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(FixtureFolder(name), CheckpointLoader.SingleFileName));
        return file.Tensors.Keys.ToArray();
    }

    public static float[] ToFloats(Tensor t)
    {
        using var f = t.detach().to(ScalarType.Float32).cpu().contiguous();
        return f.data<float>().ToArray();
    }

    /// <summary>Mean of states [B, T, H] over positions where mask [B, T] is 1 → [B, H].</summary>
    public static Tensor MeanPool(Tensor states, Tensor mask)
    {
        using var scope = NewDisposeScope();
        Tensor m = mask.to(ScalarType.Float32).unsqueeze(-1);
        Tensor pooled = (states.to(ScalarType.Float32) * m).sum(1) / m.sum(1);
        return pooled.MoveToOuterDisposeScope();
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();
    }

    /// <summary>A [B, T] batch of given rows, each padded with <paramref name="pad"/> on the left or right.</summary>
    public static (Tensor Ids, Tensor Mask) Pad(IReadOnlyList<long[]> rows, bool[] left, long pad = 0)
    {
        int t = rows.Max(r => r.Length);
        var ids = new long[rows.Count * t];
        var mask = new long[rows.Count * t];
        for (int r = 0; r < rows.Count; r++)
        {
            int start = left[r] ? t - rows[r].Length : 0;
            for (int i = 0; i < t; i++) ids[r * t + i] = pad;
            for (int i = 0; i < rows[r].Length; i++)
            {
                ids[r * t + start + i] = rows[r][i];
                mask[r * t + start + i] = 1;
            }
        }
        return (tensor(ids, [rows.Count, t]), tensor(mask, [rows.Count, t]));
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Ullme.MLNet.sln) not found above " + AppContext.BaseDirectory);
    }
}

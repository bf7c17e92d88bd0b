using System.Text.Json;
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

    /// <summary>A fixture's model in float32 with the reference weights loaded.</summary>
    public static DecoderModel LoadFixtureModel(string name, ScalarType dtype = ScalarType.Float32)
    {
        var model = DecoderModel.Create(FixtureConfig(name), initializeWeights: false);
        LoadWeights(model, Path.Combine(FixtureFolder(name), "model.safetensors"));
        if (dtype != ScalarType.Float32) model.to(dtype);
        model.eval();
        return model;
    }

    /// <summary>The stories260K model from the shared assets.</summary>
    public static DecoderModel LoadStories260K()
    {
        var model = DecoderModel.Create(ModelConfig.Load(Infrastructure.Assets.Stories260K), initializeWeights: false);
        LoadWeights(model, Path.Combine(Infrastructure.Assets.Stories260K, "model.safetensors"));
        model.eval();
        return model;
    }

    /// <summary>
    /// Copies every tensor of a safetensors file into the parameter of the same name; every parameter must be
    /// covered and every other key must be ignorable by the model.
    /// </summary>
    public static void LoadWeights(EmbeddingBackbone model, string path)
    {
        var tensors = ReadSafetensors(path);
        try
        {
            var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            using var noGrad = no_grad();
            foreach (var (key, value) in tensors)
            {
                string name = model.MapCheckpointKey(key);
                if (parameters.Remove(name, out var p))
                {
                    Assert.Equal(p.shape, value.shape);
                    p.copy_(value);
                }
                else
                {
                    Assert.True(model.IsIgnorableCheckpointKey(key), $"checkpoint key '{key}' has no parameter and is not ignorable");
                }
            }
            Assert.True(parameters.Count == 0, "parameters missing from the checkpoint: " + string.Join(", ", parameters.Keys));
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Reads F32 / BF16 / I64 tensors of a safetensors file (u64 header length, JSON header, raw data).</summary>
    public static Dictionary<string, Tensor> ReadSafetensors(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength));
        long dataStart = 8 + headerLength;
        var result = new Dictionary<string, Tensor>();
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__") continue;
            string dtype = entry.Value.GetProperty("dtype").GetString()!;
            long[] shape = entry.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var offsets = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var span = bytes.AsSpan((int)(dataStart + offsets[0]), (int)(offsets[1] - offsets[0]));
            Tensor t = dtype switch
            {
                "F32" => tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(span).ToArray(), shape),
                "I64" => tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(span).ToArray(), shape),
                "BF16" => tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(span).ToArray()
                    .Select(bits => BitConverter.Int32BitsToSingle(bits << 16)).ToArray(), shape).to(ScalarType.BFloat16),
                _ => throw new NotSupportedException($"{path}: tensor '{entry.Name}' has dtype {dtype}"),
            };
            result[entry.Name] = t;
        }
        return result;
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

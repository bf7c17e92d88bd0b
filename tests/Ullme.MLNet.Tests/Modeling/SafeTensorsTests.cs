using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

[Collection(TorchCollection.Name)]
public sealed class SafeTensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-st-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // ---------- helpers ----------

    /// <summary>A tensor of <paramref name="type"/> holding exactly <paramref name="raw"/> (little-endian element bytes).</summary>
    internal static Tensor FromBytes(byte[] raw, ScalarType type, params long[] shape)
    {
        var t = empty(shape, dtype: type);
        if (raw.Length > 0) t.bytes = raw;
        return t;
    }

    internal static byte[] BytesOf(Tensor t) => t.numel() == 0 ? [] : t.contiguous().bytes.ToArray();

    /// <summary>Writes a safetensors file by hand: header JSON (padded with spaces unless a length is forced) + data.</summary>
    internal static string WriteRaw(string path, string headerJson, byte[] data, ulong? declaredLength = null)
    {
        var json = Encoding.UTF8.GetBytes(headerJson);
        int padded = (json.Length + 7) / 8 * 8;
        using var f = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, declaredLength ?? (ulong)padded);
        f.Write(len);
        f.Write(json);
        for (int i = json.Length; i < padded; i++) f.WriteByte((byte)' ');
        f.Write(data);
        return path;
    }

    /// <summary>Element bytes that include the awkward values of each type (NaN, infinities, -0, subnormals, extremes).</summary>
    private static Tensor Sample(string dtype)
    {
        var rng = new Random(1234);
        switch (dtype)
        {
            case "F32":
            {
                float[] v = [0f, -0f, 1f, -1.5f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, float.MaxValue, 3.1415927f, 1e-40f, -7.25e12f];
                return tensor(v, [3, 4]);
            }
            case "F64":
            {
                double[] v = [0d, -0d, double.NaN, double.NegativeInfinity, double.Epsilon, double.MaxValue, Math.PI, -1e-310];
                return tensor(v, [2, 2, 2]);
            }
            case "F16":
            {
                ushort[] bits = [0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x3555, 0x1234];
                return FromBytes(bits.SelectMany(BitConverter.GetBytes).ToArray(), ScalarType.Float16, 2, 6);
            }
            case "BF16":
            {
                ushort[] bits = [0x0000, 0x8000, 0x3F80, 0x4049, 0x7F7F, 0x0001, 0x007F, 0x7F80, 0xFF80, 0x7FC0, 0xBEEF, 0x1234];
                return FromBytes(bits.SelectMany(BitConverter.GetBytes).ToArray(), ScalarType.BFloat16, 12);
            }
            case "I64": return tensor(new long[] { long.MinValue, -1, 0, 1, long.MaxValue, 1L << 40 }, [6]);
            case "I32": return tensor(new int[] { int.MinValue, -1, 0, 1, int.MaxValue, 123456 }, [3, 2]);
            case "I16": return tensor(new short[] { short.MinValue, -1, 0, short.MaxValue }, [4]);
            case "I8": return tensor(new sbyte[] { sbyte.MinValue, -1, 0, 1, sbyte.MaxValue }, [5]);
            case "U8":
            {
                var b = new byte[40];
                rng.NextBytes(b);
                b[0] = 0; b[1] = 255;
                return tensor(b, [5, 8]);
            }
            case "BOOL": return tensor(new bool[] { true, false, false, true, true }, [5]);
            default: throw new ArgumentException(dtype);
        }
    }

    public static TheoryData<string> AllDTypes => ["F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"];

    // ---------- round trip and format ----------

    [Theory]
    [MemberData(nameof(AllDTypes))]
    public void SaveThenLoadAll_IsBitExactForEveryDType(string dtype)
    {
        using var scope = NewDisposeScope();
        var value = Sample(dtype);
        var scalar = Sample(dtype).view(-1)[0];           // shape []
        var emptyOne = empty([0, 3], dtype: value.dtype);  // 0 elements
        string path = Path.Combine(_dir, "rt.safetensors");
        SafeTensors.Save(path, [new("b.value", value), new("a.scalar", scalar), new("c.empty", emptyOne)]);

        var loaded = SafeTensors.LoadAll(path);
        Assert.Equal(["a.scalar", "b.value", "c.empty"], loaded.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, original) in new[] { ("b.value", value), ("a.scalar", scalar), ("c.empty", emptyOne) })
        {
            var back = loaded[name];
            Assert.Equal(original.dtype, back.dtype);
            Assert.Equal(original.shape, back.shape);
            Assert.Equal(DeviceType.CPU, back.device_type);
            Assert.Equal(BytesOf(original), BytesOf(back));
        }

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(dtype, file.Tensors["b.value"].DType);
    }

    [Fact]
    public void Save_WritesSortedNamesPaddedHeaderAndMetadata()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_dir, "fmt.safetensors");
        SafeTensors.Save(path,
            [new("z", ones(3)), new("a", zeros([2, 2], dtype: ScalarType.BFloat16)), new("m", tensor(new long[] { 7 }))],
            new Dictionary<string, string> { ["producer"] = "ullme", ["note"] = "é \"quoted\"" });

        byte[] bytes = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, n % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.StartsWith("{", header);
        Assert.EndsWith("}", header.TrimEnd(' ')); // padding is spaces only
        using var doc = JsonDocument.Parse(header.TrimEnd(' '));
        var names = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(["__metadata__", "a", "m", "z"], names);
        // Data follows back to back in name order: a (8 bytes) then m (8) then z (12).
        Assert.Equal("[0,8]", doc.RootElement.GetProperty("a").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[8,16]", doc.RootElement.GetProperty("m").GetProperty("data_offsets").GetRawText());
        Assert.Equal("[16,28]", doc.RootElement.GetProperty("z").GetProperty("data_offsets").GetRawText());
        Assert.Equal(8 + (long)n + 28, bytes.LongLength);

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("ullme", file.Metadata["producer"]);
        Assert.Equal("é \"quoted\"", file.Metadata["note"]);
        Assert.Equal(new long[] { 2, 2 }, file.Tensors["a"].Shape);
        Assert.Equal("I64", file.Tensors["m"].DType);
    }

    [Fact]
    public void Save_ReplacesAtomicallyAndLeavesNoTempFiles_FailedSaveKeepsOldFile()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(_dir, "atomic.safetensors");
        SafeTensors.Save(path, [new("w", ones(2))]);
        SafeTensors.Save(path, [new("w", full(2, 5f))]);
        Assert.Equal([Path.GetFileName(path)], Directory.GetFiles(_dir).Select(Path.GetFileName));
        Assert.Equal(5f, SafeTensors.LoadAll(path)["w"][1].item<float>());

        byte[] before = File.ReadAllBytes(path);
        var e = Assert.Throws<UllmeException>(() => SafeTensors.Save(path, [new("w", ones(2)), new("c", ones(2, dtype: ScalarType.ComplexFloat32))]));
        Assert.Contains("'c'", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(_dir));

        var dup = Assert.Throws<UllmeException>(() => SafeTensors.Save(path, [new("w", ones(2)), new("w", ones(2))]));
        Assert.Contains("'w'", dup.Message);
    }

    [Fact]
    public void Save_WritesNonContiguousTensorsInLogicalOrder()
    {
        using var scope = NewDisposeScope();
        var m = arange(6, dtype: ScalarType.Float32).view(2, 3).t(); // [3, 2], strided
        string path = Path.Combine(_dir, "t.safetensors");
        SafeTensors.Save(path, [new("m", m)]);
        var back = SafeTensors.LoadAll(path)["m"];
        Assert.Equal(new long[] { 3, 2 }, back.shape);
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, back.data<float>().ToArray());
    }

    [Fact]
    public void Read_LargeTensorSpanningSeveralChunks_IsExact()
    {
        using var scope = NewDisposeScope();
        // 10,007 floats read 4 KiB (1,024 floats) at a time: 10 whole chunks and a ragged tail.
        var big = randn(10_007);
        string path = Path.Combine(_dir, "big.safetensors");
        SafeTensors.Save(path, [new("before", ones(3)), new("big", big), new("c.after", ones(5))]);
        using var file = SafeTensorsFile.Open(path);
        var back = file.Read("big", dtype: null, chunkBytes: 4096);
        Assert.True(back.IdenticalTo(big));
    }

    // ---------- dtype conversion ----------

    [Fact]
    public void HandWrittenHalfAndBFloat16_ReadAsFloat32_GiveTheExactValues()
    {
        // Bits with values known from the IEEE/bfloat16 definitions (independent of our writer).
        ushort[] f16 = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0x7C00];
        float[] f16Values = [1f, -2f, 65504f, 5.9604644775390625e-08f, 0.333251953125f, float.PositiveInfinity];
        ushort[] bf16 = [0x3F80, 0x4049, 0xC2F7, 0x0001, 0x7F7F, 0xFF80];
        float[] bf16Values = [1f, 3.140625f, -123.5f, BitConverter.Int32BitsToSingle(1 << 16), BitConverter.Int32BitsToSingle(0x7F7F0000), float.NegativeInfinity];
        var data = f16.Concat(bf16).SelectMany(BitConverter.GetBytes).ToArray();
        string path = WriteRaw(Path.Combine(_dir, "half.safetensors"),
            """{"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[12,24]}}""", data);

        using var file = SafeTensorsFile.Open(path);
        using var h = file.Read("h", ScalarType.Float32);
        using var b = file.Read("b", ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, h.dtype);
        Assert.Equal(f16Values, h.data<float>().ToArray());
        Assert.Equal(new long[] { 2, 3 }, b.shape);
        Assert.Equal(bf16Values, b.data<float>().ToArray());
        using var stored = file.Read("b");
        Assert.Equal(ScalarType.BFloat16, stored.dtype);
    }

    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void HalfFileLoadedAsFloat32_EqualsTorchConversion(ScalarType stored)
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(7);
        var half = (randn(64, 33) * 50).to(stored);
        string path = Path.Combine(_dir, "conv.safetensors");
        SafeTensors.Save(path, [new("w", half), new("ids", tensor(new long[] { 1, 2, 3 }))]);

        var loaded = SafeTensors.LoadAll(path, ScalarType.Float32);
        Assert.Equal(ScalarType.Float32, loaded["w"].dtype);
        Assert.Equal(BytesOf(half.to(ScalarType.Float32)), BytesOf(loaded["w"]));
        Assert.Equal(ScalarType.Int64, loaded["ids"].dtype); // integer tensors keep their type
    }

    // ---------- the real checkpoint ----------

    [AssetFact]
    public void Stories260K_LoadAll_GivesEveryTensorWithReadmeShapes()
    {
        using var scope = NewDisposeScope();
        string path = Path.Combine(Assets.Stories260K, "model.safetensors");
        var all = SafeTensors.LoadAll(path);

        var expected = new Dictionary<string, long[]>
        {
            ["model.embed_tokens.weight"] = [512, 64],
            ["model.norm.weight"] = [64],
        };
        for (int i = 0; i < 5; i++)
        {
            string p = $"model.layers.{i}.";
            expected[p + "input_layernorm.weight"] = [64];
            expected[p + "post_attention_layernorm.weight"] = [64];
            expected[p + "self_attn.q_proj.weight"] = [64, 64];
            expected[p + "self_attn.k_proj.weight"] = [32, 64];
            expected[p + "self_attn.v_proj.weight"] = [32, 64];
            expected[p + "self_attn.o_proj.weight"] = [64, 64];
            expected[p + "mlp.gate_proj.weight"] = [172, 64];
            expected[p + "mlp.up_proj.weight"] = [172, 64];
            expected[p + "mlp.down_proj.weight"] = [64, 172];
        }
        // README's "48" counts the header entries; "__metadata__" is one of them, so the file holds 47 tensors.
        Assert.Equal(47, all.Count);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), all.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, shape) in expected)
        {
            Assert.Equal(shape, all[name].shape);
            Assert.Equal(ScalarType.Float32, all[name].dtype);
        }
        Assert.Equal(260_032L, all.Values.Sum(t => t.numel()));
        // Real weights, not zeros: RMSNorm gains of a trained model are well away from 0.
        Assert.True(all["model.norm.weight"].abs().mean().item<float>() > 0.1f);
        Assert.True(all.Values.All(t => !t.isnan().any().item<bool>()));
    }

    // ---------- malformed files ----------

    public static TheoryData<string> MalformedCases =>
    [
        "short", "length-beyond-file", "length-absurd", "empty-header", "not-json", "not-object", "entry-not-object",
        "no-dtype", "no-shape", "no-offsets", "unknown-dtype", "unsupported-dtype", "begin-after-end", "beyond-data",
        "size-mismatch", "overlap", "duplicate", "negative-dim", "offsets-not-pair", "metadata-not-object",
        "too-deep", "negative-offset", "shape-overflow",
    ];

    /// <summary>Builds one malformed file; returns its path and the tensor name the error must mention (or null).</summary>
    private (string Path, string? Tensor, string Phrase) Malformed(string kind)
    {
        string path = Path.Combine(_dir, $"bad-{kind}.safetensors");
        byte[] d16 = new byte[16];
        const string ok = "\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}";
        switch (kind)
        {
            case "short": File.WriteAllBytes(path, [1, 2, 3, 4, 5]); return (path, null, "shorter than");
            case "length-beyond-file": return (WriteRaw(path, "{" + ok + "}", d16, declaredLength: 4096), null, "beyond the end");
            case "length-absurd": return (WriteRaw(path, "{" + ok + "}", d16, declaredLength: 1UL << 40), null, "100 MB");
            case "empty-header": return (WriteRaw(path, "", [], declaredLength: 0), null, "empty");
            case "not-json": return (WriteRaw(path, "{\"w\": {dtype", d16), null, "not valid JSON");
            case "not-object": return (WriteRaw(path, "[1, 2]", d16), null, "not an object");
            case "entry-not-object": return (WriteRaw(path, """{"w": 5}""", d16), "w", "not an object");
            case "no-dtype": return (WriteRaw(path, """{"w":{"shape":[4],"data_offsets":[0,16]}}""", d16), "w", "dtype");
            case "no-shape": return (WriteRaw(path, """{"w":{"dtype":"F32","data_offsets":[0,16]}}""", d16), "w", "shape");
            case "no-offsets": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[4]}}""", d16), "w", "data_offsets");
            case "unknown-dtype": return (WriteRaw(path, """{"w":{"dtype":"F17","shape":[4],"data_offsets":[0,16]}}""", d16), "w", "\"F17\", which is unknown");
            case "unsupported-dtype": return (WriteRaw(path, """{"w":{"dtype":"U32","shape":[4],"data_offsets":[0,16]}}""", d16), "w", "\"U32\", which is not supported");
            case "begin-after-end": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", d16), "w", "begin > end");
            case "beyond-data": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}""", d16), "w", "only 16 bytes");
            case "size-mismatch": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}""", d16), "w", "F32 with shape [2, 3], which needs 24 bytes, but its data_offsets [0, 16] span 16 bytes");
            case "overlap": return (WriteRaw(path, """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", d16), "b", "overlap");
            case "duplicate": return (WriteRaw(path, "{" + ok + "," + ok + "}", d16), "w", "twice");
            case "negative-dim": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}""", d16), "w", "non-negative");
            case "offsets-not-pair": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8,16]}}""", d16), "w", "data_offsets");
            case "too-deep": return (WriteRaw(path, "{\"w\":" + new string('[', 100) + new string(']', 100) + "}", d16), null, "not valid JSON");
            case "negative-offset": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}}""", d16), "w", "data offset -16 that is not a non-negative integer");
            case "shape-overflow": return (WriteRaw(path, """{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}""", d16), "w", "impossibly large shape");
            case "metadata-not-object": return (WriteRaw(path, "{\"__metadata__\": [1]," + ok + "}", d16), null, "__metadata__");
            default: throw new ArgumentException(kind);
        }
    }

    [Theory]
    [MemberData(nameof(MalformedCases))]
    public void MalformedFile_ThrowsUllmeExceptionNamingFileAndTensor(string kind)
    {
        var (path, tensorName, phrase) = Malformed(kind);
        var e = Assert.Throws<UllmeException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, e.Message);
        if (tensorName is not null) Assert.Contains($"'{tensorName}'", e.Message);
        Assert.Contains(phrase, e.Message);
        // The loaders that build on the parser fail the same way.
        Assert.Throws<UllmeException>(() => SafeTensors.LoadAll(path));
    }

    [Fact]
    public void EmptyTensorsAndTrailingHeaderSpaces_AreAccepted()
    {
        string path = WriteRaw(Path.Combine(_dir, "empty.safetensors"),
            """{"__metadata__":{"format":"pt"},"e":{"dtype":"BF16","shape":[0,4],"data_offsets":[0,0]},"f":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}""",
            BitConverter.GetBytes(-17));
        using var file = SafeTensorsFile.Open(path);
        using var e = file.Read("e", ScalarType.Float32);
        Assert.Equal(new long[] { 0, 4 }, e.shape);
        Assert.Equal(ScalarType.Float32, e.dtype);
        using var f = file.Read("f");
        Assert.Empty(f.shape);
        Assert.Equal(-17, f.item<int>());
        var missing = Assert.Throws<UllmeException>(() => file.Read("nope"));
        Assert.Contains("'nope'", missing.Message);
        Assert.Contains(path, missing.Message);
    }

    [Fact]
    public void MissingFile_ThrowsUllmeException()
    {
        string path = Path.Combine(_dir, "absent.safetensors");
        var e = Assert.Throws<UllmeException>(() => SafeTensorsFile.Open(path));
        Assert.Contains(path, e.Message);
    }
}

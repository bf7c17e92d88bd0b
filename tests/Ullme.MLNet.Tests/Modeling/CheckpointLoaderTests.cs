using System.Text.Json;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

[Collection(TorchCollection.Name)]
public sealed class CheckpointLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// A minimal backbone: embed_tokens [10, 4] → proj (Linear 4→3 with bias) → head (Linear 3→2, no bias), plus a
    /// persistent int64 buffer <c>position_ids</c> [5]. With <c>tied</c>, <c>tied_head.weight</c> is the same
    /// Parameter as <c>embed_tokens.weight</c> (like a tied LM head).
    /// </summary>
    private sealed class TinyBackbone : EmbeddingBackbone
    {
        public readonly Embedding embed_tokens;
        public readonly Linear proj;
        public readonly Linear head;
        public readonly Linear? tied_head;
        private readonly Func<string, bool> _ignorable;
        private readonly Func<string, string> _map;

        public TinyBackbone(bool tied = false, Func<string, bool>? ignorable = null, Func<string, string>? map = null) : base("tiny")
        {
            embed_tokens = nn.Embedding(10, 4);
            proj = nn.Linear(4, 3);
            head = nn.Linear(3, 2, hasBias: false);
            if (tied)
            {
                tied_head = nn.Linear(4, 10, hasBias: false);
                tied_head.weight = embed_tokens.weight!;
            }
            _ignorable = ignorable ?? (_ => false);
            _map = map ?? (k => k);
            RegisterComponents();
            register_buffer("position_ids", arange(5L, dtype: ScalarType.Int64));
        }

        public override int HiddenSize => 2;

        public override Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null) =>
            head.forward(proj.forward(embed_tokens.forward(inputIds)));

        public override bool IsIgnorableCheckpointKey(string key) => _ignorable(key);

        public override string MapCheckpointKey(string key) => _map(key);
    }

    /// <summary>Distinct, recognisable float32 values for a checkpoint tensor of the given shape.</summary>
    private static Tensor Values(long[] shape, float offset) =>
        (arange(shape.Aggregate(1L, (a, b) => a * b), dtype: ScalarType.Float32) * 0.125f + offset).reshape(shape);

    /// <summary>A full, correct checkpoint for <see cref="TinyBackbone"/> (float32).</summary>
    private static List<KeyValuePair<string, Tensor>> GoodCheckpoint() =>
    [
        new("embed_tokens.weight", Values([10, 4], 100f)),
        new("proj.weight", Values([3, 4], 1f)),
        new("proj.bias", Values([3], -3f)),
        new("head.weight", Values([2, 3], 7f)),
        new("position_ids", tensor(new long[] { 4, 3, 2, 1, 0 })),
    ];

    private string SaveFolder(string name, IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        string folder = Path.Combine(_dir, name);
        Directory.CreateDirectory(folder);
        SafeTensors.Save(Path.Combine(folder, "model.safetensors"), tensors.ToList());
        return folder;
    }

    private static Tensor Buffer(nn.Module m, string name) => m.named_buffers().Single(b => b.name == name).buffer;

    [Fact]
    public void Load_CopiesEveryTensorIntoTheExistingParameters()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint();
        string folder = SaveFolder("good", checkpoint);
        using var model = new TinyBackbone();
        var weightBefore = model.proj.weight!;
        var parametersBefore = model.parameters().ToList();

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);

        Assert.Same(weightBefore, model.proj.weight);                  // same Parameter object (optimizers stay valid)
        Assert.Equal(parametersBefore, model.parameters().ToList());   // reference equality of every parameter
        foreach (var (name, expected) in checkpoint)
        {
            var actual = model.state_dict()[name];
            Assert.True(actual.IdenticalTo(expected), $"{name} differs after load");
        }
        Assert.Equal(ScalarType.Int64, Buffer(model, "position_ids").dtype);
        Assert.True(model.proj.weight!.requires_grad);
    }

    [Fact]
    public void Load_AsBFloat16_ConvertsFloatsAndKeepsIntegerBuffers()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint();
        string folder = SaveFolder("bf16", checkpoint);
        using var model = new TinyBackbone();

        CheckpointLoader.Load(model, folder, ScalarType.BFloat16, CPU);

        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        var positions = Buffer(model, "position_ids");
        Assert.Equal(ScalarType.Int64, positions.dtype);
        Assert.Equal(new long[] { 4, 3, 2, 1, 0 }, positions.data<long>().ToArray());
        var expected = checkpoint.Single(kv => kv.Key == "proj.weight").Value.to(ScalarType.BFloat16);
        Assert.True(model.proj.weight!.IdenticalTo(expected));
    }

    [Fact]
    public void Load_BFloat16File_IntoFloat32Model_IsExact()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint().Select(kv => kv.Value.is_floating_point()
            ? new KeyValuePair<string, Tensor>(kv.Key, (kv.Value * 1.37f).to(ScalarType.BFloat16)) : kv).ToList();
        string folder = SaveFolder("bf16file", checkpoint);
        using var model = new TinyBackbone();

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);

        var stored = checkpoint.Single(kv => kv.Key == "head.weight").Value;
        Assert.Equal(ScalarType.Float32, model.head.weight!.dtype);
        Assert.True(model.head.weight!.IdenticalTo(stored.to(ScalarType.Float32)));
    }

    [Fact]
    public void Load_MissingTensor_NamesTensorAndFile()
    {
        using var scope = NewDisposeScope();
        string folder = SaveFolder("missing", GoodCheckpoint().Where(kv => kv.Key != "proj.bias"));
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("tensor 'proj.bias' is missing from", e.Message);
        Assert.Contains(Path.Combine(folder, "model.safetensors"), e.Message);
    }

    [Fact]
    public void Load_UnexpectedTensor_NamesTensorAndFile()
    {
        using var scope = NewDisposeScope();
        string folder = SaveFolder("unexpected", GoodCheckpoint().Append(new("pooler.dense.weight", ones(2, 2))));
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains($"unexpected tensor 'pooler.dense.weight' in file '{Path.Combine(folder, "model.safetensors")}' (the model has no such parameter)", e.Message);
    }

    [Fact]
    public void Load_ShapeMismatch_GivesBothShapes()
    {
        using var scope = NewDisposeScope();
        var bad = GoodCheckpoint().Select(kv => kv.Key == "proj.weight" ? new KeyValuePair<string, Tensor>(kv.Key, ones(3, 5)) : kv);
        string folder = SaveFolder("shape", bad);
        using var model = new TinyBackbone();
        var before = model.proj.weight!.clone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("'proj.weight'", e.Message);
        Assert.Contains(Path.Combine(folder, "model.safetensors"), e.Message);
        Assert.Contains("[3, 5] in file vs [3, 4] expected by the model", e.Message);
        // Problems are found from the header before any data is copied: nothing was overwritten.
        Assert.True(model.proj.weight!.IdenticalTo(before));
    }

    [Fact]
    public void Load_FloatTensorForAnIntegerBuffer_IsAnError()
    {
        using var scope = NewDisposeScope();
        var bad = GoodCheckpoint().Select(kv => kv.Key == "position_ids" ? new KeyValuePair<string, Tensor>(kv.Key, arange(5f)) : kv);
        string folder = SaveFolder("kind", bad);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("'position_ids'", e.Message);
        Assert.Contains("Float32 values but the model's 'position_ids' is Int64", e.Message);
    }

    [Fact]
    public void Load_SeveralProblems_AreReportedTogether()
    {
        using var scope = NewDisposeScope();
        var bad = GoodCheckpoint().Where(kv => kv.Key is not ("proj.bias" or "head.weight"))
            .Append(new("extra.a", ones(1))).Append(new("extra.b", ones(1)));
        string folder = SaveFolder("many", bad);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("4 problems", e.Message);
        Assert.Contains("'proj.bias' is missing", e.Message);
        Assert.Contains("'head.weight' is missing", e.Message);
        Assert.Contains("'extra.a'", e.Message);
        Assert.Contains("'extra.b'", e.Message);
    }

    [Fact]
    public void Load_ManyProblems_ListsTheFirstFewAndCountsTheRest()
    {
        using var scope = NewDisposeScope();
        var bad = GoodCheckpoint().Concat(Enumerable.Range(0, 9).Select(i => new KeyValuePair<string, Tensor>($"extra.{i}", ones(1))));
        string folder = SaveFolder("lots", bad);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("9 problems", e.Message);
        Assert.Contains("'extra.4'", e.Message);
        Assert.DoesNotContain("'extra.5'", e.Message);
        Assert.Contains("and 4 more unexpected tensors", e.Message);
    }

    [Fact]
    public void Load_IgnorableKeys_AreSkippedWhetherPresentOrNot()
    {
        using var scope = NewDisposeScope();
        // The file has a rotary buffer the model does not keep, and a position_ids buffer the model wants left alone.
        var withExtras = GoodCheckpoint().Where(kv => kv.Key != "position_ids")
            .Append(new("rotary_emb.inv_freq", ones(2)));
        string folder = SaveFolder("ignorable", withExtras);
        using var model = new TinyBackbone(ignorable: k => k.EndsWith("inv_freq", StringComparison.Ordinal) || k == "position_ids");

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);

        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, Buffer(model, "position_ids").data<long>().ToArray());
        Assert.True(model.head.weight!.IdenticalTo(Values([2, 3], 7f)));

        // Without the module declaring it ignorable, the same file is rejected.
        using var strict = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(strict, folder, ScalarType.Float32, CPU));
        Assert.Contains("'rotary_emb.inv_freq'", e.Message);
        Assert.Contains("'position_ids' is missing", e.Message);
    }

    [Fact]
    public void Load_MapCheckpointKey_StripsPrefix()
    {
        using var scope = NewDisposeScope();
        var prefixed = GoodCheckpoint().Select(kv => new KeyValuePair<string, Tensor>("bert." + kv.Key, kv.Value)).ToList();
        string folder = SaveFolder("prefixed", prefixed);
        Func<string, string> strip = k => k.StartsWith("bert.", StringComparison.Ordinal) ? k["bert.".Length..] : k;
        using var model = new TinyBackbone(map: strip);

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);
        Assert.True(model.proj.bias!.IdenticalTo(Values([3], -3f)));

        // An unmapped key that matches nothing is reported with both names.
        string bad = SaveFolder("prefixed-bad", prefixed.Append(new("bert.nothing.weight", ones(1))));
        using var model2 = new TinyBackbone(map: strip);
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model2, bad, ScalarType.Float32, CPU));
        Assert.Contains("'bert.nothing.weight' (parameter 'nothing.weight')", e.Message);
    }

    [Fact]
    public void Load_TwoKeysMappingToOneParameter_IsAnError()
    {
        using var scope = NewDisposeScope();
        var both = GoodCheckpoint().Append(new("bert.proj.bias", ones(3))).ToList();
        string folder = SaveFolder("dup", both);
        using var model = new TinyBackbone(map: k => k.StartsWith("bert.", StringComparison.Ordinal) ? k[5..] : k);
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("'proj.bias'", e.Message);
        Assert.Contains("already filled", e.Message);
    }

    [Fact]
    public void Load_TiedParameters_AreFilledByEitherName()
    {
        using var scope = NewDisposeScope();
        string folder = SaveFolder("tied", GoodCheckpoint()); // has embed_tokens.weight, no tied_head.weight
        using var model = new TinyBackbone(tied: true);
        Assert.Contains("tied_head.weight", model.state_dict().Keys);

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);

        Assert.True(model.tied_head!.weight!.IdenticalTo(Values([10, 4], 100f)));
    }

    [Fact]
    public void Load_Sharded_FollowsWeightMap()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint();
        string folder = WriteSharded("sharded", checkpoint);
        using var model = new TinyBackbone();

        CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU);

        foreach (var (name, expected) in checkpoint)
            Assert.True(model.state_dict()[name].IdenticalTo(expected), name);
    }

    /// <summary>
    /// The folder as a user types it: with a trailing slash (shell completion writes one), relative with <c>./</c>,
    /// or through <c>..</c>. Each names the same folder, so the shards of its index lie inside it.
    /// </summary>
    [Fact]
    public void Load_Sharded_FolderSpelledWithTrailingSlashDotOrDotDot_Loads()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint();
        string folder = WriteSharded("spelled", checkpoint);
        string sep = Path.DirectorySeparatorChar.ToString();
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, folder);
        string[] spellings =
        [
            folder + sep,
            "." + sep + relative + sep,
            Path.Combine(folder, "..", "spelled"),
            Path.Combine(folder, "..", "spelled") + sep,
        ];
        foreach (string spelling in spellings)
        {
            using var model = new TinyBackbone();
            CheckpointLoader.Load(model, spelling, ScalarType.Float32, CPU);
            foreach (var (name, expected) in checkpoint)
                Assert.True(model.state_dict()[name].IdenticalTo(expected), $"{name} via '{spelling}'");
        }
    }

    /// <summary>A shard in a sibling folder whose name starts with the model folder's (<c>model</c> vs
    /// <c>model-evil</c>) is outside the model folder, however the folder is spelled.</summary>
    [Fact]
    public void Load_Sharded_ShardInSiblingPrefixFolder_IsRefused()
    {
        using var scope = NewDisposeScope();
        string folder = WriteSharded("model", GoodCheckpoint());
        string evil = WriteSharded("model-evil", GoodCheckpoint());
        string index = Path.Combine(folder, CheckpointLoader.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"model-00002-of-00002.safetensors\"", "\"../model-evil/model-00002-of-00002.safetensors\""));
        Assert.True(File.Exists(Path.Combine(evil, "model-00002-of-00002.safetensors")));
        foreach (string spelling in new[] { folder, folder + Path.DirectorySeparatorChar })
        {
            using var model = new TinyBackbone();
            var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, spelling, ScalarType.Float32, CPU));
            Assert.Contains("'../model-evil/model-00002-of-00002.safetensors'", e.Message);
            Assert.Contains("outside the model folder", e.Message);
        }
    }

    [Fact]
    public void Load_Sharded_MissingShardFile_NamesShardAndIndex()
    {
        using var scope = NewDisposeScope();
        string folder = WriteSharded("noshard", GoodCheckpoint());
        File.Delete(Path.Combine(folder, "model-00002-of-00002.safetensors"));
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("'model-00002-of-00002.safetensors'", e.Message);
        Assert.Contains(CheckpointLoader.IndexFileName, e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void Load_Sharded_TensorNotInTheShardTheIndexNames_IsAnError()
    {
        using var scope = NewDisposeScope();
        string folder = WriteSharded("wrongshard", GoodCheckpoint());
        string index = Path.Combine(folder, CheckpointLoader.IndexFileName);
        var json = File.ReadAllText(index).Replace("\"head.weight\": \"model-00002-of-00002.safetensors\"", "\"head.weight\": \"model-00001-of-00002.safetensors\"");
        File.WriteAllText(index, json);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("'head.weight'", e.Message);
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void Load_Sharded_MalformedIndex_IsAnError()
    {
        string folder = Path.Combine(_dir, "badindex");
        Directory.CreateDirectory(folder);
        string index = Path.Combine(folder, CheckpointLoader.IndexFileName);
        File.WriteAllText(index, """{"metadata": {}}""");
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains(index, e.Message);
        Assert.Contains("weight_map", e.Message);

        File.WriteAllText(index, """{"weight_map": {"proj.weight": "../outside.safetensors"}}""");
        var outside = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains("outside the model folder", outside.Message);
    }

    [Fact]
    public void Load_FolderWithoutSafetensors_SaysWhatWasFound()
    {
        string folder = Path.Combine(_dir, "pickle");
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, "pytorch_model.bin"), [1, 2, 3]);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains(folder, e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("'pytorch_model.bin'", e.Message);
    }

    [Fact]
    public void Load_CorruptFile_PropagatesTheParserError()
    {
        string folder = Path.Combine(_dir, "corrupt");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "model.safetensors");
        File.WriteAllBytes(path, [9, 9, 9]);
        using var model = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.Load(model, folder, ScalarType.Float32, CPU));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void LoadStateDict_FromMemory_UsesSourceInMessages()
    {
        using var scope = NewDisposeScope();
        var checkpoint = GoodCheckpoint().ToDictionary(kv => kv.Key, kv => kv.Value);
        using var model = new TinyBackbone();
        CheckpointLoader.LoadStateDict(model, checkpoint, "converted.gguf", ScalarType.Float32, CPU);
        Assert.True(model.embed_tokens.weight!.IdenticalTo(checkpoint["embed_tokens.weight"]));
        Assert.False(checkpoint["proj.weight"].IsInvalid); // the caller's tensors are not disposed

        checkpoint.Remove("head.weight");
        using var model2 = new TinyBackbone();
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.LoadStateDict(model2, checkpoint, "converted.gguf", ScalarType.Float32, CPU));
        Assert.Contains("tensor 'head.weight' is missing from 'converted.gguf'", e.Message);
    }

    /// <summary>Splits the checkpoint over two shards (head.weight and position_ids in the second) with an HF index.</summary>
    private string WriteSharded(string name, List<KeyValuePair<string, Tensor>> checkpoint)
    {
        string folder = Path.Combine(_dir, name);
        Directory.CreateDirectory(folder);
        const string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
        bool InSecond(string k) => k is "head.weight" or "position_ids";
        SafeTensors.Save(Path.Combine(folder, s1), checkpoint.Where(kv => !InSecond(kv.Key)).ToList());
        SafeTensors.Save(Path.Combine(folder, s2), checkpoint.Where(kv => InSecond(kv.Key)).ToList());
        var index = new
        {
            metadata = new { total_size = 123 },
            weight_map = checkpoint.ToDictionary(kv => kv.Key, kv => InSecond(kv.Key) ? s2 : s1),
        };
        File.WriteAllText(Path.Combine(folder, CheckpointLoader.IndexFileName), JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
        return folder;
    }
}

internal static class TensorComparison
{
    /// <summary>Same dtype, same shape and bit-identical contents.</summary>
    public static bool IdenticalTo(this Tensor actual, Tensor expected) =>
        actual.dtype == expected.dtype
        && actual.shape.SequenceEqual(expected.shape)
        && SafeTensorsTests.BytesOf(actual.cpu()).AsSpan().SequenceEqual(SafeTensorsTests.BytesOf(expected.cpu()));
}

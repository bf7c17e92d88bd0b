using System.Diagnostics;
using System.Text.Json.Nodes;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>Builds the default-model folder once into a private temp cache root.</summary>
public sealed class DefaultModelFolderFixture : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), $"ullme-test-cache-{Guid.NewGuid():N}");
    public string Folder { get; }
    public TimeSpan BuildTime { get; }
    private readonly List<string> extraRoots = [];

    public DefaultModelFolderFixture()
    {
        var watch = Stopwatch.StartNew();
        Folder = DefaultModel.EnsureFolder(Root, NewRoot());
        BuildTime = watch.Elapsed;
    }

    /// <summary>A fresh, not yet existing cache root that is deleted with the fixture.</summary>
    public string NewRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), $"ullme-test-cache-{Guid.NewGuid():N}");
        extraRoots.Add(root);
        return root;
    }

    /// <summary>A new cache root holding a copy of the built folder (cheaper than building again).</summary>
    public string CopyToNewRoot()
    {
        string root = NewRoot();
        string target = DefaultModel.FolderPath(root);
        foreach (string file in Directory.EnumerateFiles(Folder, "*", SearchOption.AllDirectories))
        {
            string destination = Path.Combine(target, Path.GetRelativePath(Folder, file));
            Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(file, destination);
        }
        return root;
    }

    public void Dispose()
    {
        foreach (string root in extraRoots.Append(Root))
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }
}

[Collection(TorchCollection.Name)]
public sealed class DefaultModelTests(DefaultModelFolderFixture fixture, ITestOutputHelper output) : IClassFixture<DefaultModelFolderFixture>
{
    private static JsonNode Json(string folder, string file) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, file)))!;

    [Fact]
    public void FolderIsACompleteSentenceTransformersModel()
    {
        string folder = fixture.Folder;
        output.WriteLine($"built {folder} in {fixture.BuildTime.TotalSeconds:F1} s");
        Assert.StartsWith(Path.Combine(fixture.Root, "all-MiniLM-L6-v2") + Path.DirectorySeparatorChar, folder);
        Assert.EndsWith($"{DefaultModel.PackageVersion}-{DefaultModel.OnnxSha256()[..12]}", folder);
        Assert.StartsWith("4a64cee3", DefaultModel.OnnxSha256());
        foreach (string file in DefaultModel.FolderFiles) Assert.True(File.Exists(Path.Combine(folder, file)), file);
        Assert.Empty(Directory.GetDirectories(Path.GetDirectoryName(folder)!, ".tmp-*"));

        var config = ModelConfig.Load(folder);
        Assert.Equal(("bert", 384, 6, 12, 1536, 30522), (config.ModelType, config.HiddenSize, config.NumHiddenLayers, config.NumAttentionHeads, config.IntermediateSize, config.VocabSize));
        Assert.Equal((512, 2, 1e-12, "gelu"), (config.MaxPositionEmbeddings, config.TypeVocabSize, config.LayerNormEps, config.HiddenAct));
        Assert.Equal(["BertModel"], config.Architectures);

        var vocab = File.ReadAllText(Path.Combine(folder, "vocab.txt"));
        Assert.DoesNotContain('\r', vocab);
        var lines = vocab.Split('\n');
        Assert.Equal(30522, lines.Count(l => l.Length > 0));
        Assert.Equal(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), (lines[0], lines[100], lines[101], lines[102], lines[103]));

        Assert.True(Json(folder, "tokenizer_config.json")["do_lower_case"]!.GetValue<bool>());
        Assert.Equal(512, Json(folder, "tokenizer_config.json")["model_max_length"]!.GetValue<int>());
        Assert.Equal("[CLS]", Json(folder, "special_tokens_map.json")["cls_token"]!.GetValue<string>());
        Assert.True(Json(folder, "1_Pooling/config.json")["pooling_mode_mean_tokens"]!.GetValue<bool>());
        Assert.False(Json(folder, "1_Pooling/config.json")["pooling_mode_cls_token"]!.GetValue<bool>());
        Assert.Equal(256, Json(folder, "sentence_bert_config.json")["max_seq_length"]!.GetValue<int>());
        Assert.Equal(["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling", "sentence_transformers.models.Normalize"],
            Json(folder, "modules.json").AsArray().Select(m => m!["type"]!.GetValue<string>()));
        Assert.Equal("cosine", Json(folder, "config_sentence_transformers.json")["similarity_fn_name"]!.GetValue<string>());
    }

    [Fact]
    public void WeightsLoadBackIntoAnIdenticalEncoder()
    {
        var config = ModelConfig.Load(fixture.Folder);
        using var fromFolder = BertEncoder.Create(config);
        CheckpointLoader.Load(fromFolder, fixture.Folder, ScalarType.Float32, CPU);

        var imported = DefaultModel.ImportWeights(config);
        try
        {
            using var fromOnnx = BertEncoder.Create(config);
            CheckpointLoader.LoadStateDict(fromOnnx, imported, DefaultModel.OnnxResourceName, ScalarType.Float32, CPU);

            var onnxParameters = fromOnnx.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, parameter) in fromFolder.named_parameters())
                Assert.True(parameter.allclose(onnxParameters[name], rtol: 0, atol: 0), $"{name} differs after the safetensors round trip");

            // The pooler is kept in the file, as in the original checkpoint.
            var file = SafeTensors.LoadAll(Path.Combine(fixture.Folder, "model.safetensors"));
            try
            {
                Assert.Equal(5 + 16 * 6 + 2, file.Count);
                Assert.True(file["pooler.dense.weight"].allclose(imported["pooler.dense.weight"], rtol: 0, atol: 0));
                Assert.All(file.Values, t => Assert.Equal(ScalarType.Float32, t.dtype));
            }
            finally
            {
                foreach (var t in file.Values) t.Dispose();
            }

            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var ids = tensor(new long[] { 101, 7592, 2088, 102 }, [1, 4]);   // [CLS] hello world [SEP]
            var mask = ones(1, 4, ScalarType.Int64);
            Assert.True(fromFolder.Forward(ids, mask, AttentionMode.Bidirectional)
                .allclose(fromOnnx.Forward(ids, mask, AttentionMode.Bidirectional), rtol: 0, atol: 0));
        }
        finally
        {
            foreach (var t in imported.Values) t.Dispose();
        }
    }

    [Fact]
    public void LoadedDefaultModelEmbedsLikeOnnxRuntime()
    {
        // End to end: folder → UllmeModel (tokenizer + encoder + sentence-transformers settings) → engine, against
        // ONNX Runtime's last_hidden_state on the same token ids, mean-pooled and normalised.
        using var model = UllmeModel.Load(fixture.Folder);
        Assert.Equal((PoolingMode.Mean, true, 256, 384), (model.Defaults.Pooling, model.Defaults.Normalize, model.Defaults.MaxLength, model.EmbeddingDimension));
        string[] texts = ["A man is playing a guitar.", "Héllo, wörld! Tokenizers split punctuation_and_accents.", "short"];
        var embeddings = new EmbeddingEngine(model).Embed(texts);

        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(DefaultModel.ReadResource(DefaultModel.OnnxResourceName));
        float maxDiff = 0;
        for (int i = 0; i < texts.Length; i++)
        {
            long[] ids = [.. model.Tokenizer.Encode(texts[i]).Select(id => (long)id)];
            Assert.Equal(101, ids[0]);
            Assert.Equal(102, ids[^1]);
            long[] shape = [1, ids.Length];
            using var idsValue = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(ids, shape);
            using var maskValue = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), shape);
            using var typeValue = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new long[ids.Length], shape);
            using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
            using var results = session.Run(runOptions, ["input_ids", "attention_mask", "token_type_ids"], [idsValue, maskValue, typeValue], ["last_hidden_state"]);
            var states = results[0].GetTensorDataAsSpan<float>().ToArray();
            var mean = new double[384];
            for (int t = 0; t < ids.Length; t++)
                for (int h = 0; h < 384; h++) mean[h] += states[t * 384 + h] / ids.Length;
            double norm = Math.Sqrt(mean.Sum(x => x * x));
            for (int h = 0; h < 384; h++) maxDiff = Math.Max(maxDiff, (float)Math.Abs(mean[h] / norm - embeddings[i][h]));
        }
        output.WriteLine($"engine vs ONNX Runtime, pooled+normalised: max |diff| = {maxDiff:E2}");
        Assert.True(maxDiff < 1e-4f, $"default model embeddings differ from ONNX Runtime by {maxDiff:E2}");
    }

    [Fact]
    public void SecondCallReusesTheCache()
    {
        string weights = Path.Combine(fixture.Folder, "model.safetensors");
        var written = File.GetLastWriteTimeUtc(weights);
        var watch = Stopwatch.StartNew();
        string again = DefaultModel.EnsureFolder(fixture.Root, fixture.NewRoot());
        output.WriteLine($"cached call: {watch.Elapsed.TotalMilliseconds:F0} ms");
        Assert.Equal(fixture.Folder, again);
        Assert.Equal(written, File.GetLastWriteTimeUtc(weights));
    }

    [Theory]
    [InlineData("vocab.txt", false)]
    [InlineData("1_Pooling/config.json", false)]
    [InlineData("model.safetensors", true)]
    public void DamagedCacheIsRebuilt(string file, bool truncateInsteadOfDelete)
    {
        string root = fixture.CopyToNewRoot();
        string folder = DefaultModel.FolderPath(root);
        Assert.True(DefaultModel.IsComplete(folder));
        string path = Path.Combine(folder, file);
        long size = new FileInfo(path).Length;
        if (truncateInsteadOfDelete)
            using (var stream = File.OpenWrite(path)) stream.SetLength(size / 2);
        else
            File.Delete(path);
        Assert.False(DefaultModel.IsComplete(folder));

        Assert.Equal(folder, DefaultModel.EnsureFolder(root, fixture.NewRoot()));
        Assert.Equal(size, new FileInfo(path).Length);
        Assert.True(DefaultModel.IsComplete(folder));
        Assert.Empty(Directory.GetDirectories(Path.GetDirectoryName(folder)!, ".t*"));   // no .tmp-/.trash- leftovers
    }

    [Fact]
    public void UnwritableCacheFallsBackWithoutCrashing()
    {
        // A cache root below a regular file cannot be created.
        string blocker = Path.Combine(fixture.NewRoot(), "not-a-directory");
        Directory.CreateDirectory(Path.GetDirectoryName(blocker)!);
        File.WriteAllText(blocker, "");
        string fallback = fixture.CopyToNewRoot();

        string folder = DefaultModel.EnsureFolder(Path.Combine(blocker, "cache"), fallback);
        Assert.Equal(DefaultModel.FolderPath(fallback), folder);
        Assert.True(DefaultModel.IsComplete(folder));
    }

    [Fact]
    public void NeitherRootWritableIsOneClearError()
    {
        string blocker = Path.Combine(fixture.NewRoot(), "file");
        Directory.CreateDirectory(Path.GetDirectoryName(blocker)!);
        File.WriteAllText(blocker, "");
        var e = Assert.Throws<UllmeException>(() => DefaultModel.EnsureFolder(Path.Combine(blocker, "a"), Path.Combine(blocker, "b")));
        Assert.Contains("ULLME_CACHE", e.Message);
    }

    [Fact]
    public void CacheRootFollowsEnvironment()
    {
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        Dictionary<string, string> env = new() { ["ULLME_CACHE"] = "/data/ullme-cache", ["XDG_CACHE_HOME"] = "/xdg" };
        Assert.Equal("/data/ullme-cache", DefaultModel.ResolveCacheRoot(env.GetValueOrDefault));
        env.Remove("ULLME_CACHE");
        Assert.Equal("/xdg/ullme", DefaultModel.ResolveCacheRoot(env.GetValueOrDefault));
        env.Clear();
        Assert.Equal(Path.Combine(home, ".cache", "ullme"), DefaultModel.ResolveCacheRoot(env.GetValueOrDefault));
    }
}

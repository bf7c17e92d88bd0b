using TorchSharp;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

[Collection(TorchCollection.Name)]
public sealed class BertEncoderTests(ITestOutputHelper output)
{
    internal const string TinyConfigJson = """
        {
          "architectures": ["BertModel"],
          "model_type": "bert",
          "vocab_size": 100,
          "hidden_size": 32,
          "num_hidden_layers": 2,
          "num_attention_heads": 4,
          "intermediate_size": 64,
          "max_position_embeddings": 64,
          "type_vocab_size": 2,
          "layer_norm_eps": 1e-12,
          "hidden_act": "gelu",
          "hidden_dropout_prob": 0.1,
          "attention_probs_dropout_prob": 0.1
        }
        """;

    internal static BertEncoder CreateTiny(int seed = 1234, string? hiddenAct = null)
    {
        manual_seed(seed);
        string json = hiddenAct is null ? TinyConfigJson : TinyConfigJson.Replace("\"gelu\"", $"\"{hiddenAct}\"");
        return BertEncoder.Create(ModelConfig.Parse(json, "tiny-bert/config.json"));
    }

    private static long[] RandomIds(Random random, int length) =>
        [.. Enumerable.Range(0, length).Select(_ => (long)random.Next(1, 100))];

    /// <summary>Forward for one unpadded sequence → [T, H] as floats.</summary>
    private static float[,] Single(BertEncoder model, long[] ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var states = model.Forward(tensor(ids, [1, ids.Length]), ones(1, ids.Length, ScalarType.Int64), AttentionMode.Bidirectional);
        return ToMatrix(states[0].to(ScalarType.Float32));
    }

    private static float[,] ToMatrix(Tensor t)
    {
        var data = t.contiguous().data<float>().ToArray();
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        var m = new float[rows, cols];
        Buffer.BlockCopy(data, 0, m, 0, data.Length * sizeof(float));
        return m;
    }

    [Fact]
    public void ParameterNamesAreHuggingFaceBertKeys()
    {
        using var model = CreateTiny();
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        string[] expected =
        [
            "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias",
            "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.key.bias", "encoder.layer.1.attention.self.value.weight",
            "encoder.layer.1.attention.output.dense.weight", "encoder.layer.1.attention.output.LayerNorm.bias",
            "encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.output.dense.bias", "encoder.layer.1.output.LayerNorm.weight",
        ];
        Assert.All(expected, n => Assert.Contains(n, names));
        Assert.Equal(5 + 16 * 2, names.Count);
        Assert.Equal(new long[] { 64, 32 }, model.named_parameters().Single(p => p.name == "encoder.layer.0.intermediate.dense.weight").parameter.shape);
    }

    [Fact]
    public void CheckpointKeyMappingStripsBertPrefixAndIgnoresHeads()
    {
        using var model = CreateTiny();
        Assert.Equal("encoder.layer.0.output.dense.weight", model.MapCheckpointKey("bert.encoder.layer.0.output.dense.weight"));
        Assert.Equal("encoder.layer.0.output.dense.weight", model.MapCheckpointKey("encoder.layer.0.output.dense.weight"));
        Assert.True(model.IsIgnorableCheckpointKey("pooler.dense.weight"));
        Assert.True(model.IsIgnorableCheckpointKey("bert.pooler.dense.bias"));
        Assert.True(model.IsIgnorableCheckpointKey("embeddings.position_ids"));
        Assert.True(model.IsIgnorableCheckpointKey("bert.embeddings.position_ids"));
        Assert.True(model.IsIgnorableCheckpointKey("cls.predictions.transform.dense.weight"));
        Assert.True(model.IsIgnorableCheckpointKey("cls.seq_relationship.weight"));
        Assert.False(model.IsIgnorableCheckpointKey("encoder.layer.0.output.dense.weight"));
        Assert.False(model.IsIgnorableCheckpointKey("bert.embeddings.word_embeddings.weight"));
    }

    [Theory]
    [InlineData("bert.")]   // BertModel / BertForMaskedLM checkpoints
    [InlineData("")]        // sentence-transformers checkpoints
    public void CheckpointsWithAndWithoutBertPrefixLoadAndExtrasAreIgnored(string prefix)
    {
        using var source = CreateTiny(seed: 1);
        using var target = CreateTiny(seed: 2);
        string folder = Path.Combine(Path.GetTempPath(), $"ullme-bert-ckpt-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            using var scope = NewDisposeScope();
            var entries = source.named_parameters().Select(p => KeyValuePair.Create(prefix + p.name, (Tensor)p.parameter)).ToList();
            // What HF checkpoints carry besides the encoder: the pooler, the position-id buffer, MLM/NSP heads.
            entries.Add(KeyValuePair.Create(prefix + "pooler.dense.weight", randn(32, 32)));
            entries.Add(KeyValuePair.Create(prefix + "pooler.dense.bias", zeros(32)));
            entries.Add(KeyValuePair.Create(prefix + "embeddings.position_ids", arange(64, ScalarType.Int64).unsqueeze(0)));
            if (prefix.Length > 0)
            {
                entries.Add(KeyValuePair.Create("cls.predictions.bias", zeros(100)));
                entries.Add(KeyValuePair.Create("cls.seq_relationship.weight", randn(2, 32)));
            }
            SafeTensors.Save(Path.Combine(folder, "model.safetensors"), entries);

            CheckpointLoader.Load(target, folder, ScalarType.Float32, CPU);

            using var noGrad = no_grad();
            var ids = tensor(RandomIds(new Random(9), 12), [1, 12]);
            var mask = ones(1, 12, ScalarType.Int64);
            Assert.True(source.Forward(ids, mask, AttentionMode.Bidirectional)
                .allclose(target.Forward(ids, mask, AttentionMode.Bidirectional), rtol: 0, atol: 0));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void CheckpointMissingALayerIsRejected()
    {
        using var source = CreateTiny(seed: 1);
        using var target = CreateTiny(seed: 2);
        var weights = source.named_parameters().Where(p => !p.name.StartsWith("encoder.layer.1.output.", StringComparison.Ordinal))
            .ToDictionary(p => "bert." + p.name, p => (Tensor)p.parameter);
        var e = Assert.Throws<UllmeException>(() => CheckpointLoader.LoadStateDict(target, weights, "partial.safetensors", ScalarType.Float32, CPU));
        Assert.Contains("encoder.layer.1.output.dense.weight", e.Message);
    }

    [Fact]
    public void GradientsReachEveryParameter()
    {
        // Forward never disables autograd: fine-tuning backpropagates through it (padding included).
        using var model = CreateTiny();
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 1, 2, 3, 4, 5, 6, 0, 0 }, [2, 4]);
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }, [2, 4]);
        var states = model.Forward(ids, mask, AttentionMode.Bidirectional);
        Assert.True(states.requires_grad);
        states.pow(2).mean().backward();
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (name == "embeddings.token_type_embeddings.weight") continue; // only row 0 is used; checked below
            Assert.NotNull(parameter.grad);
            Assert.True(parameter.grad!.abs().sum().item<float>() > 0, $"{name} got no gradient");
        }
        Assert.True(model.named_parameters().Single(p => p.name == "embeddings.token_type_embeddings.weight").parameter.grad![0].abs().sum().item<float>() > 0);
    }

    [Fact]
    public void CausalModeIsRejected()
    {
        using var model = CreateTiny();
        Assert.False(model.SupportsCausal);
        using var ids = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        using var mask = ones(1, 3, ScalarType.Int64);
        var e = Assert.Throws<UllmeException>(() => model.Forward(ids, mask, AttentionMode.Causal));
        Assert.Contains("bidirectional", e.Message);
    }

    [Fact]
    public void UnsupportedConfigsFailWithTheFieldNamed()
    {
        var e = Assert.Throws<UllmeException>(() => CreateTiny(hiddenAct: "swish"));
        Assert.Contains("hidden_act", e.Message);
        Assert.Contains("swish", e.Message);

        var rel = ModelConfig.Parse(TinyConfigJson.Replace("\"model_type\": \"bert\",", "\"model_type\": \"bert\", \"position_embedding_type\": \"relative_key\","));
        Assert.Contains("relative_key", Assert.Throws<UllmeException>(() => BertEncoder.Create(rel)).Message);

        using var model = CreateTiny();
        using var ids = zeros(1, 65, ScalarType.Int64);
        using var mask = ones(1, 65, ScalarType.Int64);
        Assert.Contains("max_position_embeddings", Assert.Throws<UllmeException>(() => model.Forward(ids, mask, AttentionMode.Bidirectional)).Message);

        using var badIds = tensor(new long[] { 1, 100 }, [1, 2]);
        using var twoMask = ones(1, 2, ScalarType.Int64);
        var vocabError = Assert.Throws<UllmeException>(() => model.Forward(badIds, twoMask, AttentionMode.Bidirectional));
        Assert.Contains("100", vocabError.Message);
        Assert.Contains("vocab_size", vocabError.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PaddedBatchEqualsOneByOneOnRealTokens(bool leftPadding)
    {
        using var model = CreateTiny();
        var random = new Random(7);
        long[][] sequences = [RandomIds(random, 5), RandomIds(random, 17), RandomIds(random, 11), RandomIds(random, 2)];
        int tokens = sequences.Max(s => s.Length);

        var ids = new long[sequences.Length * tokens];
        var mask = new bool[sequences.Length * tokens];
        for (int b = 0; b < sequences.Length; b++)
        {
            int offset = leftPadding ? tokens - sequences[b].Length : 0;
            for (int t = 0; t < sequences[b].Length; t++)
            {
                ids[b * tokens + offset + t] = sequences[b][t];
                mask[b * tokens + offset + t] = true;
            }
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // A bool mask on purpose: int64 and bool masks are both accepted.
        var batched = model.Forward(tensor(ids, [sequences.Length, tokens]), tensor(mask, [sequences.Length, tokens]), AttentionMode.Bidirectional);

        float maxDiff = 0;
        for (int b = 0; b < sequences.Length; b++)
        {
            int offset = leftPadding ? tokens - sequences[b].Length : 0;
            var alone = Single(model, sequences[b]);
            var row = ToMatrix(batched[b]);
            for (int t = 0; t < sequences[b].Length; t++)
                for (int h = 0; h < 32; h++)
                    maxDiff = Math.Max(maxDiff, Math.Abs(alone[t, h] - row[offset + t, h]));
        }
        output.WriteLine($"{(leftPadding ? "left" : "right")} padding: max |batched - alone| = {maxDiff:E2}");
        Assert.True(maxDiff < 1e-5f, $"padding changed real-token states by {maxDiff:E2}");
    }

    [Fact]
    public void ExplicitPositionIdsAreUsed()
    {
        using var model = CreateTiny();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 5, 6, 7, 8 }, [1, 4]);
        var mask = ones(1, 4, ScalarType.Int64);
        var implicitPositions = model.Forward(ids, mask, AttentionMode.Bidirectional);
        var same = model.Forward(ids, mask, AttentionMode.Bidirectional, arange(4, ScalarType.Int64).unsqueeze(0));
        var shifted = model.Forward(ids, mask, AttentionMode.Bidirectional, arange(10, 14, ScalarType.Int64).unsqueeze(0));
        Assert.True(implicitPositions.allclose(same, rtol: 0, atol: 0));
        Assert.False(implicitPositions.allclose(shifted, rtol: 1e-3, atol: 1e-3));
    }

    [Fact]
    public void CreateReturnsEvalModeAndTrainEnablesDropout()
    {
        using var model = CreateTiny();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(RandomIds(new Random(3), 9), [1, 9]);
        var mask = ones(1, 9, ScalarType.Int64);
        var first = model.Forward(ids, mask, AttentionMode.Bidirectional);
        var second = model.Forward(ids, mask, AttentionMode.Bidirectional);
        Assert.True(first.allclose(second, rtol: 0, atol: 0), "eval-mode forward must be deterministic");

        model.train();
        var noisy = model.Forward(ids, mask, AttentionMode.Bidirectional);
        Assert.False(first.allclose(noisy, rtol: 1e-4, atol: 1e-4), "train mode should apply hidden/attention dropout");
        model.eval();
    }

    [Theory]
    [InlineData("gelu_new")]
    [InlineData("relu")]
    public void OtherActivationsRun(string act)
    {
        using var model = CreateTiny(hiddenAct: act);
        using var reference = CreateTiny();   // same seed → same weights, exact GELU
        var ids = RandomIds(new Random(5), 6);
        var a = Single(model, ids);
        var b = Single(reference, ids);
        float diff = 0;
        foreach (var (x, y) in a.Cast<float>().Zip(b.Cast<float>())) diff = Math.Max(diff, Math.Abs(x - y));
        Assert.All(a.Cast<float>(), x => Assert.True(float.IsFinite(x)));
        // tanh-GELU is within ~1e-3 of exact GELU per activation; ReLU differs clearly.
        if (act == "relu") Assert.True(diff > 1e-2f, $"relu vs gelu differ by only {diff:E2}");
        else Assert.True(diff is > 0f and < 5e-2f, $"gelu_new vs gelu differ by {diff:E2}");
    }

    [Fact]
    public void BFloat16AgreesWithFloat32()
    {
        using var model = CreateTiny();
        var random = new Random(11);
        long[][] sequences = [RandomIds(random, 24), RandomIds(random, 9)];
        int tokens = 24;
        var ids = new long[2 * tokens];
        var mask = new long[2 * tokens];
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < sequences[b].Length; t++) { ids[b * tokens + t] = sequences[b][t]; mask[b * tokens + t] = 1; }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var idsT = tensor(ids, [2, tokens]);
        var maskT = tensor(mask, [2, tokens]);
        var full = model.Forward(idsT, maskT, AttentionMode.Bidirectional);
        model.to(ScalarType.BFloat16);
        var half = model.Forward(idsT, maskT, AttentionMode.Bidirectional);
        Assert.Equal(ScalarType.BFloat16, half.dtype);
        var half32 = half.to(ScalarType.Float32);

        var realMask = maskT.to(ScalarType.Float32).unsqueeze(-1);                        // [B, T, 1]
        float maxAbs = (full - half32).abs().mul(realMask).max().item<float>();
        var pooledFull = (full * realMask).sum(1) / realMask.sum(1);                     // [B, H]
        var pooledHalf = (half32 * realMask).sum(1) / realMask.sum(1);
        var cosine = nn.functional.cosine_similarity(pooledFull, pooledHalf, 1);
        float minCos = cosine.min().item<float>();
        output.WriteLine($"bf16 vs fp32: max |diff| on real tokens = {maxAbs:E2}, min pooled cosine = {minCos:F6}");
        Assert.True(maxAbs < 0.1f, $"bf16 differs from fp32 by {maxAbs:E2}");
        Assert.True(minCos > 0.999f, $"bf16 pooled cosine {minCos:F6}");
    }
}

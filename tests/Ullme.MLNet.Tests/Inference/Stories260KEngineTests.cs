using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// The engine's public API (tokenize → batch → forward → pool, and causal scoring) against the independent float64
/// reference outputs of the real stories260K Llama (../shared/models/stories260K/golden, tolerance 1e-4).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class Stories260KEngineTests : IDisposable
{
    private const double Tolerance = 1e-4;
    private readonly UllmeModel? _model;

    public Stories260KEngineTests()
    {
        if (Assets.Available) _model = UllmeModel.Load(Assets.Stories260K);
    }

    public void Dispose() => _model?.Dispose();

    private static JsonElement Golden(string file) =>
        JsonDocument.Parse(File.ReadAllText(Assets.Path("models", "stories260K", "golden", file))).RootElement;

    private static float[][] Matrix(JsonElement e) =>
        e.EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetSingle()).ToArray()).ToArray();

    private static void AssertClose(float[] expected, float[] actual, double tol = Tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        double max = expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(max <= tol, $"max abs diff {max:E2} > {tol:E0}");
    }

    [AssetTheory]
    [InlineData(AttentionMode.Causal, PoolingMode.Mean, "mean_pooled_causal")]
    [InlineData(AttentionMode.Bidirectional, PoolingMode.Mean, "mean_pooled_bidirectional")]
    [InlineData(AttentionMode.Causal, PoolingMode.LastToken, "last_token_pooled_causal")]
    public void EmbeddingsMatchGoldenPooledStates(AttentionMode attention, PoolingMode pooling, string key)
    {
        var golden = Golden("hidden.json");
        var sentences = golden.GetProperty("sentences").EnumerateArray().Select(s => s.GetString()!).ToList();
        var engine = new EmbeddingEngine(_model!);
        var options = new EmbeddingOptions { Attention = attention, Pooling = pooling, Normalize = false, BatchSize = 2 };

        // The engine tokenizes exactly as the reference did (BOS + SentencePiece).
        var ids = golden.GetProperty("input_ids").EnumerateArray().ToArray();
        var mask = golden.GetProperty("attention_mask").EnumerateArray().ToArray();
        for (int i = 0; i < sentences.Count; i++)
        {
            var expectedIds = ids[i].EnumerateArray().Zip(mask[i].EnumerateArray()).Where(p => p.Second.GetInt32() == 1).Select(p => p.First.GetInt32());
            Assert.Equal(expectedIds, engine.Encode(sentences[i], options).Ids);
        }

        var embeddings = engine.Embed(sentences, options);
        var expected = Matrix(golden.GetProperty(key));
        for (int i = 0; i < sentences.Count; i++) AssertClose(expected[i], embeddings[i]);
    }

    [AssetFact]
    public void ScoreMatchesGoldenTokenLogProbs()
    {
        var golden = Golden("logits.json");
        var engine = new EmbeddingEngine(_model!);
        var result = engine.Score([new ScoreRequest("", golden.GetProperty("prompt").GetString()!)]).Single();
        var expected = golden.GetProperty("token_logprobs").EnumerateArray().Select(x => x.GetSingle()).ToArray();
        AssertClose(expected, result.TokenLogProbs);
        Assert.Equal(golden.GetProperty("mean_logprob").GetDouble(), result.Mean, 4);

        // The same through pre-tokenized ids with score_from = 1.
        var ids = golden.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var byIds = engine.ScoreTokenIds([new TokenScoreRequest(ids, 1)]).Single();
        AssertClose(expected, byIds.TokenLogProbs);
    }

    [AssetFact]
    public void PrefixTokensAreConditionedOnNotScored()
    {
        var engine = new EmbeddingEngine(_model!);
        var whole = engine.Score([new ScoreRequest("", "Once upon a time there was a little girl")]).Single();
        var split = engine.Score([new ScoreRequest("Once upon a time", "there was a little girl")]).Single();
        // "Once upon a time" is 4 tokens: the split request scores exactly the remaining ones, with the same values.
        Assert.Equal(whole.TokenLogProbs.Length - 4, split.TokenLogProbs.Length);
        AssertClose(whole.TokenLogProbs[4..], split.TokenLogProbs);
    }

    [AssetFact]
    public void ResultsDoNotDependOnBatchingOrOrder()
    {
        var engine = new EmbeddingEngine(_model!);
        var texts = new[] { "Lily and Ben went to the park to play with a big red ball.", "Hello!", "", "The cat sat on the mat.", "A dog.", "Once upon a time there was a little girl named Lily. She loved to play outside." };
        foreach (var attention in new[] { AttentionMode.Bidirectional, AttentionMode.Causal })
            foreach (var pooling in Enum.GetValues<PoolingMode>())
            {
                var one = texts.Select(t => engine.Embed([t], new EmbeddingOptions { Attention = attention, Pooling = pooling, BatchSize = 1 })[0]).ToArray();
                var batched = engine.Embed(texts, new EmbeddingOptions { Attention = attention, Pooling = pooling, BatchSize = 4 });
                for (int i = 0; i < texts.Length; i++) AssertClose(one[i], batched[i], 1e-5);
            }
    }

    [AssetFact]
    public void InstructionChangesTheEmbeddingButIsNotPooled()
    {
        var engine = new EmbeddingEngine(_model!);
        var plain = engine.Embed(["The cat sat on the mat."], new EmbeddingOptions { Attention = AttentionMode.Causal })[0];
        var instructed = engine.Embed(["The cat sat on the mat."], new EmbeddingOptions { Attention = AttentionMode.Causal, Instruction = "Retrieve a story" })[0];
        // Causal attention: the text's states see the instruction, so the pooled vector changes...
        Assert.True(plain.Zip(instructed, (a, b) => Math.Abs(a - b)).Max() > 1e-3);
        // ...and the pooled positions are the text's (plus BOS), not the instruction's.
        var e = engine.Encode("The cat sat on the mat.", new EmbeddingOptions { Instruction = "Retrieve a story" });
        Assert.Equal(1, e.InstructionStart);
        Assert.True(e.InstructionLength > 0);
        Assert.Equal(engine.Encode("The cat sat on the mat.").Ids[1..], e.Ids[(1 + e.InstructionLength)..]);
    }

    [AssetFact]
    public void TruncationIsCountedNotSilent()
    {
        var engine = new EmbeddingEngine(_model!);
        var r = engine.EmbedDetailed(["Once upon a time there was a little girl named Lily.", "Hi."], new EmbeddingOptions { MaxLength = 5 });
        Assert.Equal(1, r.TruncatedCount);
        Assert.Equal(2, r.Embeddings.Length);
    }

    [AssetFact]
    public void EmbeddingPathLeaksNoTensors()
    {
        var engine = new EmbeddingEngine(_model!);
        var texts = new[] { "The cat sat on the mat.", "Hello!", "Lily and Ben went to the park." };
        engine.Embed(texts);
        engine.Score([new ScoreRequest("Once upon", " a time")]);
        var stats = TorchSharp.DisposeScopeManager.Statistics;
        long before = stats.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            engine.Embed(texts, new EmbeddingOptions { Pooling = (PoolingMode)(i % 4), BatchSize = 2 });
            engine.Score([new ScoreRequest("Once upon", " a time"), new ScoreRequest("", "The end.")]);
        }
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }

    [AssetFact]
    public void SavedFolderLoadsBackToIdenticalEmbeddings()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ullme-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            _model!.SaveFolder(dir, _model.Defaults with { Pooling = PoolingMode.WeightedMean, Attention = AttentionMode.Causal });
            using var reloaded = UllmeModel.Load(dir);
            Assert.Equal(PoolingMode.WeightedMean, reloaded.Defaults.Pooling);
            Assert.Equal(AttentionMode.Causal, reloaded.Defaults.Attention);
            var texts = new[] { "The cat sat on the mat.", "Hello!" };
            var a = new EmbeddingEngine(_model).Embed(texts, new EmbeddingOptions { Pooling = PoolingMode.WeightedMean, Attention = AttentionMode.Causal });
            var b = new EmbeddingEngine(reloaded).Embed(texts);
            for (int i = 0; i < texts.Length; i++) Assert.Equal(a[i], b[i]);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [AssetFact]
    public void MissingModelFolderIsAClearError()
    {
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(Path.Combine(Path.GetTempPath(), "no-such-model-" + Guid.NewGuid())));
        Assert.Contains("does not exist", e.Message);
    }
}

using System.Buffers.Binary;
using System.ClientModel;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Embeddings;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Server;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;
using AiOptions = Microsoft.Extensions.AI.EmbeddingGenerationOptions;
using OpenAiOptions = OpenAI.Embeddings.EmbeddingGenerationOptions;

namespace Ullme.MLNet.Tests.Server;

/// <summary>/v1/embeddings and /embed on the default model: the official clients unchanged, OpenAI's shapes, and
/// the same vectors as the engine whatever batch a text lands in.</summary>
[Collection(TorchCollection.Name)]
public sealed class ServerEmbeddingTests
{
    private static readonly string[] Texts =
    [
        "A man is playing a guitar.",
        "Someone plays an instrument on the stage in front of a large and enthusiastic crowd of young people.",
        "The stock market fell.",
        "",
        "Dogs run.",
    ];

    private static float[][] Engine(IReadOnlyList<string> texts, EmbeddingOptions? options = null) =>
        new EmbeddingEngine(MLNetTestData.Default).Embed(texts, options);

    [Fact]
    public async Task OfficialOpenAiClient_Base64ByDefault_GetsTheEngineVectors_AndDimensionsRenormalise()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var client = new EmbeddingClient("all-MiniLM-L6-v2", new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(t.BaseUri, "v1") });
        var expected = Engine(Texts);

        OpenAIEmbeddingCollection result = await client.GenerateEmbeddingsAsync(Texts);
        Assert.Equal(Texts.Length, result.Count);
        for (int i = 0; i < Texts.Length; i++)
        {
            Assert.Equal(i, result[i].Index);
            Assert.True(TestServer.Cosine(result[i].ToFloats().ToArray(), expected[i]) >= 0.99999);
        }
        long tokens = Texts.Sum(x => (long)new EmbeddingEngine(MLNetTestData.Default).Encode(x).Length);
        Assert.Equal(tokens, result.Usage.InputTokenCount);
        Assert.Equal(tokens, result.Usage.TotalTokenCount);

        OpenAIEmbeddingCollection cut = await client.GenerateEmbeddingsAsync(Texts, new OpenAiOptions { Dimensions = 64 });
        for (int i = 0; i < Texts.Length; i++)
        {
            var v = cut[i].ToFloats().ToArray();
            Assert.Equal(64, v.Length);
            Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 5);
            Assert.True(TestServer.Cosine(v, expected[i][..64]) >= 0.99999);
        }
    }

    [Fact]
    public async Task ExtensionsAiEmbeddingGenerator_WorksUnchanged_WithAnApiKey()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { ApiKey = "s3cret-key" });
        IEmbeddingGenerator<string, Embedding<float>> generator = new EmbeddingClient("ullme", new ApiKeyCredential("s3cret-key"),
            new OpenAIClientOptions { Endpoint = new Uri(t.BaseUri, "v1") }).AsIEmbeddingGenerator();
        var expected = Engine(Texts);

        var embeddings = await generator.GenerateAsync(Texts);
        Assert.Equal(Texts.Length, embeddings.Count);
        for (int i = 0; i < Texts.Length; i++) Assert.True(TestServer.Cosine(embeddings[i].Vector.ToArray(), expected[i]) >= 0.99999);
        Assert.Equal(MLNetTestData.Default.ModelId, embeddings[0].ModelId);

        var small = await generator.GenerateAsync(["Dogs run."], new AiOptions { Dimensions = 32 });
        Assert.Equal(32, small[0].Vector.Length);

        var wrongKey = new EmbeddingClient("ullme", new ApiKeyCredential("s3cret-kez"), new OpenAIClientOptions { Endpoint = new Uri(t.BaseUri, "v1") }).AsIEmbeddingGenerator();
        var e = await Assert.ThrowsAsync<ClientResultException>(() => wrongKey.GenerateAsync(["x"]));
        Assert.Equal(401, e.Status);
    }

    [Fact]
    public async Task ResponseShapeIsOpenAis_ForEveryInputForm()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        int[] ids = engine.Encode("Dogs run.").Ids;

        var (status, body, _) = await t.PostAsync("/v1/embeddings", """{"input": "Dogs run.", "model": "x"}""");
        Assert.Equal(200, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        Assert.Equal(MLNetTestData.Default.ModelId, body.GetProperty("model").GetString());
        var item = body.GetProperty("data")[0];
        Assert.Equal("embedding", item.GetProperty("object").GetString());
        Assert.Equal(0, item.GetProperty("index").GetInt32());
        var fromText = TestServer.Floats(item.GetProperty("embedding"));
        Assert.Equal(ids.Length, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(ids.Length, body.GetProperty("usage").GetProperty("total_tokens").GetInt32());
        Assert.True(TestServer.Cosine(fromText, Engine(["Dogs run."])[0]) >= 0.99999);

        // Token ids (one array, and an array of arrays) are used exactly as given: the same ids give the same vector.
        (status, body, _) = await t.PostAsync("/v1/embeddings", $$"""{"input": [{{string.Join(",", ids)}}]}""");
        Assert.Equal(200, status);
        Assert.Single(body.GetProperty("data").EnumerateArray());
        Assert.True(TestServer.Cosine(TestServer.Floats(body.GetProperty("data")[0].GetProperty("embedding")), fromText) >= 0.99999);
        (status, body, _) = await t.PostAsync("/v1/embeddings", $$"""{"input": [[{{string.Join(",", ids)}}], [{{ids[0]}}, {{ids[1]}}]], "encoding_format": "float"}""");
        Assert.Equal(200, status);
        Assert.Equal(2, body.GetProperty("data").GetArrayLength());
        Assert.Equal(ids.Length + 2, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var partial = new EmbeddingEngine(MLNetTestData.Default).EmbedTokenIds([new[] { ids[0], ids[1] }]).Embeddings[0];
        Assert.True(TestServer.Cosine(TestServer.Floats(body.GetProperty("data")[1].GetProperty("embedding")), partial) >= 0.99999);

        // base64 = little-endian float32 bytes of the same vector.
        (status, body, _) = await t.PostAsync("/v1/embeddings", """{"input": ["Dogs run.", "Cats sleep."], "encoding_format": "base64"}""");
        Assert.Equal(200, status);
        var bytes = Convert.FromBase64String(body.GetProperty("data")[0].GetProperty("embedding").GetString()!);
        Assert.Equal(fromText.Length * 4, bytes.Length);
        // The request may share a batch of another shape than fromText's (padding changes the GEMM blocking in the last
        // bits), so compare to within float32 noise: a wrong byte order or width would give garbage, not 1e-6 off.
        var decoded = new float[fromText.Length];
        for (int i = 0; i < fromText.Length; i++) decoded[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(i * 4));
        for (int i = 0; i < fromText.Length; i++) Assert.True(Math.Abs(fromText[i] - decoded[i]) < 1e-5f, $"value {i}: {decoded[i]} vs {fromText[i]}");
        Assert.True(TestServer.Cosine(decoded, fromText) >= 0.99999);
        Assert.Equal(1, body.GetProperty("data")[1].GetProperty("index").GetInt32());

        var (modelsStatus, models) = await t.GetAsync("/v1/models");
        Assert.Equal(200, modelsStatus);
        var list = JsonDocument.Parse(models).RootElement;
        Assert.Equal("list", list.GetProperty("object").GetString());
        Assert.Equal(MLNetTestData.Default.ModelId, list.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal("model", list.GetProperty("data")[0].GetProperty("object").GetString());
        Assert.Equal(200, (await t.GetAsync($"/v1/models/{Uri.EscapeDataString(MLNetTestData.Default.ModelId)}")).Status);
        Assert.Equal(404, (await t.GetAsync("/v1/models/nope")).Status);
    }

    [Fact]
    public async Task ConcurrentMixedRequests_AreBatchedTogether_AndGetTheEngineVectors()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { MaxBatchSize = 16, MaxBatchTokens = 1024 });
        var words = "the quick brown fox jumps over a lazy dog while seven small children watch from the old wooden bridge".Split(' ');
        var requests = Enumerable.Range(0, 24).Select(r =>
            Enumerable.Range(0, 1 + r % 5).Select(k => string.Join(' ', words.Skip((r + k) % 7).Take(1 + (r * 7 + k * 3) % 17)) + $" {r}.{k}").ToArray()).ToArray();
        var engine = new EmbeddingEngine(MLNetTestData.Default);

        using (var gate = new WorkerGate(t.Service.Batcher))
        {
            var tasks = requests.Select((texts, r) => r % 3 == 2
                ? t.PostAsync("/embed", JsonSerializer.Serialize(new { inputs = texts }))
                : t.PostAsync("/v1/embeddings", JsonSerializer.Serialize(new { input = texts, encoding_format = "float" }))).ToArray();
            // Hold the worker until every request is queued, so batches mix rows of many requests.
            await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == requests.Sum(x => x.Length), "all rows queued");
            gate.Open();
            var answers = await Task.WhenAll(tasks);
            for (int r = 0; r < requests.Length; r++)
            {
                Assert.Equal(200, answers[r].Status);
                var expected = engine.Embed(requests[r]);
                var got = r % 3 == 2
                    ? answers[r].Body.EnumerateArray().Select(TestServer.Floats).ToArray()
                    : answers[r].Body.GetProperty("data").EnumerateArray().Select(d => TestServer.Floats(d.GetProperty("embedding"))).ToArray();
                Assert.Equal(expected.Length, got.Length);
                for (int i = 0; i < expected.Length; i++) Assert.True(TestServer.Cosine(got[i], expected[i]) >= 0.99999, $"request {r} text {i}");
            }
        }
        int rows = requests.Sum(x => x.Length);
        Assert.Equal(rows, (int)t.Service.Metrics.RowsProcessed);
        Assert.True(t.Service.Metrics.Batches < requests.Length, $"{t.Service.Metrics.Batches} batches for {requests.Length} requests: no batching across requests");
    }

    [Fact]
    public async Task TeiEmbed_NormalizeAndTruncate()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { MaxInputTokens = 12 });
        var engine = new EmbeddingEngine(MLNetTestData.Default);
        string longText = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";

        var (status, body, _) = await t.PostAsync("/embed", """{"inputs": "Dogs run.", "normalize": false}""");
        Assert.Equal(200, status);
        var raw = TestServer.Floats(body[0]);
        var expectedRaw = engine.Embed(["Dogs run."], new EmbeddingOptions { Normalize = false })[0];
        for (int i = 0; i < raw.Length; i++) Assert.Equal(expectedRaw[i], raw[i], 4);
        Assert.NotEqual(1.0, Math.Sqrt(raw.Sum(x => (double)x * x)), 3);

        (status, body, _) = await t.PostAsync("/embed", JsonSerializer.Serialize(new { inputs = new[] { "short", longText } }));
        Assert.Equal(400, status);
        TestServer.AssertError(body, "inputs[1]");
        (status, body, _) = await t.PostAsync("/v1/embeddings", JsonSerializer.Serialize(new { input = longText }));
        Assert.Equal(400, status);
        TestServer.AssertError(body, "input");

        (status, body, _) = await t.PostAsync("/embed", JsonSerializer.Serialize(new { inputs = new[] { "short", longText }, truncate = true }));
        Assert.Equal(200, status);
        var truncated = engine.Embed([longText], new EmbeddingOptions { MaxLength = 12 })[0];   // what `ullme embed --max-length 12` gives
        Assert.True(TestServer.Cosine(TestServer.Floats(body[1]), truncated) >= 0.99999);
    }
}

using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Server;

/// <summary>/rerank (representation, generation, mix) and /score give what the engine's Reranker and Score give.</summary>
[Collection(TorchCollection.Name)]
public sealed class ServerRerankScoreTests
{
    private static readonly string[] Passages = ["the cat sat on the mat.", "a dog ran in the park.", "cats like mats!", "stock prices fell."];

    [Fact]
    public async Task RerankByRepresentation_OnTheDefaultModel_MatchesTheReranker_BestFirst()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var expected = new Reranker(new EmbeddingEngine(MLNetTestData.Default)).Rerank("a cat on a mat", Passages);
        var (status, body, _) = await t.PostAsync("/rerank", JsonSerializer.Serialize(new { query = "a cat on a mat", texts = Passages, return_text = true }));
        Assert.Equal(200, status);
        var ranks = body.EnumerateArray().ToArray();
        Assert.Equal(Passages.Length, ranks.Length);
        for (int r = 0; r < ranks.Length; r++)
        {
            Assert.Equal(expected[r].Index, ranks[r].GetProperty("index").GetInt32());
            Assert.Equal(expected[r].Score, ranks[r].GetProperty("score").GetDouble(), 5);
            Assert.Equal(Passages[expected[r].Index], ranks[r].GetProperty("text").GetString());
        }
        (status, body, _) = await t.PostAsync("/rerank", JsonSerializer.Serialize(new { query = "q", texts = Passages }));
        Assert.False(body[0].TryGetProperty("text", out _));
    }

    [Fact]
    public async Task RerankByGenerationAndMix_AndScore_OnATinyDecoder_MatchTheEngine()
    {
        var model = TinyScoringModel.Model;
        await using var t = await TestServer.StartAsync(model);
        var engine = new EmbeddingEngine(model);
        foreach (var (by, w) in new[] { (RerankBy.Generation, 0.5), (RerankBy.Mix, 0.3) })
        {
            var expected = new Reranker(engine, new RerankOptions { By = by, MixWeight = w }).Rerank("where is the cat?", Passages);
            var (status, body, _) = await t.PostAsync("/rerank", JsonSerializer.Serialize(new { query = "where is the cat?", texts = Passages, by = by.ToString().ToLowerInvariant(), mix_weight = w }));
            Assert.True(status == 200, body.ToString());
            var ranks = body.EnumerateArray().ToArray();
            for (int r = 0; r < ranks.Length; r++)
            {
                Assert.Equal(expected[r].Index, ranks[r].GetProperty("index").GetInt32());
                Assert.Equal(expected[r].Score, ranks[r].GetProperty("score").GetDouble(), 4);
            }
        }

        var requests = new[] { new ScoreRequest("once upon a time", " there was a cat."), new ScoreRequest("", "hello!") };
        var scores = engine.Score(requests);
        var ids = engine.ToTokenRequest(requests[0]);
        var (s, b, _) = await t.PostAsync("/score", JsonSerializer.Serialize(new
        {
            inputs = new object[]
            {
                new { prefix = requests[0].Prefix, continuation = requests[0].Continuation },
                new { prefix = requests[1].Prefix, continuation = requests[1].Continuation },
                new { input_ids = ids.InputIds, score_from = ids.ScoreFrom },
            },
        }));
        Assert.True(s == 200, b.ToString());
        for (int i = 0; i < 3; i++)
        {
            var want = scores[i == 2 ? 0 : i];
            var lp = TestServer.Floats(b[i].GetProperty("token_logprobs"));
            Assert.Equal(want.TokenLogProbs.Length, lp.Length);
            for (int k = 0; k < lp.Length; k++) Assert.Equal(want.TokenLogProbs[k], lp[k], 4);
            Assert.Equal(want.Sum, b[i].GetProperty("sum").GetDouble(), 4);
            Assert.Equal(want.Mean, b[i].GetProperty("mean").GetDouble(), 4);
        }

        (s, b, _) = await t.PostAsync("/score", """{"inputs": [{"prefix": "a"}]}""");
        Assert.Equal(400, s);
        TestServer.AssertError(b, "inputs[0].continuation");
        (s, b, _) = await t.PostAsync("/score", """{"inputs": {"input_ids": [1, 5, 6], "score_from": 4}}""");
        Assert.Equal(400, s);
        TestServer.AssertError(b, "inputs.score_from");
    }

    [Fact]
    public async Task Score_OnAnEncoder_Is400()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var (status, body, _) = await t.PostAsync("/score", """{"inputs": {"prefix": "a", "continuation": "b"}}""");
        Assert.Equal(400, status);
        TestServer.AssertError(body);
    }
}

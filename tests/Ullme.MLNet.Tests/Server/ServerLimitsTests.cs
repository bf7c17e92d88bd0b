using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ullme.MLNet.Server;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Server;

/// <summary>Bad input and limits: each a JSON error body in OpenAI's shape, the server unharmed.</summary>
[Collection(TorchCollection.Name)]
public sealed class ServerLimitsTests
{
    [Fact]
    public async Task MalformedJsonAndWrongTypes_Are400NamingTheField_AndTheServerStaysUp()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var cases = new (string Path, string Body, string? Param)[]
        {
            ("/v1/embeddings", "{\"input\": [\"a\",", null),
            ("/v1/embeddings", "[1, 2]", null),
            ("/v1/embeddings", "", null),
            ("/v1/embeddings", "{}", "input"),
            ("/v1/embeddings", "{\"input\": 5}", "input"),
            ("/v1/embeddings", "{\"input\": []}", "input"),
            ("/v1/embeddings", "{\"input\": [\"a\", 3]}", "input[1]"),
            ("/v1/embeddings", "{\"input\": [[1, 2], [3, \"x\"]]}", "input[1][1]"),
            ("/v1/embeddings", "{\"input\": [[1, 2], []]}", "input[1]"),
            ("/v1/embeddings", "{\"input\": [1, 2.5]}", "input[1]"),
            ("/v1/embeddings", "{\"input\": [1, 99999999]}", "input"),
            ("/v1/embeddings", "{\"input\": [-1]}", "input"),
            ("/v1/embeddings", "{\"input\": \"a\", \"model\": 3}", "model"),
            ("/v1/embeddings", "{\"input\": \"a\", \"encoding_format\": \"int8\"}", "encoding_format"),
            ("/v1/embeddings", "{\"input\": \"a\", \"dimensions\": 0}", "dimensions"),
            ("/v1/embeddings", "{\"input\": \"a\", \"dimensions\": 385}", "dimensions"),
            ("/v1/embeddings", "{\"input\": \"a\", \"dimensions\": \"8\"}", "dimensions"),
            ("/v1/embeddings", "{\"input\": " + new string('[', 40) + new string(']', 40) + "}", null),
            ("/embed", "{\"inputs\": \"a\", \"normalize\": \"yes\"}", "normalize"),
            ("/embed", "{\"inputs\": \"a\", \"truncate\": 1}", "truncate"),
            ("/rerank", "{\"texts\": [\"a\"]}", "query"),
            ("/rerank", "{\"query\": \"q\", \"texts\": \"a\"}", "texts"),
            ("/rerank", "{\"query\": \"q\", \"texts\": []}", "texts"),
            ("/rerank", "{\"query\": \"q\", \"texts\": [\"a\", null]}", "texts[1]"),
            ("/rerank", "{\"query\": \"q\", \"texts\": [\"a\"], \"by\": \"magic\"}", "by"),
            ("/rerank", "{\"query\": \"q\", \"texts\": [\"a\"], \"by\": \"generation\"}", "by"),
            ("/rerank", "{\"query\": \"q\", \"texts\": [\"a\"], \"by\": \"mix\", \"mix_weight\": 2}", "mix_weight"),
        };
        foreach (var (path, json, param) in cases)
        {
            var (status, body, _) = await t.PostAsync(path, json);
            Assert.True(status == 400, $"{path} {json}: {status}");
            var got = TestServer.AssertError(body);
            if (param is not null) Assert.True(param == got, $"{path} {json}: param {got}, expected {param}");
        }
        var (s, b, _) = await t.PostAsync("/v1/embeddings", "{\"input\": \"still fine\"}");
        Assert.Equal(200, s);
        Assert.Equal(384, b.GetProperty("data")[0].GetProperty("embedding").GetArrayLength());
        Assert.Equal(404, (await t.PostAsync("/v2/nothing", "{}")).Status);
    }

    [Fact]
    public async Task BodyOverTheLimit_And_TooManyInputs_Are413()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { MaxBodyBytes = 1000, MaxClientBatchSize = 4 });
        var (status, body, _) = await t.PostAsync("/v1/embeddings", JsonSerializer.Serialize(new { input = new string('a', 2000) }));
        Assert.Equal(413, status);
        TestServer.AssertError(body);

        // Without Content-Length (chunked), the limit holds too.
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/embeddings")
        {
            Content = new PushStreamContent(JsonSerializer.Serialize(new { input = new string('b', 5000) })),
        };
        using var response = await t.Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        TestServer.AssertError(JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement);

        (status, body, _) = await t.PostAsync("/v1/embeddings", JsonSerializer.Serialize(new { input = new[] { "a", "b", "c", "d", "e" } }));
        Assert.Equal(413, status);
        TestServer.AssertError(body, "input");
        Assert.Equal(200, (await t.PostAsync("/v1/embeddings", JsonSerializer.Serialize(new { input = new[] { "a", "b", "c", "d" } }))).Status);
    }

    /// <summary>Content without a length: sent chunked.</summary>
    private sealed class PushStreamContent(string text) : HttpContent
    {
        private readonly byte[] _bytes = Encoding.UTF8.GetBytes(text);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            for (int i = 0; i < _bytes.Length; i += 100) await stream.WriteAsync(_bytes.AsMemory(i, Math.Min(100, _bytes.Length - i)));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    [Fact]
    public async Task FullQueue_Is429WithRetryAfter_AndOthersStillGetTheirResults()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { MaxQueue = 3 });
        using var gate = new WorkerGate(t.Service.Batcher);
        var first = t.PostAsync("/v1/embeddings", """{"input": ["a", "b"]}""");
        await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == 2, "2 rows queued");
        var (status, body, response) = await t.PostAsync("/v1/embeddings", """{"input": ["c", "d"]}""");
        Assert.Equal(429, status);
        TestServer.AssertError(body);
        Assert.True(response.Headers.RetryAfter?.Delta is { } delta && delta >= TimeSpan.FromSeconds(1), "Retry-After");
        var third = t.PostAsync("/v1/embeddings", """{"input": "e"}""");   // fits: 3 of 3
        await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == 3, "3 rows queued");
        gate.Open();
        Assert.Equal(200, (await first).Status);
        Assert.Equal(200, (await third).Status);
        var (metricsStatus, metrics) = await t.GetAsync("/metrics");
        Assert.Equal(200, metricsStatus);
        Assert.Contains("ullme_requests_total{route=\"/v1/embeddings\",status=\"429\"} 1", metrics);
    }

    [Fact]
    public async Task ApiKey_MissingOrWrongIs401_RightKeyPasses_HealthStaysOpen()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default, new UllmeServerOptions { ApiKey = "correct-horse" });
        foreach (string? key in new[] { null, "correct-hors", "correct-horsf", "a-much-longer-key-than-the-real-one", "" })
        {
            var (status, body, response) = await t.PostAsync("/v1/embeddings", """{"input": "x"}""", key);
            Assert.True(status == 401, $"key '{key}': {status}");
            TestServer.AssertError(body);
            Assert.Contains("Bearer", response.Headers.WwwAuthenticate.ToString());
        }
        Assert.Equal(401, (await t.GetAsync("/v1/models")).Status);
        Assert.Equal(401, (await t.GetAsync("/metrics")).Status);
        Assert.Equal(200, (await t.PostAsync("/v1/embeddings", """{"input": "x"}""", "correct-horse")).Status);
        Assert.Equal(200, (await t.GetAsync("/metrics", "correct-horse")).Status);
        Assert.Equal(200, (await t.GetAsync("/health")).Status);
    }

    [Fact]
    public async Task OpenServer_BindsLoopbackUnlessAHostIsGiven()
    {
        Assert.Equal(IPAddress.Loopback, new UllmeServerOptions().BindAddress());
        Assert.True(new UllmeServerOptions().IsLoopback);
        Assert.Equal(IPAddress.Any, new UllmeServerOptions { Host = "0.0.0.0" }.BindAddress());
        Assert.False(new UllmeServerOptions { Host = "0.0.0.0" }.IsLoopback);
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        Assert.StartsWith("http://127.0.0.1:", t.Server.Urls.Single());
    }

    [Fact]
    public async Task ClientThatDisconnects_HasItsPendingTextsDropped()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        using var gate = new WorkerGate(t.Service.Batcher);
        using var cts = new CancellationTokenSource();
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/embeddings")
        {
            Content = new StringContent("""{"input": ["one", "two", "three", "four"]}""", Encoding.UTF8, "application/json"),
        };
        var pending = t.Http.SendAsync(request, cts.Token);
        await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == 4 && gate.WorkerWaiting, "4 rows queued");
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == 0, "rows dropped");
        Assert.Equal(4, t.Service.Metrics.Dropped);
        gate.Open();
        var (status, _, _) = await t.PostAsync("/v1/embeddings", """{"input": "five"}""");
        Assert.Equal(200, status);
        Assert.Equal(1, (int)t.Service.Metrics.RowsProcessed);   // only "five" reached the model
    }
    /// <summary>A fresh connection each time (what a load balancer's or Kubernetes' probe opens): status code, or
    /// null when the connection is refused.</summary>
    private static async Task<(int? Status, string Text)> FreshGetAsync(Uri baseUri, string path)
    {
        using var http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(30) };
        try
        {
            using var response = await http.GetAsync(path);
            return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        catch (HttpRequestException)
        {
            return (null, "");
        }
    }

    [Fact]
    public async Task Stop_Drains_HealthIs503_NewRequestsRefused_InFlightFinish_ThenTheListenerCloses()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var gate = new WorkerGate(t.Service.Batcher);
        Task? stop = null;
        try
        {
            Assert.Equal(200, (await FreshGetAsync(t.BaseUri, "health")).Status);
            var inFlight = t.PostAsync("/v1/embeddings", """{"input": ["held in the queue", "while the server stops"]}""");
            await TestServer.WaitUntil(() => t.Service.Batcher.QueueDepth == 2 && gate.WorkerWaiting, "2 rows queued");

            stop = t.Server.StopAsync();   // what SIGTERM triggers
            await TestServer.WaitUntil(() => t.Service.Stopping, "the drain to begin");
            // Draining: the listener is open, the readiness probe fails with 503 (not 200, not a refused connection) ...
            var (health, healthBody) = await FreshGetAsync(t.BaseUri, "health");
            Assert.True(health == 503, $"/health during the drain: {health?.ToString() ?? "connection refused"}");
            Assert.Contains("shutting_down", healthBody);
            // ... new work is refused with 503 (on a fresh connection and on the client's open one) ...
            using (var fresh = new HttpClient { BaseAddress = t.BaseUri, Timeout = TimeSpan.FromSeconds(30) })
            using (var refused = await fresh.PostAsync("v1/embeddings", new StringContent("""{"input": "late"}""", Encoding.UTF8, "application/json")))
                Assert.Equal(503, (int)refused.StatusCode);
            Assert.Equal(503, (await t.PostAsync("/v1/embeddings", """{"input": "late too"}""")).Status);
            // ... and the stop waits for the request in flight.
            await Task.Delay(200);
            Assert.False(stop.IsCompleted, "the stop finished while a request was still in flight");
            Assert.False(inFlight.IsCompleted);

            gate.Open();
            var (status, body, _) = await inFlight;
            Assert.Equal(200, status);
            Assert.Equal(2, body.GetProperty("data").GetArrayLength());
            await stop.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Null((await FreshGetAsync(t.BaseUri, "health")).Status);   // stopped: the listener is closed
        }
        finally
        {
            gate.Dispose();
            if (stop is not null) await stop.WaitAsync(TimeSpan.FromMinutes(1));
        }
    }
}

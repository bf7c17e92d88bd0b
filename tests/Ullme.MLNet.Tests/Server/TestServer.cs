using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Server;

namespace Ullme.MLNet.Tests.Server;

/// <summary>A real Kestrel server in this process on 127.0.0.1 and a free port, with an HttpClient pointed at it.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    private TestServer(UllmeServer server, Uri baseUri)
    {
        Server = server;
        BaseUri = baseUri;
        Http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromMinutes(5) };
    }

    public UllmeServer Server { get; }
    public Uri BaseUri { get; }
    public HttpClient Http { get; }
    internal UllmeService Service => Server.Service;

    public static async Task<TestServer> StartAsync(UllmeModel model, UllmeServerOptions? options = null)
    {
        var server = UllmeServer.Create(model, (options ?? new UllmeServerOptions()) with { Port = 0 });
        await server.StartAsync();
        string url = server.Urls.Single();
        return new TestServer(server, new Uri(url.TrimEnd('/') + "/"));
    }

    public async Task<(int Status, JsonElement Body, HttpResponseMessage Response)> PostAsync(string path, string json, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path.TrimStart('/')) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (apiKey is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        var response = await Http.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        var body = text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
        return ((int)response.StatusCode, body, response);
    }

    public async Task<(int Status, string Text)> GetAsync(string path, string? apiKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path.TrimStart('/'));
        if (apiKey is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        using var response = await Http.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>Asserts an OpenAI-shaped error body and returns its <c>param</c>.</summary>
    public static string? AssertError(JsonElement body, string? expectedParam = null)
    {
        var error = body.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("type").GetString()));
        Assert.True(error.TryGetProperty("code", out _));
        string? param = error.GetProperty("param").ValueKind == JsonValueKind.String ? error.GetProperty("param").GetString() : null;
        if (expectedParam is not null) Assert.Equal(expectedParam, param);
        return param;
    }

    public static float[] Floats(JsonElement array) => array.EnumerateArray().Select(x => x.GetSingle()).ToArray();

    public static double Cosine(IReadOnlyList<float> a, IReadOnlyList<float> b)
    {
        Assert.Equal(a.Count, b.Count);
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Count; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>Waits (bounded) until the condition holds.</summary>
    public static async Task WaitUntil(Func<bool> condition, string what, int timeoutMs = 30000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(10);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }
}

/// <summary>Blocks the model's worker thread (through the batcher's test hook) until released.</summary>
internal sealed class WorkerGate : IDisposable
{
    private readonly ManualResetEventSlim _open = new(false);
    private readonly RequestBatcher _batcher;
    private int _waiting;

    public WorkerGate(RequestBatcher batcher)
    {
        _batcher = batcher;
        batcher.BeforeBatch = () =>
        {
            Interlocked.Increment(ref _waiting);
            _open.Wait(TimeSpan.FromMinutes(2));
            Interlocked.Decrement(ref _waiting);
        };
    }

    /// <summary>Whether the worker is parked in the gate.</summary>
    public bool WorkerWaiting => Volatile.Read(ref _waiting) > 0;

    public void Open() => _open.Set();

    public void Dispose()
    {
        _open.Set();
        _batcher.BeforeBatch = null;
    }
}

using System.Net;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Server;

/// <summary>
/// Settings of an <see cref="UllmeServer"/> (the flags of <c>ullme serve</c>). Defaults follow
/// text-embeddings-inference where the issue is silent (payload limit 2 MB, token budget per batch).
/// </summary>
public sealed record UllmeServerOptions
{
    /// <summary>Address to bind. Null (default) = loopback (127.0.0.1): the server is reachable from this machine
    /// only unless a host is given. "0.0.0.0" / "::" = every interface, "localhost" = loopback.</summary>
    public string? Host { get; init; }

    /// <summary>TCP port; 0 picks a free one (read it from <see cref="UllmeServer.Urls"/>). Default 8080.</summary>
    public int Port { get; init; } = 8080;

    /// <summary>The model name reported by <c>/v1/models</c> and in responses; default the model's id.</summary>
    public string? ModelName { get; init; }

    /// <summary>Padded tokens per forward pass (rows × longest row). Default 16384.</summary>
    public int MaxBatchTokens { get; init; } = 16384;

    /// <summary>Rows (texts or scored sequences) per forward pass. Default 128.</summary>
    public int MaxBatchSize { get; init; } = 128;

    /// <summary>Rows waiting for the model, all requests together; a request that does not fit is answered 429 with
    /// Retry-After. Default 1024.</summary>
    public int MaxQueue { get; init; } = 1024;

    /// <summary>Tokens per input, special tokens (and the instruction) included; longer inputs are a 400, or are
    /// truncated where the request says <c>truncate: true</c>. Default: the model's maximum length.</summary>
    public int? MaxInputTokens { get; init; }

    /// <summary>Inputs per request (OpenAI's limit is 2048). More is a 413. Default 2048.</summary>
    public int MaxClientBatchSize { get; init; } = 2048;

    /// <summary>Request body limit in bytes; larger bodies are a 413. Default 2,000,000 (TEI's payload limit).</summary>
    public long MaxBodyBytes { get; init; } = 2_000_000;

    /// <summary>API key clients must send as <c>Authorization: Bearer KEY</c>. Null = open server.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Pooling of embeddings; default the model's.</summary>
    public PoolingMode? Pooling { get; init; }

    /// <summary>Attention of embeddings; default the model's (bidirectional).</summary>
    public AttentionMode? Attention { get; init; }

    /// <summary>Instruction placed before every embedded input (attended to, not pooled) and before the query of a
    /// rerank; it also fills <c>{instruction}</c> of the generation prompt.</summary>
    public string? Instruction { get; init; }

    /// <summary>Whether <c>/v1/embeddings</c> returns L2-normalised vectors (as OpenAI's are). Default true;
    /// <c>/embed</c> takes its own <c>normalize</c> field.</summary>
    public bool Normalize { get; init; } = true;

    /// <summary>libtorch intra-op threads, applied on the model's worker thread; null = libtorch's default.</summary>
    public int? Threads { get; init; }

    /// <summary>How long a stop waits for requests in flight before they are aborted. Default 30 s.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The address <see cref="Host"/> resolves to (loopback when null).</summary>
    public IPAddress BindAddress()
    {
        string? host = Host?.Trim();
        if (string.IsNullOrEmpty(host) || host.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        if (host is "*" or "+") return IPAddress.Any;
        if (IPAddress.TryParse(host, out var address)) return address;
        try
        {
            var found = Dns.GetHostAddresses(host);
            if (found.Length > 0) return found[0];
        }
        catch (System.Net.Sockets.SocketException)
        {
        }
        throw new UllmeException($"--host '{Host}' is neither an IP address nor a name this machine can resolve.");
    }

    /// <summary>Whether the bound address is reachable only from this machine.</summary>
    public bool IsLoopback => IPAddress.IsLoopback(BindAddress());

    /// <summary>Checks every setting; the message names the flag.</summary>
    public void Validate()
    {
        if (Port is < 0 or > 65535) throw new UllmeException($"--port must be between 0 and 65535 (got {Port}).");
        if (MaxBatchTokens < 1) throw new UllmeException($"--max-batch-tokens must be at least 1 (got {MaxBatchTokens}).");
        if (MaxBatchSize < 1) throw new UllmeException($"--max-batch-size must be at least 1 (got {MaxBatchSize}).");
        if (MaxQueue < 1) throw new UllmeException($"--max-queue must be at least 1 (got {MaxQueue}).");
        if (MaxInputTokens is < 1) throw new UllmeException($"--max-input-tokens must be at least 1 (got {MaxInputTokens}).");
        if (MaxInputTokens is { } m && m > MaxBatchTokens)
            throw new UllmeException($"--max-input-tokens ({m}) must not exceed --max-batch-tokens ({MaxBatchTokens}): a longest input must fit in one batch.");
        if (MaxClientBatchSize < 1) throw new UllmeException($"--max-client-batch-size must be at least 1 (got {MaxClientBatchSize}).");
        if (MaxBodyBytes < 1) throw new UllmeException($"--max-body-bytes must be at least 1 (got {MaxBodyBytes}).");
        if (ApiKey is not null && ApiKey.Trim().Length == 0) throw new UllmeException("the API key is empty.");
        if (Threads is { } threads)
        {
            try
            {
                new Inference.ModelLoadOptions { Threads = threads }.Validate();   // the engine's rule: 1 to the machine's cores
            }
            catch (UllmeException e) when (e.Option is not null)
            {
                throw e.Under(nameof(UllmeServerOptions));
            }
        }
        if (ShutdownTimeout < TimeSpan.Zero) throw new UllmeException($"the shutdown timeout must not be negative (got {ShutdownTimeout}).");
        _ = BindAddress();
    }
}

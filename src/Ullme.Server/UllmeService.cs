using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Server;

/// <summary>
/// What the endpoints share: the model, its engine (used only by the batcher's worker thread), the batcher, the
/// metrics, the limits, and the API key check. Request threads tokenize here; they never touch torch.
/// </summary>
internal sealed class UllmeService : IDisposable
{
    private readonly byte[]? _keyHash;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _stopping;
    private int _active;

    public UllmeService(UllmeModel model, UllmeServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Model = model;
        Options = options;
        Logger = logger;
        Engine = new EmbeddingEngine(model);
        int defaultMax = Math.Min(model.Defaults.MaxLength, options.MaxBatchTokens);
        Embedding = Engine.Resolve(new EmbeddingOptions
        {
            Pooling = options.Pooling,
            Attention = options.Attention,
            MaxLength = options.MaxInputTokens ?? defaultMax,
            BatchSize = options.MaxBatchSize,
            Normalize = false,
        });
        MaxInputTokens = Embedding.MaxLength;
        ModelName = string.IsNullOrWhiteSpace(options.ModelName) ? model.ModelId : options.ModelName.Trim();
        CreatedUnixSeconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        _keyHash = options.ApiKey is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(options.ApiKey.Trim()));
        Metrics = new ServerMetrics { ModelName = ModelName, QueueCapacity = options.MaxQueue };
        Batcher = new RequestBatcher(Engine, Embedding, options.MaxBatchTokens, options.MaxBatchSize, options.MaxQueue, options.Threads, Metrics, logger);
        Metrics.QueueDepth = () => Batcher.QueueDepth;
        if (SupportsGeneration)
        {
            var relevance = new RelevanceOptions { Instruction = options.Instruction };
            Generation = new RelevanceScorer(Engine, relevance);
            GenerationTruncating = new RelevanceScorer(Engine, relevance with { MaxGenerationLength = Math.Max(2, MaxInputTokens) });
        }
    }

    public UllmeModel Model { get; }
    public UllmeServerOptions Options { get; }
    public ILogger Logger { get; }
    public EmbeddingEngine Engine { get; }
    public ResolvedEmbeddingOptions Embedding { get; }
    public int MaxInputTokens { get; }
    public string ModelName { get; }
    public long CreatedUnixSeconds { get; }
    public ServerMetrics Metrics { get; }
    public RequestBatcher Batcher { get; }

    /// <summary>Builds generation-scoring sequences (null for encoders); the second one cuts them to the input limit.</summary>
    public RelevanceScorer? Generation { get; }
    public RelevanceScorer? GenerationTruncating { get; }

    public bool SupportsGeneration => Model.Backbone.HasLanguageModelHead && Model.Backbone.SupportsCausal;

    public bool Stopping => Volatile.Read(ref _stopping) != 0;

    /// <summary>Requests admitted to a work route and not yet answered.</summary>
    public int ActiveRequests => Volatile.Read(ref _active);

    /// <summary>From now on, <c>/health</c> and new requests are answered 503 (those already admitted finish).</summary>
    public void BeginStop()
    {
        if (Interlocked.Exchange(ref _stopping, 1) == 0 && Volatile.Read(ref _active) == 0) _drained.TrySetResult();
    }

    /// <summary>Admits a request to a work route: false once stopping (the request is then answered 503). Each
    /// admitted request calls <see cref="Leave"/> when it is answered.</summary>
    public bool TryEnter()
    {
        Interlocked.Increment(ref _active);
        if (Volatile.Read(ref _stopping) == 0) return true;
        Leave();
        return false;
    }

    public void Leave()
    {
        if (Interlocked.Decrement(ref _active) == 0 && Volatile.Read(ref _stopping) != 0) _drained.TrySetResult();
    }

    /// <summary>The drain: <see cref="BeginStop"/>, then completes when every admitted request has been answered,
    /// or when <paramref name="cancellationToken"/> (the shutdown timeout) fires first.</summary>
    public Task DrainAsync(CancellationToken cancellationToken)
    {
        BeginStop();
        return _drained.Task.WaitAsync(cancellationToken);
    }

    /// <summary>401 unless the request carries the configured key (<c>Authorization: Bearer KEY</c>). The comparison
    /// is of SHA-256 digests with <see cref="CryptographicOperations.FixedTimeEquals"/>: constant time, and the
    /// key's length does not leak either.</summary>
    public void Authenticate(HttpContext context)
    {
        if (_keyHash is null) return;
        string? header = context.Request.Headers.Authorization;
        const string scheme = "Bearer ";
        if (string.IsNullOrEmpty(header) || !header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
            throw new ApiException(StatusCodes.Status401Unauthorized,
                "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer KEY'.", code: "missing_api_key");
        var given = SHA256.HashData(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()));
        if (!CryptographicOperations.FixedTimeEquals(given, _keyHash))
            throw new ApiException(StatusCodes.Status401Unauthorized, "Incorrect API key provided.", code: "invalid_api_key");
    }

    /// <summary>
    /// Model inputs for request inputs: texts as <see cref="EmbeddingEngine.Encode"/> builds them (special tokens,
    /// <paramref name="instruction"/>), token ids exactly as given. An input over the limit is a 400 naming it, or is
    /// cut (texts lose their end, as <c>ullme embed</c> cuts them) when <paramref name="truncate"/>.
    /// </summary>
    public EncodedText[] Encode(IReadOnlyList<RequestInput> inputs, bool truncate, string? instruction, out long tokens)
    {
        var rows = new EncodedText[inputs.Count];
        tokens = 0;
        for (int i = 0; i < inputs.Count; i++)
        {
            rows[i] = Encode(inputs[i], truncate, instruction);
            tokens += rows[i].Length;
        }
        return rows;
    }

    public EncodedText Encode(RequestInput input, bool truncate, string? instruction)
    {
        string at = input.Path;
        try
        {
            if (input.Ids is { } ids)
            {
                if (ids.Length > MaxInputTokens)
                {
                    if (!truncate) throw TooLong(at, ids.Length);
                    ids = ids[..MaxInputTokens];
                }
                Engine.ValidateTokenIds(ids, at);
                return EncodedText.FromIds(ids);
            }
            var row = TextEncoding.Encode(Model.Tokenizer, input.Text!, instruction, MaxInputTokens);
            if (row.Truncated && !truncate) throw TooLong(at, null);
            return row;
        }
        catch (UllmeException e)
        {
            throw ApiException.BadField(at, e.Message);
        }
    }

    public ApiException TooLong(string at, int? tokens) => ApiException.BadField(at,
        $"'{at}' is longer than this server's limit of {MaxInputTokens} tokens{(tokens is { } t ? $" (it has {t})" : "")}" +
        " (--max-input-tokens); shorten it, or send \"truncate\": true where the endpoint takes it.", "input_too_long");

    /// <summary>413 when a request brings more inputs than one request may.</summary>
    public void CheckCount(int count, string path)
    {
        int max = Math.Min(Options.MaxClientBatchSize, Options.MaxQueue);
        if (count > max)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge,
                $"'{path}' has {count} items; this server takes at most {max} per request " +
                (Options.MaxClientBatchSize <= Options.MaxQueue ? "(--max-client-batch-size)." : "(--max-queue)."),
                code: "too_many_inputs", param: path);
    }

    public void Dispose() => Batcher.Dispose();
}

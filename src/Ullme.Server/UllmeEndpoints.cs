using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Server;

/// <summary>
/// Hosting the Ullme endpoints in any ASP.NET Core application:
/// <code>
/// using var model = UllmeModel.Load("default");
/// var builder = WebApplication.CreateBuilder(args);
/// builder.Services.AddUllme(model, new UllmeServerOptions { MaxQueue = 256 });
/// var app = builder.Build();
/// app.MapUllmeEndpoints();          // or app.MapGroup("/ai").MapUllmeEndpoints()
/// app.Run();
/// </code>
/// Routes: <c>POST /v1/embeddings</c>, <c>GET /v1/models</c>, <c>GET /v1/models/{id}</c> (OpenAI's shapes);
/// <c>POST /embed</c>, <c>POST /rerank</c>, <c>POST /score</c>, <c>GET /health</c>, <c>GET /metrics</c>
/// (text-embeddings-inference's shapes). With an API key every route but <c>/health</c> needs it.
/// </summary>
public static class UllmeEndpoints
{
    /// <summary>Registers the model's service (engine, batching worker, metrics). The model stays the caller's to
    /// dispose, after the application has stopped.</summary>
    public static IServiceCollection AddUllme(this IServiceCollection services, UllmeModel model, UllmeServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(model);
        var o = options ?? new UllmeServerOptions();
        o.Validate();
        services.AddSingleton(sp => new UllmeService(model, o,
            sp.GetService<ILoggerFactory>()?.CreateLogger("Ullme.MLNet.Server") ?? NullLogger.Instance));
        // The drain on stop: /health 503 and new requests refused while those in flight finish, before Kestrel stops.
        services.AddHostedService(sp => new UllmeDrainService(sp.GetRequiredService<UllmeService>()));
        return services;
    }

    /// <summary>Maps the routes (see the class remarks). Call <see cref="AddUllme"/> first.</summary>
    public static IEndpointRouteBuilder MapUllmeEndpoints(this IEndpointRouteBuilder endpoints)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var service = endpoints.ServiceProvider.GetService<UllmeService>()
            ?? throw new InvalidOperationException("Call services.AddUllme(model, options) before MapUllmeEndpoints().");
        endpoints.ServiceProvider.GetService<IHostApplicationLifetime>()?.ApplicationStopping.Register(service.BeginStop);
        endpoints.MapPost("/v1/embeddings", Wrap(service, "/v1/embeddings", true, OpenAiEmbeddings));
        endpoints.MapGet("/v1/models", Wrap(service, "/v1/models", true, Models));
        endpoints.MapGet("/v1/models/{**id}", Wrap(service, "/v1/models/{id}", true, Model));
        endpoints.MapPost("/embed", Wrap(service, "/embed", true, TeiEmbed));
        endpoints.MapPost("/rerank", Wrap(service, "/rerank", true, Rerank));
        endpoints.MapPost("/score", Wrap(service, "/score", true, Score));
        endpoints.MapGet("/health", Wrap(service, "/health", false, Health));
        endpoints.MapGet("/metrics", Wrap(service, "/metrics", true, Metrics));
        return endpoints;
    }

    /// <summary>A JSON 404 for routes that do not exist (used by <see cref="UllmeServer"/>).</summary>
    internal static RequestDelegate NotFound(UllmeService service) => Wrap(service, "other", false, (context, _) =>
        throw new ApiException(StatusCodes.Status404NotFound, $"No route {context.Request.Method} {context.Request.Path}.", code: "not_found"));

    private delegate Task Handler(HttpContext context, UllmeService service);

    /// <summary>Authentication, error bodies (OpenAI's shape), and metrics around a handler.</summary>
    private static RequestDelegate Wrap(UllmeService service, string route, bool authenticate, Handler handler) => async context =>
    {
        long start = Stopwatch.GetTimestamp();
        int status = StatusCodes.Status500InternalServerError;
        bool admitted = false;
        try
        {
            if (authenticate) service.Authenticate(context);
            // Work routes are admitted (and counted for the drain on stop); /health and /metrics answer while stopping.
            if (route is not ("/health" or "/metrics"))
            {
                if (!service.TryEnter()) throw new ServerStoppingException();
                admitted = true;
            }
            await handler(context, service).ConfigureAwait(false);
            status = context.Response.StatusCode;
        }
        catch (Exception e) when (context.RequestAborted.IsCancellationRequested && e is OperationCanceledException or IOException or BadHttpRequestException)
        {
            status = 499;   // the client went away (nginx's convention); nothing to answer
        }
        catch (Exception e)
        {
            status = await WriteErrorAsync(context, service, e).ConfigureAwait(false);
        }
        finally
        {
            service.Metrics.Request(route, status, Stopwatch.GetElapsedTime(start).TotalSeconds);
            if (admitted) service.Leave();
        }
    };

    private static async Task<int> WriteErrorAsync(HttpContext context, UllmeService service, Exception e)
    {
        (int status, string message, string type, string? code, string? param) = e switch
        {
            ApiException a => (a.Status, a.Message, a.Type, a.Code, a.Param),
            QueueFullException q => (StatusCodes.Status429TooManyRequests, q.Message, "rate_limit_error", "queue_full", (string?)null),
            ServerStoppingException => (StatusCodes.Status503ServiceUnavailable, "The server is shutting down; retry on another replica.", "server_error", "shutting_down", null),
            UllmeException u => (StatusCodes.Status400BadRequest, u.Message, ApiException.InvalidRequest, "invalid_value", null),
            BadHttpRequestException b => (b.StatusCode, b.Message, ApiException.InvalidRequest, b.StatusCode == 413 ? "request_too_large" : "bad_request", null),
            _ => (StatusCodes.Status500InternalServerError, "The server had an error while processing the request.", "server_error", "internal_error", null),
        };
        if (status == 500) service.Logger.LogError(e, "Unhandled error on {Path}.", context.Request.Path);
        if (context.Response.HasStarted) return status;
        context.Response.Clear();
        if (e is QueueFullException full) context.Response.Headers.RetryAfter = full.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (e is ServerStoppingException || status == StatusCodes.Status413PayloadTooLarge) context.Response.Headers.Connection = "close";
        if (status == StatusCodes.Status401Unauthorized) context.Response.Headers.WWWAuthenticate = "Bearer";
        await ApiException.WriteAsync(context, status, message, type, code, param).ConfigureAwait(false);
        return status;
    }

    private static async Task WriteJsonAsync(HttpContext context, Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(4096);
        using (var w = new Utf8JsonWriter(buffer)) write(w);
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = buffer.WrittenCount;
        await context.Response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- OpenAI

    private static async Task OpenAiEmbeddings(HttpContext context, UllmeService s)
    {
        List<RequestInput> inputs;
        string format;
        int? dimensions;
        using (var doc = await JsonFields.ReadObjectAsync(context, s.Options.MaxBodyBytes).ConfigureAwait(false))
        {
            var root = doc.RootElement;
            inputs = JsonFields.Inputs(JsonFields.Required(root, "input", "input"), "input");
            JsonFields.OptionalString(root, "model", "model");
            JsonFields.OptionalString(root, "user", "user");
            format = JsonFields.OptionalString(root, "encoding_format", "encoding_format") ?? "float";
            if (format is not ("float" or "base64"))
                throw ApiException.BadField("encoding_format", $"'encoding_format' must be \"float\" or \"base64\" (got \"{format}\").");
            dimensions = Dimensions(root, s);
        }
        s.CheckCount(inputs.Count, "input");
        var rows = s.Encode(inputs, truncate: false, s.Options.Instruction, out long tokens);
        var pooled = await s.Batcher.EmbedAsync(rows, context.RequestAborted).ConfigureAwait(false);
        await WriteJsonAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            for (int i = 0; i < pooled.Length; i++)
            {
                var v = Finish(pooled[i], dimensions, s.Options.Normalize);
                w.WriteStartObject();
                w.WriteString("object", "embedding");
                w.WriteNumber("index", i);
                if (format == "base64") w.WriteString("embedding", Base64(v));
                else
                {
                    w.WriteStartArray("embedding");
                    foreach (float x in v) w.WriteNumberValue(x);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteString("model", s.ModelName);
            w.WriteStartObject("usage");
            w.WriteNumber("prompt_tokens", tokens);
            w.WriteNumber("total_tokens", tokens);
            w.WriteEndObject();
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    private static int? Dimensions(JsonElement root, UllmeService s)
    {
        int? dimensions = JsonFields.OptionalInt(root, "dimensions", "dimensions");
        int full = s.Model.EmbeddingDimension;
        if (dimensions is { } d && (d < 1 || d > full))
            throw ApiException.BadField("dimensions", $"'dimensions' must be between 1 and {full}, the model's embedding size (got {d}).");
        return dimensions;
    }

    /// <summary>The first <paramref name="dimensions"/> values, L2-normalised when asked (in double precision).</summary>
    internal static float[] Finish(float[] pooled, int? dimensions, bool normalize)
    {
        int n = dimensions ?? pooled.Length;
        var v = new float[n];
        Array.Copy(pooled, v, n);
        if (normalize) EmbeddingEngine.Renormalize(v);
        return v;
    }

    /// <summary>Little-endian float32 bytes, base64 (what OpenAI returns for <c>encoding_format: "base64"</c>).</summary>
    internal static string Base64(float[] v)
    {
        var bytes = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), v[i]);
        return Convert.ToBase64String(bytes);
    }

    private static Task Models(HttpContext context, UllmeService s) => WriteJsonAsync(context, w =>
    {
        w.WriteStartObject();
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        WriteModel(w, s);
        w.WriteEndArray();
        w.WriteEndObject();
    });

    private static Task Model(HttpContext context, UllmeService s)
    {
        string id = Uri.UnescapeDataString(context.Request.RouteValues["id"] as string ?? "");
        if (!string.Equals(id, s.ModelName, StringComparison.Ordinal))
            throw new ApiException(StatusCodes.Status404NotFound, $"The model '{id}' does not exist; this server serves '{s.ModelName}'.", code: "model_not_found", param: "model");
        return WriteJsonAsync(context, w => WriteModel(w, s));
    }

    private static void WriteModel(Utf8JsonWriter w, UllmeService s)
    {
        w.WriteStartObject();
        w.WriteString("id", s.ModelName);
        w.WriteString("object", "model");
        w.WriteNumber("created", s.CreatedUnixSeconds);
        w.WriteString("owned_by", "ullme");
        w.WriteEndObject();
    }

    // ---------------------------------------------------------------- text-embeddings-inference

    private static async Task TeiEmbed(HttpContext context, UllmeService s)
    {
        List<RequestInput> inputs;
        bool normalize, truncate;
        int? dimensions;
        using (var doc = await JsonFields.ReadObjectAsync(context, s.Options.MaxBodyBytes).ConfigureAwait(false))
        {
            var root = doc.RootElement;
            inputs = JsonFields.Inputs(JsonFields.Required(root, "inputs", "inputs"), "inputs");
            normalize = JsonFields.OptionalBool(root, "normalize", "normalize", true);
            truncate = JsonFields.OptionalBool(root, "truncate", "truncate", false);
            string? direction = JsonFields.OptionalString(root, "truncation_direction", "truncation_direction");
            if (direction is not (null or "Right" or "right"))
                throw ApiException.BadField("truncation_direction", $"'truncation_direction' must be \"Right\" (texts lose their end; got \"{direction}\").");
            dimensions = Dimensions(root, s);
        }
        s.CheckCount(inputs.Count, "inputs");
        var rows = s.Encode(inputs, truncate, s.Options.Instruction, out _);
        var pooled = await s.Batcher.EmbedAsync(rows, context.RequestAborted).ConfigureAwait(false);
        await WriteJsonAsync(context, w =>
        {
            w.WriteStartArray();
            foreach (var p in pooled)
            {
                w.WriteStartArray();
                foreach (float x in Finish(p, dimensions, normalize)) w.WriteNumberValue(x);
                w.WriteEndArray();
            }
            w.WriteEndArray();
        }).ConfigureAwait(false);
    }

    private static async Task Rerank(HttpContext context, UllmeService s)
    {
        string query;
        var texts = new List<string>();
        bool returnText, truncate;
        RerankBy by;
        double weight;
        using (var doc = await JsonFields.ReadObjectAsync(context, s.Options.MaxBodyBytes).ConfigureAwait(false))
        {
            var root = doc.RootElement;
            query = JsonFields.RequiredString(root, "query", "query");
            var t = JsonFields.Required(root, "texts", "texts");
            if (t.ValueKind != JsonValueKind.Array) throw ApiException.BadField("texts", $"'texts' must be an array of strings (got {JsonFields.Kind(t.ValueKind)}).", "invalid_type");
            int i = 0;
            foreach (var e in t.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.String) throw ApiException.BadField($"texts[{i}]", $"'texts[{i}]' must be a string (got {JsonFields.Kind(e.ValueKind)}).", "invalid_type");
                texts.Add(e.GetString()!);
                i++;
            }
            if (texts.Count == 0) throw ApiException.BadField("texts", "'texts' must not be empty.");
            returnText = JsonFields.OptionalBool(root, "return_text", "return_text", false);
            truncate = JsonFields.OptionalBool(root, "truncate", "truncate", false);
            JsonFields.OptionalBool(root, "raw_scores", "raw_scores", false);   // TEI's flag; our scores are never squashed
            string byName = JsonFields.OptionalString(root, "by", "by") ?? "representation";
            by = byName.Trim().ToLowerInvariant() switch
            {
                "representation" => RerankBy.Representation,
                "generation" => RerankBy.Generation,
                "mix" => RerankBy.Mix,
                _ => throw ApiException.BadField("by", $"'by' must be \"representation\", \"generation\" or \"mix\" (got \"{byName}\")."),
            };
            weight = JsonFields.OptionalNumber(root, "mix_weight", "mix_weight") ?? 0.5;
            if (weight is < 0 or > 1) throw ApiException.BadField("mix_weight", $"'mix_weight' must be between 0 and 1 (got {weight}).");
        }
        s.CheckCount(texts.Count + 1, "texts");
        if (by != RerankBy.Representation && !s.SupportsGeneration)
            throw ApiException.BadField("by", $"'by': \"{by.ToString().ToLowerInvariant()}\" needs a decoder with a language-model head; the model '{s.ModelName}' is an encoder. Use \"representation\".", "model_not_supported");

        double[]? representation = null, generation = null;
        EncodedText[]? rows = null;
        TokenScoreRequest[]? sequences = null;
        if (by != RerankBy.Generation)
        {
            rows = new EncodedText[texts.Count + 1];
            rows[0] = s.Encode(new RequestInput(query, null, "query"), truncate, s.Options.Instruction);
            for (int i = 0; i < texts.Count; i++) rows[i + 1] = s.Encode(new RequestInput(texts[i], null, $"texts[{i}]"), truncate, null);
        }
        if (by != RerankBy.Representation) sequences = GenerationRequests(s, query, texts, truncate);
        // Both signals are queued at once; if one fails (e.g. 429), the other's rows leave the queue too.
        using var both = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        var embedTask = rows is null ? null : s.Batcher.EmbedAsync(rows, both.Token);
        Task<ScoreResult[]>? scoreTask = null;
        try
        {
            if (sequences is not null) scoreTask = s.Batcher.ScoreAsync(sequences, both.Token);
            if (embedTask is not null)
            {
                var e = await embedTask.ConfigureAwait(false);
                representation = new double[texts.Count];
                for (int i = 0; i < texts.Count; i++) representation[i] = Cosine(e[0], e[i + 1]);
            }
            if (scoreTask is not null) generation = (await scoreTask.ConfigureAwait(false)).Select(r => r.Mean).ToArray();
        }
        catch
        {
            await both.CancelAsync().ConfigureAwait(false);
            if (embedTask is not null) await Task.WhenAny(embedTask).ConfigureAwait(false);
            if (scoreTask is not null) await Task.WhenAny(scoreTask).ConfigureAwait(false);
            throw;
        }
        double[] scores = by switch
        {
            RerankBy.Representation => representation!,
            RerankBy.Generation => generation!,
            _ => Reranker.Mix(representation!, generation!, weight),
        };
        var order = Enumerable.Range(0, texts.Count).OrderByDescending(i => scores[i]).ThenBy(i => i).ToArray();
        await WriteJsonAsync(context, w =>
        {
            w.WriteStartArray();
            foreach (int i in order)
            {
                w.WriteStartObject();
                w.WriteNumber("index", i);
                if (returnText) w.WriteString("text", texts[i]);
                w.WriteNumber("score", scores[i]);
                if (by == RerankBy.Mix)
                {
                    w.WriteNumber("representation", representation![i]);
                    w.WriteNumber("generation", generation![i]);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }).ConfigureAwait(false);
    }

    /// <summary><c>[BOS] + prompt(query) + passage</c> per candidate (as <see cref="RelevanceScorer.Generation"/>);
    /// over the input limit: a 400, or the passage loses its end with <paramref name="truncate"/>.</summary>
    private static TokenScoreRequest[] GenerationRequests(UllmeService s, string query, List<string> texts, bool truncate)
    {
        var pairs = texts.Select(t => new QueryPassage(query, t)).ToArray();
        TokenScoreRequest[] requests;
        try
        {
            requests = (truncate ? s.GenerationTruncating! : s.Generation!).ToRequests(pairs);
        }
        catch (UllmeException e)
        {
            throw ApiException.BadField("texts", e.Message);
        }
        for (int i = 0; i < requests.Length; i++)
        {
            if (requests[i].InputIds.Count > s.MaxInputTokens) throw s.TooLong($"texts[{i}]", requests[i].InputIds.Count);
            try
            {
                s.Engine.ValidateTokenIds(requests[i].InputIds, $"texts[{i}]");
            }
            catch (UllmeException e)
            {
                throw ApiException.BadField($"texts[{i}]", e.Message);
            }
        }
        return requests;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return na == 0 || nb == 0 ? 0 : dot / Math.Sqrt(na * nb);
    }

    private static async Task Score(HttpContext context, UllmeService s)
    {
        if (!s.SupportsGeneration)
            throw new ApiException(StatusCodes.Status400BadRequest,
                $"/score needs a decoder with a language-model head; the model '{s.ModelName}' is an encoder.", code: "model_not_supported");
        var requests = new List<TokenScoreRequest>();
        using (var doc = await JsonFields.ReadObjectAsync(context, s.Options.MaxBodyBytes).ConfigureAwait(false))
        {
            var inputs = JsonFields.Required(doc.RootElement, "inputs", "inputs");
            if (inputs.ValueKind == JsonValueKind.Object) requests.Add(ScoreItem(s, inputs, "inputs"));
            else if (inputs.ValueKind == JsonValueKind.Array)
            {
                if (inputs.GetArrayLength() == 0) throw ApiException.BadField("inputs", "'inputs' must not be empty.");
                s.CheckCount(inputs.GetArrayLength(), "inputs");
                int i = 0;
                foreach (var e in inputs.EnumerateArray()) requests.Add(ScoreItem(s, e, $"inputs[{i++}]"));
            }
            else throw ApiException.BadField("inputs", $"'inputs' must be an object or an array of objects (got {JsonFields.Kind(inputs.ValueKind)}).", "invalid_type");
        }
        var results = await s.Batcher.ScoreAsync(requests, context.RequestAborted).ConfigureAwait(false);
        await WriteJsonAsync(context, w =>
        {
            w.WriteStartArray();
            foreach (var r in results)
            {
                w.WriteStartObject();
                w.WriteStartArray("token_logprobs");
                foreach (float x in r.TokenLogProbs) w.WriteNumberValue(x);
                w.WriteEndArray();
                w.WriteNumber("sum", r.Sum);
                if (double.IsFinite(r.Mean)) w.WriteNumber("mean", r.Mean); else w.WriteNull("mean");
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }).ConfigureAwait(false);
    }

    /// <summary><c>{"prefix", "continuation"}</c> (tokenized as <c>ullme score</c> does) or <c>{"input_ids", "score_from"}</c>.</summary>
    private static TokenScoreRequest ScoreItem(UllmeService s, JsonElement item, string path)
    {
        if (item.ValueKind != JsonValueKind.Object) throw ApiException.BadField(path, $"'{path}' must be an object (got {JsonFields.Kind(item.ValueKind)}).", "invalid_type");
        TokenScoreRequest request;
        if (JsonFields.Get(item, "input_ids") is { } ids)
        {
            var parsed = JsonFields.Ids(ids, $"{path}.input_ids");
            int from = JsonFields.OptionalInt(item, "score_from", $"{path}.score_from")
                ?? throw ApiException.BadField($"{path}.score_from", $"'{path}.score_from' is required with 'input_ids'.", "missing_field");
            if (from < 1 || from > parsed.Length)
                throw ApiException.BadField($"{path}.score_from", $"'{path}.score_from' must be between 1 and the number of tokens ({parsed.Length}); got {from}.");
            request = new TokenScoreRequest(parsed, from);
        }
        else
        {
            string prefix = JsonFields.RequiredString(item, "prefix", $"{path}.prefix");
            string continuation = JsonFields.RequiredString(item, "continuation", $"{path}.continuation");
            request = s.Engine.ToTokenRequest(new ScoreRequest(prefix, continuation));
        }
        if (request.InputIds.Count > s.MaxInputTokens) throw s.TooLong(path, request.InputIds.Count);
        try
        {
            s.Engine.ValidateTokenIds(request.InputIds, path);
        }
        catch (UllmeException e)
        {
            throw ApiException.BadField(path, e.Message);
        }
        return request;
    }

    // ---------------------------------------------------------------- operations

    private static Task Health(HttpContext context, UllmeService s)
    {
        if (s.Stopping) throw new ServerStoppingException();
        return WriteJsonAsync(context, w =>
        {
            w.WriteStartObject();
            w.WriteString("status", "ok");
            w.WriteString("model", s.ModelName);
            w.WriteEndObject();
        });
    }

    private static async Task Metrics(HttpContext context, UllmeService s)
    {
        var bytes = Encoding.UTF8.GetBytes(s.Metrics.Render());
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        context.Response.ContentLength = bytes.Length;
        await context.Response.Body.WriteAsync(bytes, context.RequestAborted).ConfigureAwait(false);
    }
}

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>Progress of a long embedding or scoring job.</summary>
public readonly record struct EngineProgress(int Done, int Total, long Tokens);

/// <summary>Embeddings of a list of texts plus what happened on the way (tokens, truncations).</summary>
public sealed record EmbeddingResult(float[][] Embeddings, long TokenCount, int TruncatedCount);

/// <summary>
/// The one engine every surface calls (ML.NET transforms, IEmbeddingGenerator, CLI, evaluation, training
/// evaluation): tokenization (optionally overlapped with the model), length-sorted batching in bounded windows, the forward pass without autograd, pooling, normalisation,
/// and causal log-likelihood scoring.
/// <para>Thread-safe: tokenization runs on the caller's thread or a worker; forward passes are serialised (libtorch already
/// uses every core inside one forward).</para>
/// </summary>
public sealed partial class EmbeddingEngine
{
    private readonly object _forwardLock = new();
    private readonly ILogger _logger;

    public UllmeModel Model { get; }

    public EmbeddingEngine(UllmeModel model, ILogger? logger = null)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Embeds texts; row i of the result is the embedding of texts[i].</summary>
    public float[][] Embed(IReadOnlyList<string> texts, EmbeddingOptions? options = null,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        EmbedDetailed(texts, options, progress, cancellationToken).Embeddings;

    /// <summary>Embeds texts and reports token and truncation counts.</summary>
    public EmbeddingResult EmbedDetailed(IReadOnlyList<string> texts, EmbeddingOptions? options = null,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var o = Resolve(options);
        return EmbedWindows(texts.Count, (start, count) =>
        {
            var encoded = new EncodedText[count];
            for (int k = 0; k < count; k++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                string text = texts[start + k] ?? throw new UllmeException($"Text {start + k} is null; pass an empty string for an empty text.");
                encoded[k] = TextEncoding.Encode(Model.Tokenizer, text, o.Instruction, o.MaxLength);
            }
            return encoded;
        }, o, progress, cancellationToken);
    }

    /// <summary>Embeds pre-tokenized inputs, used exactly as given (no special tokens added, no truncation
    /// beyond the model's position limit, which is an error).</summary>
    public EmbeddingResult EmbedTokenIds(IReadOnlyList<IReadOnlyList<int>> inputIds, EmbeddingOptions? options = null,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var o = Resolve((options ?? new EmbeddingOptions()) with { Instruction = null });
        for (int i = 0; i < inputIds.Count; i++) ValidateIds(inputIds[i], $"input {i}");
        return EmbedWindows(inputIds.Count, (start, count) =>
        {
            var encoded = new EncodedText[count];
            for (int k = 0; k < count; k++) encoded[k] = EncodedText.FromIds(inputIds[start + k]);
            return encoded;
        }, o, progress, cancellationToken);
    }

    /// <summary>
    /// Embeds inputs already encoded by <see cref="Encode"/> (or <see cref="EncodedText.FromIds"/>), keeping each
    /// row's instruction span out of pooling: the entry point of callers that tokenize elsewhere (a server tokenizes
    /// on the request threads and batches rows of many requests into one forward). Row i of the result belongs to
    /// rows[i]; sorting and batching follow <paramref name="options"/> (BatchSize ≥ rows.Count = one forward).
    /// </summary>
    internal EmbeddingResult EmbedEncoded(IReadOnlyList<EncodedText> rows, ResolvedEmbeddingOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(options);
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Ids is null) throw new UllmeException($"row {i} has no token ids.");
            ValidateIds(rows[i].Ids, $"row {i}");
        }
        return EmbedWindows(rows.Count, (start, count) =>
        {
            var encoded = new EncodedText[count];
            for (int k = 0; k < count; k++) encoded[k] = rows[start + k];
            return encoded;
        }, options, null, cancellationToken);
    }

    /// <summary>Tokenizes like <see cref="Embed"/> does (special tokens, instruction, truncation).</summary>
    internal EncodedText Encode(string text, EmbeddingOptions? options = null)
    {
        var o = Resolve(options);
        return TextEncoding.Encode(Model.Tokenizer, text, o.Instruction, o.MaxLength);
    }

    /// <summary>Options with every default filled in from the model and validated.</summary>
    internal ResolvedEmbeddingOptions Resolve(EmbeddingOptions? options)
    {
        options ??= new EmbeddingOptions();
        options.Validate();
        var d = Model.Defaults;
        var attention = options.Attention ?? d.Attention;
        if (attention == AttentionMode.Causal && !Model.Backbone.SupportsCausal)
            throw OptionCheck.Error("EmbeddingOptions.Attention", $"cannot be causal: model '{Model.ModelId}' is a bidirectional encoder");
        int maxLength = options.MaxLength ?? d.MaxLength;
        if (maxLength < 1) throw new UllmeException($"max length must be positive (got {maxLength}).");
        int positionLimit = Model.Config.MaxPositionEmbeddings;
        if (options.MaxLength is { } asked && positionLimit > 0 && asked > positionLimit)
            throw OptionCheck.Error("EmbeddingOptions.MaxLength",
                $"must be at most {positionLimit}, the max_position_embeddings of model '{Model.ModelId}' (got {asked})");
        if (Model.Config.IsEncoder && positionLimit > 0 && maxLength > positionLimit)
            throw new UllmeException($"max length {maxLength} exceeds the model's max_position_embeddings ({positionLimit}).");
        if (options.Dimensions is int dims && dims > Model.EmbeddingDimension)
            throw OptionCheck.Error("EmbeddingOptions.Dimensions",
                $"must be at most {Model.EmbeddingDimension}, the embedding dimension of model '{Model.ModelId}' (got {dims})");
        int window = options.SortWindow ?? 8 * options.BatchSize;
        return new ResolvedEmbeddingOptions(options.Pooling ?? d.Pooling, attention, options.Instruction, maxLength, options.BatchSize, options.Normalize)
        {
            SortWindow = window == 0 ? int.MaxValue : Math.Max(window, options.BatchSize),
            OverlapTokenization = options.OverlapTokenization,
            Dimensions = options.Dimensions,
        };
    }

    /// <summary>
    /// The embedding loop. The input is cut into windows of <see cref="ResolvedEmbeddingOptions.SortWindow"/> texts;
    /// each window is tokenized by <paramref name="encodeWindow"/>(start, count), sorted longest first (similar
    /// lengths share a batch, so little padding; the largest batch runs first, so an out-of-memory shows up at once)
    /// and run batch by batch. With <see cref="ResolvedEmbeddingOptions.OverlapTokenization"/>, window k + 1 is tokenized
    /// on a worker thread while the model runs on window k.
    /// </summary>
    private EmbeddingResult EmbedWindows(int n, Func<int, int, EncodedText[]> encodeWindow, ResolvedEmbeddingOptions o,
        IProgress<EngineProgress>? progress, CancellationToken cancellationToken)
    {
        var result = new float[n][];
        int window = Math.Min(o.SortWindow, Math.Max(n, 1));
        long tokens = 0;
        int done = 0, truncated = 0;
        int dim = Model.EmbeddingDimension;
        int keep = o.Dimensions ?? dim;
        var batchRows = new List<EncodedText>(o.BatchSize);

        Task<EncodedText[]>? next = null;
        EncodedText[] current = n == 0 ? [] : encodeWindow(0, Math.Min(window, n));
        try
        {
            for (int windowStart = 0; windowStart < n; windowStart += window)
            {
                int nextStart = windowStart + window;
                if (nextStart < n)
                {
                    int nextCount = Math.Min(window, n - nextStart);
                    next = o.OverlapTokenization
                        ? Task.Run(() => encodeWindow(nextStart, nextCount), cancellationToken)
                        : null;
                }
                truncated += current.Count(e => e.Truncated);
                var order = Enumerable.Range(0, current.Length).OrderByDescending(i => current[i].Length).ThenBy(i => i).ToArray();
                for (int start = 0; start < order.Length; start += o.BatchSize)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int count = Math.Min(o.BatchSize, order.Length - start);
                    batchRows.Clear();
                    for (int k = 0; k < count; k++) batchRows.Add(current[order[start + k]]);
                    float[] flat = ForwardPooled(batchRows, o, out long batchTokens);
                    for (int k = 0; k < count; k++)
                    {
                        var row = new float[keep];
                        Array.Copy(flat, k * dim, row, 0, keep);
                        if (keep < dim && o.Normalize) Renormalize(row);
                        result[windowStart + order[start + k]] = row;
                    }
                    tokens += batchTokens;
                    done += count;
                    progress?.Report(new EngineProgress(done, n, tokens));
                }
                if (nextStart < n)
                {
                    current = next is not null
                        ? next.GetAwaiter().GetResult()
                        : encodeWindow(nextStart, Math.Min(window, n - nextStart));
                    next = null;
                }
            }
        }
        finally
        {
            // A failed forward must not leave a worker tokenizing into the void (or its exception unobserved).
            if (next is not null)
                try { next.Wait(CancellationToken.None); } catch (AggregateException) { }
        }
        if (truncated > 0)
            _logger.LogWarning("{Count} of {Total} texts were longer than {MaxLength} tokens and were truncated.", truncated, n, o.MaxLength);
        return new EmbeddingResult(result, tokens, truncated);
    }

    /// <summary>Scales a truncated row to unit length (in double precision; a row of zeros stays zero).</summary>
    internal static void Renormalize(float[] row)
    {
        double sq = 0;
        foreach (float x in row) sq += (double)x * x;
        double norm = Math.Sqrt(sq);
        if (norm <= 0) return;
        for (int i = 0; i < row.Length; i++) row[i] = (float)(row[i] / norm);
    }

    private float[] ForwardPooled(IReadOnlyList<EncodedText> rows, ResolvedEmbeddingOptions o, out long tokens)
    {
        lock (_forwardLock)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using var batch = TokenBatch.Build(rows, Model.PadTokenId, Model.Device);
            tokens = batch.RealTokens;
            var pooled = Model.Backbone.TryForwardPooled(batch.InputIds, batch.AttentionMask, batch.PoolingMask, o.Attention, o.Pooling, o.Normalize);
            if (pooled is null)
            {
                var hidden = Model.Backbone.Forward(batch.InputIds, batch.AttentionMask, o.Attention);   // [B, T, H]
                pooled = Pooler.Pool(hidden, batch.AttentionMask, batch.PoolingMask, o.Pooling);          // [B, H] f32
                if (o.Normalize) pooled = Pooler.Normalize(pooled);
            }
            return pooled.cpu().data<float>().ToArray();
        }
    }

    /// <summary>Checks pre-tokenized input: non-empty, ids inside the vocabulary, length within the model's
    /// position limit. <paramref name="what"/> names the input in the error.</summary>
    public void ValidateTokenIds(IReadOnlyList<int> ids, string what) => ValidateIds(ids, what);

    private void ValidateIds(IReadOnlyList<int> ids, string what)
    {
        if (ids.Count == 0) throw new UllmeException($"{what}: input_ids is empty.");
        int vocab = Model.Config.VocabSize;
        for (int j = 0; j < ids.Count; j++)
            if (ids[j] < 0 || ids[j] >= vocab)
                throw new UllmeException($"{what}: token id {ids[j]} at position {j} is outside the vocabulary [0, {vocab}).");
        int limit = Model.Config.MaxPositionEmbeddings;
        if (limit > 0 && ids.Count > limit)
            throw new UllmeException($"{what}: {ids.Count} tokens exceed the model's max_position_embeddings ({limit}).");
    }
}

/// <summary><see cref="EmbeddingOptions"/> with every default filled in.</summary>
internal sealed record ResolvedEmbeddingOptions(PoolingMode Pooling, AttentionMode Attention, string? Instruction,
    int MaxLength, int BatchSize, bool Normalize)
{
    /// <summary>Texts sorted together by length (int.MaxValue = the whole input).</summary>
    public int SortWindow { get; init; } = int.MaxValue;

    /// <summary>Tokenize the next window while the model runs on the current one.</summary>
    public bool OverlapTokenization { get; init; }

    /// <summary>Dimensions kept per embedding (Matryoshka truncation, renormalised when normalising); null = all.</summary>
    public int? Dimensions { get; init; }
}

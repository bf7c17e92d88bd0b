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
/// evaluation): tokenization, length-sorted batching, the forward pass without autograd, pooling, normalisation,
/// and causal log-likelihood scoring.
/// <para>Thread-safe: tokenization runs on the caller's thread; forward passes are serialised (libtorch already
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
        var encoded = new EncodedText[texts.Count];
        for (int i = 0; i < texts.Count; i++)
        {
            string text = texts[i] ?? throw new UllmeException($"Text {i} is null; pass an empty string for an empty text.");
            encoded[i] = TextEncoding.Encode(Model.Tokenizer, text, o.Instruction, o.MaxLength);
        }
        return EmbedEncoded(encoded, o, progress, cancellationToken);
    }

    /// <summary>Embeds pre-tokenized inputs, used exactly as given (no special tokens added, no truncation
    /// beyond the model's position limit, which is an error).</summary>
    public EmbeddingResult EmbedTokenIds(IReadOnlyList<IReadOnlyList<int>> inputIds, EmbeddingOptions? options = null,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var o = Resolve((options ?? new EmbeddingOptions()) with { Instruction = null });
        var encoded = new EncodedText[inputIds.Count];
        for (int i = 0; i < inputIds.Count; i++)
        {
            ValidateIds(inputIds[i], $"input {i}");
            encoded[i] = EncodedText.FromIds(inputIds[i]);
        }
        return EmbedEncoded(encoded, o, progress, cancellationToken);
    }

    /// <summary>Tokenizes like <see cref="Embed"/> does (special tokens, instruction, truncation).</summary>
    public EncodedText Encode(string text, EmbeddingOptions? options = null)
    {
        var o = Resolve(options);
        return TextEncoding.Encode(Model.Tokenizer, text, o.Instruction, o.MaxLength);
    }

    /// <summary>Options with every default filled in from the model and validated.</summary>
    public ResolvedEmbeddingOptions Resolve(EmbeddingOptions? options)
    {
        options ??= new EmbeddingOptions();
        var d = Model.Defaults;
        var attention = options.Attention ?? d.Attention;
        if (attention == AttentionMode.Causal && !Model.Backbone.SupportsCausal)
            throw new UllmeException($"Model '{Model.ModelId}' is a bidirectional encoder; attention 'causal' is not available.");
        int maxLength = options.MaxLength ?? d.MaxLength;
        if (maxLength < 1) throw new UllmeException($"max length must be positive (got {maxLength}).");
        int positionLimit = Model.Config.MaxPositionEmbeddings;
        if (Model.Config.IsEncoder && positionLimit > 0 && maxLength > positionLimit)
            throw new UllmeException($"max length {maxLength} exceeds the model's max_position_embeddings ({positionLimit}).");
        if (options.BatchSize < 1) throw new UllmeException($"batch size must be positive (got {options.BatchSize}).");
        return new ResolvedEmbeddingOptions(options.Pooling ?? d.Pooling, attention, options.Instruction, maxLength, options.BatchSize, options.Normalize);
    }

    private EmbeddingResult EmbedEncoded(EncodedText[] encoded, ResolvedEmbeddingOptions o,
        IProgress<EngineProgress>? progress, CancellationToken cancellationToken)
    {
        int n = encoded.Length;
        var result = new float[n][];
        int truncated = encoded.Count(e => e.Truncated);
        if (truncated > 0)
            _logger.LogWarning("{Count} of {Total} texts were longer than {MaxLength} tokens and were truncated.", truncated, n, o.MaxLength);
        // Longest first: similar lengths share a batch (little padding), and the largest batch runs first so an
        // out-of-memory shows up at once.
        var order = Enumerable.Range(0, n).OrderByDescending(i => encoded[i].Length).ThenBy(i => i).ToArray();
        long tokens = 0;
        int done = 0;
        int dim = Model.EmbeddingDimension;
        var batchRows = new List<EncodedText>(o.BatchSize);
        for (int start = 0; start < n; start += o.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(o.BatchSize, n - start);
            batchRows.Clear();
            for (int k = 0; k < count; k++) batchRows.Add(encoded[order[start + k]]);
            float[] flat = ForwardPooled(batchRows, o, out long batchTokens);
            for (int k = 0; k < count; k++)
            {
                var row = new float[dim];
                Array.Copy(flat, k * dim, row, 0, dim);
                result[order[start + k]] = row;
            }
            tokens += batchTokens;
            done += count;
            progress?.Report(new EngineProgress(done, n, tokens));
        }
        return new EmbeddingResult(result, tokens, truncated);
    }

    private float[] ForwardPooled(IReadOnlyList<EncodedText> rows, ResolvedEmbeddingOptions o, out long tokens)
    {
        lock (_forwardLock)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            using var batch = new PaddedBatch(rows, PadId, Model.Device);
            tokens = batch.Tokens;
            var hidden = Model.Backbone.Forward(batch.InputIds, batch.AttentionMask, o.Attention);   // [B, T, H]
            var pooled = Pooler.Pool(hidden, batch.AttentionMask, batch.PoolingMask, o.Pooling);      // [B, H] f32
            if (o.Normalize) pooled = Pooler.Normalize(pooled);
            return pooled.cpu().data<float>().ToArray();
        }
    }

    internal int PadId => Model.Tokenizer.PadTokenId ?? Model.Config.PadTokenId ?? Model.Tokenizer.EosTokenId ?? 0;

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
public sealed record ResolvedEmbeddingOptions(PoolingMode Pooling, AttentionMode Attention, string? Instruction,
    int MaxLength, int BatchSize, bool Normalize);

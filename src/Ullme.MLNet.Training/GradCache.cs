using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// A padded batch of tokenized texts to embed.
/// </summary>
/// <param name="InputIds">[N, T] int64.</param>
/// <param name="AttentionMask">[N, T]: 1 = real token, 0 = padding.</param>
/// <param name="PoolingMask">[N, T] or null (= the attention mask): the tokens that enter pooling, e.g. the
/// attention mask minus instruction tokens.</param>
public sealed record TokenBatch(Tensor InputIds, Tensor AttentionMask, Tensor? PoolingMask = null)
{
    /// <summary>Number of texts N.</summary>
    public long Count => InputIds.shape[0];

    /// <summary>The mask pooling uses.</summary>
    public Tensor EffectivePoolingMask => PoolingMask ?? AttentionMask;

    /// <summary>Rows [start, end), with the columns after the chunk's last real token dropped when
    /// <paramref name="trimRightPadding"/> (right padding only; positions are unchanged).</summary>
    public TokenBatch Slice(long start, long end, bool trimRightPadding = true)
    {
        var rows = TensorIndex.Slice(start, end);
        var ids = InputIds[rows];
        var attention = AttentionMask[rows];
        var pooling = PoolingMask?[rows];
        if (trimRightPadding && ids.shape[1] > 0)
        {
            long t = ids.shape[1];
            // Last real column + 1 over the chunk's rows.
            using var any = attention.to(ScalarType.Bool).any(0);                                         // [T]
            using var cols = arange(1, t + 1, dtype: ScalarType.Int64, device: any.device);
            using var used = cols * any.to(ScalarType.Int64);
            long length = Math.Max(1, used.max().item<long>());
            if (length < t)
            {
                var cut = TensorIndex.Slice(0, length);
                ids = ids[TensorIndex.Colon, cut];
                attention = attention[TensorIndex.Colon, cut];
                pooling = pooling?[TensorIndex.Colon, cut];
            }
        }
        return new TokenBatch(ids, attention, pooling);
    }
}

/// <summary>
/// GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"):
/// contrastive losses need the whole batch of embeddings at once, but the activations of a forward pass with grad
/// over the whole batch may not fit. The loss depends on the encoder only through the embeddings e, so
/// <code>
///   ∂L/∂θ = Σ_i (∂L/∂e_i) · (∂e_i/∂θ)
/// </code>
/// can be formed in two passes: (1) embed every chunk without a graph and keep only the embeddings; compute the
/// loss on those (as leaves) and back-propagate it to get ∂L/∂e; (2) re-embed each chunk with a graph and
/// back-propagate ∂L/∂e into the weights. Peak activation memory is one chunk; the cost is a second forward.
/// <para>
/// The replay must reproduce the first pass exactly: the global RNG state is saved before each chunk and restored
/// before its replay (so dropout draws the same masks), and each chunk carries its own slices of the input ids,
/// attention mask and pooling mask (a pooling mask that excludes instruction tokens travels with its rows).
/// </para>
/// </summary>
public sealed class GradCache
{
    /// <param name="chunkSize">Texts per forward pass.</param>
    /// <param name="trimRightPadding">Drop all-padding trailing columns per chunk (saves work; positions and masks
    /// are unchanged, so the embeddings are the same up to float rounding).</param>
    public GradCache(int chunkSize, bool trimRightPadding = true)
    {
        if (chunkSize <= 0) throw new UllmeException($"GradCache chunk size must be positive, got {chunkSize}.");
        ChunkSize = chunkSize;
        TrimRightPadding = trimRightPadding;
    }

    public int ChunkSize { get; }
    public bool TrimRightPadding { get; }

    /// <summary>
    /// Pass 1: embeds every group (e.g. queries, positives, negatives) chunk by chunk without a graph.
    /// </summary>
    /// <param name="groups">Batches to embed.</param>
    /// <param name="embed">Maps a chunk to its embeddings [n, H] (forward + pooling, with whatever grad mode is
    /// active; it must not consume randomness other than through torch's global generator).</param>
    /// <returns>The cached embeddings: compute the loss from <see cref="CachedEmbeddings.Embeddings"/>, call
    /// <c>backward()</c> on it, then <see cref="CachedEmbeddings.Backward"/>.</returns>
    public CachedEmbeddings Forward(IReadOnlyList<TokenBatch> groups, Func<TokenBatch, Tensor> embed)
    {
        var chunks = new List<List<Chunk>>();
        var embeddings = new List<Tensor>();
        using (no_grad())
        {
            foreach (var group in groups)
            {
                var list = new List<Chunk>();
                var parts = new List<Tensor>();
                for (long start = 0; start < group.Count; start += ChunkSize)
                {
                    long end = Math.Min(group.Count, start + ChunkSize);
                    var rng = get_rng_state().DetachFromDisposeScope();
                    using var scope = NewDisposeScope();
                    var e = embed(group.Slice(start, end, TrimRightPadding));
                    if (e.dim() != 2 || e.shape[0] != end - start)
                        throw new UllmeException($"GradCache: the embedding function returned shape [{string.Join(", ", e.shape)}] for {end - start} texts; expected [n, H].");
                    parts.Add(e.detach().MoveToOuterDisposeScope());
                    list.Add(new Chunk(start, end, rng));
                }
                chunks.Add(list);
                var all = parts.Count switch { 0 => empty(0, 0), 1 => parts[0], _ => cat(parts, 0) };
                embeddings.Add(all.detach().requires_grad_(true).DetachFromDisposeScope());
                foreach (var p in parts) if (!ReferenceEquals(p, all)) p.Dispose();
            }
        }
        var after = get_rng_state().DetachFromDisposeScope();
        return new CachedEmbeddings(groups, embed, chunks, embeddings, after, TrimRightPadding);
    }

    internal sealed record Chunk(long Start, long End, Tensor RngState);
}

/// <summary>The embeddings of a <see cref="GradCache.Forward"/> pass, as leaves that collect ∂L/∂e.</summary>
public sealed class CachedEmbeddings : IDisposable
{
    private readonly IReadOnlyList<TokenBatch> _groups;
    private readonly Func<TokenBatch, Tensor> _embed;
    private readonly List<List<GradCache.Chunk>> _chunks;
    private readonly List<Tensor> _embeddings;
    private readonly Tensor _rngAfter;
    private readonly bool _trim;

    internal CachedEmbeddings(IReadOnlyList<TokenBatch> groups, Func<TokenBatch, Tensor> embed, List<List<GradCache.Chunk>> chunks,
        List<Tensor> embeddings, Tensor rngAfter, bool trim)
    {
        _groups = groups;
        _embed = embed;
        _chunks = chunks;
        _embeddings = embeddings;
        _rngAfter = rngAfter;
        _trim = trim;
    }

    /// <summary>One [N_g, H] leaf per group (requires grad).</summary>
    public IReadOnlyList<Tensor> Embeddings => _embeddings;

    /// <summary>
    /// Pass 2: replays each chunk with a graph (same RNG state as in pass 1) and back-propagates the cached
    /// ∂L/∂e into the model's parameters (accumulating into <c>.grad</c>). Call after the loss's backward. Groups
    /// whose embeddings received no gradient are skipped. Afterwards the global RNG is where pass 1 left it.
    /// </summary>
    public void Backward()
    {
        try
        {
            for (int g = 0; g < _groups.Count; g++)
            {
                var grad = _embeddings[g].grad;
                if (grad is null) continue;
                foreach (var chunk in _chunks[g])
                {
                    using var scope = NewDisposeScope();
                    set_rng_state(chunk.RngState);
                    var e = _embed(_groups[g].Slice(chunk.Start, chunk.End, _trim));
                    var chunkGrad = grad[TensorIndex.Slice(chunk.Start, chunk.End)].to(e.dtype);
                    autograd.backward([e], [chunkGrad]);
                    AutogradErrors.ThrowIfAny();
                }
            }
        }
        finally
        {
            set_rng_state(_rngAfter);
        }
    }

    public void Dispose()
    {
        foreach (var e in _embeddings) e.Dispose();
        foreach (var list in _chunks) foreach (var c in list) c.RngState.Dispose();
        _rngAfter.Dispose();
    }
}

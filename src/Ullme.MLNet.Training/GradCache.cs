using TorchSharp;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

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
/// The replay must reproduce the first pass exactly: the state of the dropout source
/// (<see cref="ReplayableDropout.Source"/>, the host generator every device's masks are drawn from) is saved before
/// each chunk and restored before its replay, so dropout draws the same masks on any device, whatever ran in
/// between (the generation passes of a GRL step); and each chunk carries its own slices of the input ids, attention
/// mask and pooling mask (a pooling mask that excludes instruction tokens travels with its rows). The replay leaves
/// the random stream where it found it, so the draws of whatever ran between the passes are not replayed again by
/// the next batch.
/// </para>
/// </summary>
internal sealed class GradCache
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
    /// active; its randomness must come from <see cref="ReplayableDropout.Source"/>, torch's host generator).</param>
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
                    var rng = ReplayableDropout.CaptureState().DetachFromDisposeScope();
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
        return new CachedEmbeddings(groups, embed, chunks, embeddings, TrimRightPadding);
    }

    internal sealed record Chunk(long Start, long End, Tensor RngState);
}

/// <summary>The embeddings of a <see cref="GradCache.Forward"/> pass, as leaves that collect ∂L/∂e.</summary>
internal sealed class CachedEmbeddings : IDisposable
{
    private readonly IReadOnlyList<TokenBatch> _groups;
    private readonly Func<TokenBatch, Tensor> _embed;
    private readonly List<List<GradCache.Chunk>> _chunks;
    private readonly List<Tensor> _embeddings;
    private readonly bool _trim;

    internal CachedEmbeddings(IReadOnlyList<TokenBatch> groups, Func<TokenBatch, Tensor> embed, List<List<GradCache.Chunk>> chunks,
        List<Tensor> embeddings, bool trim)
    {
        _groups = groups;
        _embed = embed;
        _chunks = chunks;
        _embeddings = embeddings;
        _trim = trim;
    }

    /// <summary>One [N_g, H] leaf per group (requires grad).</summary>
    public IReadOnlyList<Tensor> Embeddings => _embeddings;

    /// <summary>
    /// Pass 2: replays each chunk with a graph (same RNG state as in pass 1) and back-propagates the cached
    /// ∂L/∂e into the model's parameters (accumulating into <c>.grad</c>). Call after the loss's backward. Groups
    /// whose embeddings received no gradient are skipped. Afterwards the random stream is where it was when this
    /// was called: the replay neither consumes it nor rewinds what ran since pass 1.
    /// </summary>
    public void Backward()
    {
        using var before = ReplayableDropout.CaptureState();
        try
        {
            for (int g = 0; g < _groups.Count; g++)
            {
                var grad = _embeddings[g].grad;
                if (grad is null) continue;
                foreach (var chunk in _chunks[g])
                {
                    using var scope = NewDisposeScope();
                    ReplayableDropout.RestoreState(chunk.RngState);
                    var e = _embed(_groups[g].Slice(chunk.Start, chunk.End, _trim));
                    var chunkGrad = grad[TensorIndex.Slice(chunk.Start, chunk.End)].to(e.dtype);
                    autograd.backward([e], [chunkGrad]);
                    AutogradErrors.ThrowIfAny();
                }
            }
        }
        finally
        {
            ReplayableDropout.RestoreState(before);
        }
    }

    public void Dispose()
    {
        foreach (var e in _embeddings) e.Dispose();
        foreach (var list in _chunks) foreach (var c in list) c.RngState.Dispose();
    }
}

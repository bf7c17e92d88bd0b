using TorchSharp;
using Ullme.MLNet.Inference;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// Embeddings of a batch as leaf tensors for the losses, and the way their gradients reach the weights: one
/// backward through the recorded forward graph, or GradCache's chunk-by-chunk replay. Seeing the embeddings as
/// leaves lets the generation-side losses be back-propagated chunk by chunk before the embedding graph is used.
/// </summary>
internal sealed class EmbeddingLeaves : IDisposable
{
    private readonly CachedEmbeddings? _cache;
    private readonly List<Tensor>? _graphs;

    private EmbeddingLeaves(IReadOnlyList<Tensor> leaves, CachedEmbeddings? cache, List<Tensor>? graphs)
    {
        Leaves = leaves;
        _cache = cache;
        _graphs = graphs;
    }

    public IReadOnlyList<Tensor> Leaves { get; }

    /// <summary>
    /// Leaves from length buckets (<see cref="LengthBuckets"/>): each bucket embedded once (or, with
    /// <paramref name="gradCacheChunk"/>, by GradCache a chunk of a bucket at a time), the outputs put back in the
    /// groups' rows; the backward runs through that regrouping into every bucket's graph (or GradCache's replay).
    /// GradCache over the buckets draws the same dropout masks as the plain path whenever the chunk holds a whole
    /// bucket.
    /// </summary>
    public static EmbeddingLeaves Create(LengthBuckets buckets, Func<TokenBatch, Tensor> embed, bool training, int? gradCacheChunk = null)
    {
        ArgumentNullException.ThrowIfNull(buckets);
        training = training && is_grad_enabled();
        CachedEmbeddings? cache = training && gradCacheChunk is { } chunk ? new GradCache(chunk).Forward(buckets.Buckets, embed) : null;
        var bucketOutputs = cache?.Embeddings ?? buckets.Buckets.Select(embed).ToList();
        List<Tensor> groups;
        using (var all = bucketOutputs.Count == 1 ? bucketOutputs[0].alias() : cat(bucketOutputs.ToList(), 0))   // [rows, H]
        {
            groups = buckets.GroupPositions.Select(p =>
            {
                using var index = tensor(p, ScalarType.Int64).to(all.device);
                return all.index_select(0, index);
            }).ToList();
        }
        if (!training) return new EmbeddingLeaves(groups, null, null);
        return new EmbeddingLeaves(groups.Select(g => g.detach().requires_grad_(true)).ToList(), cache, groups);
    }

    /// <summary>Back-propagates the gradients collected on the leaves into the model.</summary>
    public void Backward()
    {
        // Group leaves' gradients through the regrouping (into the buckets' graphs, or GradCache's bucket leaves),
        // then GradCache's replay.
        BackwardGraphs();
        _cache?.Backward();
    }

    private void BackwardGraphs()
    {
        if (_graphs is null) return;
        var outputs = new List<Tensor>();
        var grads = new List<Tensor>();
        for (int i = 0; i < _graphs.Count; i++)
        {
            if (Leaves[i].grad is { } g && _graphs[i].requires_grad)
            {
                outputs.Add(_graphs[i]);
                grads.Add(g);
            }
        }
        if (outputs.Count > 0) autograd.backward(outputs, grads);
        AutogradErrors.ThrowIfAny();
    }

    public void Dispose() => _cache?.Dispose();
}

/// <summary>
/// Causal sequences <c>[special prefix] + prompt(q) + candidate</c> for every candidate of every query (the
/// positive first, then the negatives) as one <see cref="TokenBatch"/> whose score mask covers the candidate tokens,
/// with the bookkeeping of which row belongs to which query.
/// </summary>
internal sealed class GenerationBatch
{
    private readonly long[] _scoredTokens;

    private GenerationBatch(TokenBatch tokens, long[] scoredTokens, List<List<int>> rowsOfQuery, List<int> negativeIndexOfRow, int firstQuery)
    {
        Tokens = tokens;
        _scoredTokens = scoredTokens;
        RowsOfQuery = rowsOfQuery;
        NegativeIndexOfRow = negativeIndexOfRow;
        FirstQuery = firstQuery;
        PositiveRows = rowsOfQuery.Select(r => r[0]).ToList();
        PositiveTokens = PositiveRows.Sum(r => scoredTokens[r]);
        MaxCandidates = rowsOfQuery.Max(r => r.Count);
    }

    /// <summary>The padded rows; <see cref="TokenBatch.ScoreMask"/> marks the candidate tokens.</summary>
    public TokenBatch Tokens { get; }

    public Tensor InputIds => Tokens.InputIds;
    public Tensor AttentionMask => Tokens.AttentionMask;
    /// <summary>[M, T] bool: the candidate's tokens.</summary>
    public Tensor ScoreMask => Tokens.ScoreMask!;

    public int Rows => _scoredTokens.Length;

    /// <summary>Per query (of this batch), its rows: the positive's first, then its negatives'.</summary>
    public List<List<int>> RowsOfQuery { get; }

    /// <summary>Per row, the index of its negative among the whole batch's flattened negatives (−1 for positives).</summary>
    public List<int> NegativeIndexOfRow { get; }

    public List<int> PositiveRows { get; }

    /// <summary>Scored tokens of the positives.</summary>
    public long PositiveTokens { get; }

    /// <summary>Index of this batch's first query in the full batch.</summary>
    public int FirstQuery { get; }

    public int QueryCount => RowsOfQuery.Count;

    public int MaxCandidates { get; }

    /// <summary>Pads <paramref name="rows"/> (prompt + candidate, candidate scored) into one batch.</summary>
    public static GenerationBatch Create(IReadOnlyList<TokenScoreRequest> rows, List<List<int>> rowsOfQuery, List<int> negativeIndexOfRow, int padId, Device device)
    {
        var scored = rows.Select(r => (long)(r.InputIds.Count - r.ScoreFrom)).ToArray();
        return new GenerationBatch(TokenBatch.Build(rows, padId, device), scored, rowsOfQuery, negativeIndexOfRow, 0);
    }

    /// <summary>Queries [q0, q1) with all their candidates, padded to their own longest row.</summary>
    public GenerationBatch Select(int q0, int q1)
    {
        if (q0 == 0 && q1 == QueryCount) return this;
        var selected = new List<long>();
        var rowsOfQuery = new List<List<int>>();
        var negIndex = new List<int>();
        for (int q = q0; q < q1; q++)
        {
            var mine = new List<int>();
            foreach (int r in RowsOfQuery[q])
            {
                mine.Add(selected.Count);
                selected.Add(r);
                negIndex.Add(NegativeIndexOfRow[r]);
            }
            rowsOfQuery.Add(mine);
        }
        var scored = selected.Select(r => _scoredTokens[r]).ToArray();
        return new GenerationBatch(Tokens.Select(selected), scored, rowsOfQuery, negIndex, FirstQuery + q0);
    }
}

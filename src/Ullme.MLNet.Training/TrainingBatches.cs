using TorchSharp;
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

    public static EmbeddingLeaves Create(IReadOnlyList<TokenBatch> groups, Func<TokenBatch, Tensor> embed, bool training, int? gradCacheChunk)
    {
        if (!training || !is_grad_enabled())
            return new EmbeddingLeaves(groups.Select(embed).ToList(), null, null);
        if (gradCacheChunk is { } chunk)
        {
            var cache = new GradCache(chunk).Forward(groups, embed);
            return new EmbeddingLeaves(cache.Embeddings, cache, null);
        }
        var graphs = groups.Select(embed).ToList();
        return new EmbeddingLeaves(graphs.Select(g => g.detach().requires_grad_(true)).ToList(), null, graphs);
    }

    /// <summary>Back-propagates the gradients collected on the leaves into the model.</summary>
    public void Backward()
    {
        if (_cache is not null)
        {
            _cache.Backward();
            return;
        }
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
/// positive first, then the negatives), right-padded, with a mask over the candidate tokens.
/// </summary>
internal sealed class GenerationBatch
{
    private readonly IReadOnlyList<(int[] Ids, int ScoreFrom)> _rows;
    private readonly int _padId;
    private readonly Device _device;

    private GenerationBatch(IReadOnlyList<(int[] Ids, int ScoreFrom)> rows, List<List<int>> rowsOfQuery, List<int> negativeIndexOfRow,
        int firstQuery, int padId, Device device)
    {
        _rows = rows;
        _padId = padId;
        _device = device;
        RowsOfQuery = rowsOfQuery;
        NegativeIndexOfRow = negativeIndexOfRow;
        FirstQuery = firstQuery;
        PositiveRows = rowsOfQuery.Select(r => r[0]).ToList();
        PositiveTokens = PositiveRows.Sum(r => (long)(rows[r].Ids.Length - rows[r].ScoreFrom));
        MaxCandidates = rowsOfQuery.Max(r => r.Count);

        int n = rows.Count, t = rows.Max(r => r.Ids.Length);
        var ids = new long[n * t];
        var attention = new long[n * t];
        var score = new bool[n * t];
        for (int i = 0; i < n; i++)
        {
            var (rowIds, from) = rows[i];
            for (int j = 0; j < t; j++)
            {
                bool real = j < rowIds.Length;
                ids[i * t + j] = real ? rowIds[j] : padId;
                attention[i * t + j] = real ? 1 : 0;
                score[i * t + j] = real && j >= from;
            }
        }
        InputIds = tensor(ids, [n, t]).to(device);
        AttentionMask = tensor(attention, [n, t]).to(device);
        ScoreMask = tensor(score, [n, t]).to(device);
    }

    public Tensor InputIds { get; }
    public Tensor AttentionMask { get; }
    /// <summary>[M, T] bool: the candidate's tokens.</summary>
    public Tensor ScoreMask { get; }

    public int Rows => _rows.Count;

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

    public static GenerationBatch Create(IReadOnlyList<(int[] Ids, int ScoreFrom)> rows, List<List<int>> rowsOfQuery, List<int> negativeIndexOfRow,
        List<int> positiveRows, long positiveTokens, int padId, Device device)
    {
        var batch = new GenerationBatch(rows, rowsOfQuery, negativeIndexOfRow, 0, padId, device);
        if (batch.PositiveTokens != positiveTokens || !batch.PositiveRows.SequenceEqual(positiveRows))
            throw new InvalidOperationException("GenerationBatch bookkeeping mismatch.");
        return batch;
    }

    /// <summary>Queries [q0, q1) with all their candidates, re-padded to their own longest row.</summary>
    public GenerationBatch Select(int q0, int q1)
    {
        if (q0 == 0 && q1 == QueryCount) return this;
        var rows = new List<(int[] Ids, int ScoreFrom)>();
        var rowsOfQuery = new List<List<int>>();
        var negIndex = new List<int>();
        for (int q = q0; q < q1; q++)
        {
            var mine = new List<int>();
            foreach (int r in RowsOfQuery[q])
            {
                mine.Add(rows.Count);
                rows.Add(_rows[r]);
                negIndex.Add(NegativeIndexOfRow[r]);
            }
            rowsOfQuery.Add(mine);
        }
        return new GenerationBatch(rows, rowsOfQuery, negIndex, FirstQuery + q0, _padId, _device);
    }
}

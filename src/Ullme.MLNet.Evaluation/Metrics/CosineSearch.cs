using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Evaluation.Metrics;

/// <summary>
/// Exact (brute-force) cosine search, as MTEB's default search wrapper does it: rows of queries and corpus are
/// L2-normalised, scores are one matrix product per (query block x corpus block), and each query keeps its top k
/// over all corpus blocks. Float32 on the CPU, like MTEB's torch cos_sim.
/// </summary>
internal static class CosineSearch
{
    /// <summary>Hit i of query q: corpus row index and cosine score, best first.</summary>
    public readonly record struct Hit(int Index, float Score);

    /// <summary>Top <paramref name="k"/> corpus rows per query (fewer when the corpus is smaller), best first.
    /// <paramref name="queryBlock"/> queries and <paramref name="corpusBlock"/> corpus rows (MTEB: 50,000) go into
    /// one matrix product.</summary>
    public static Hit[][] TopK(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> corpus, int k,
        int queryBlock = 256, int corpusBlock = 50_000, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var results = new Hit[queries.Count][];
        if (queries.Count == 0) return results;
        if (corpus.Count == 0)
        {
            for (int q = 0; q < queries.Count; q++) results[q] = [];
            return results;
        }
        int dim = corpus[0].Length;
        if (queries[0].Length != dim)
            throw new ArgumentException($"query width {queries[0].Length} differs from corpus width {dim}");

        using var noGrad = torch.no_grad();
        using var outer = NewDisposeScope();
        // Normalised corpus blocks, built once: [C_b, D] each.
        var blocks = new List<(int Start, Tensor Rows)>();
        for (int start = 0; start < corpus.Count; start += corpusBlock)
        {
            int count = Math.Min(corpusBlock, corpus.Count - start);
            blocks.Add((start, Normalised(corpus, start, count, dim)));
        }

        for (int qStart = 0; qStart < queries.Count; qStart += queryBlock)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            int qCount = Math.Min(queryBlock, queries.Count - qStart);
            var q = Normalised(queries, qStart, qCount, dim); // [Q_b, D]
            Tensor? bestScores = null, bestIndices = null;     // [Q_b, <=k]
            foreach (var (start, rows) in blocks)
            {
                var scores = q.matmul(rows.t()); // [Q_b, C_b]
                int take = (int)Math.Min(k, scores.shape[1]);
                var (values, indices) = scores.topk(take, dim: 1, largest: true, sorted: true);
                indices = indices.Add(start);
                if (bestScores is null)
                {
                    bestScores = values;
                    bestIndices = indices;
                }
                else
                {
                    var allScores = cat([bestScores, values], 1);
                    var allIndices = cat([bestIndices!, indices], 1);
                    int keep = (int)Math.Min(k, allScores.shape[1]);
                    var (v, pos) = allScores.topk(keep, dim: 1, largest: true, sorted: true);
                    bestScores = v;
                    bestIndices = allIndices.gather(1, pos);
                }
            }
            var s = bestScores!.contiguous().data<float>().ToArray();
            var ix = bestIndices!.contiguous().data<long>().ToArray();
            int width = (int)bestScores.shape[1];
            for (int r = 0; r < qCount; r++)
            {
                var hits = new Hit[width];
                for (int c = 0; c < width; c++) hits[c] = new Hit((int)ix[r * width + c], s[r * width + c]);
                results[qStart + r] = hits;
            }
        }
        return results;
    }

    private static Tensor Normalised(IReadOnlyList<float[]> rows, int start, int count, int dim)
    {
        var flat = new float[(long)count * dim];
        for (int i = 0; i < count; i++)
        {
            var row = rows[start + i];
            if (row.Length != dim) throw new ArgumentException($"row {start + i} has width {row.Length}, expected {dim}");
            Array.Copy(row, 0, flat, (long)i * dim, dim);
        }
        var t = tensor(flat, [count, dim]);
        return nn.functional.normalize(t, p: 2, dim: 1);
    }
}

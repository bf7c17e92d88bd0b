using Ullme.MLNet.Inference;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// The texts of a training batch's embedding groups (queries, positives, negatives, extra positives) re-cut into
/// length buckets, so that a forward pass pads each text only to the longest text of its bucket rather than of its
/// group. Every row's embedding depends on its own tokens alone (per-row masks, norms and pooling), so the
/// embeddings are those of the groups up to float rounding; what changes is the work: on SNLI triplets a group of 32
/// is padded to 2.15× its real tokens, the buckets to about 1.3×.
/// <para>
/// The cut is optimal for the cost Σ<sub>buckets</sub> (rows × longest row + <see cref="OverheadTokens"/>), the
/// constant standing for the fixed cost of one more forward and backward (dispatching each layer's operators once
/// more) in token-equivalents (<see cref="Partition"/>: dynamic programming over the rows sorted by length).
/// </para>
/// </summary>
internal sealed class LengthBuckets
{
    /// <summary>The fixed cost of one more bucket, in padded tokens.</summary>
    public const int OverheadTokens = 96;

    private LengthBuckets(IReadOnlyList<TokenBatch> buckets, IReadOnlyList<long[]> groupPositions)
    {
        Buckets = buckets;
        GroupPositions = groupPositions;
    }

    /// <summary>The padded batches to embed, in order.</summary>
    public IReadOnlyList<TokenBatch> Buckets { get; }

    /// <summary>For each group, the row of each of its texts in the buckets' outputs concatenated in order.</summary>
    public IReadOnlyList<long[]> GroupPositions { get; }

    /// <summary>Cuts <paramref name="groups"/>' rows into buckets (<see cref="Partition"/>) and pads each bucket.</summary>
    public static LengthBuckets Create(IReadOnlyList<IReadOnlyList<EncodedText>> groups, int padId, Device device, int overheadTokens = OverheadTokens)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var rows = new List<(int Group, int Row)>();
        for (int g = 0; g < groups.Count; g++)
            for (int r = 0; r < groups[g].Count; r++) rows.Add((g, r));
        var lengths = rows.Select(x => groups[x.Group][x.Row].Length).ToArray();
        var parts = Partition(lengths, overheadTokens);

        var positions = groups.Select(g => new long[g.Count]).ToArray();
        var buckets = new List<TokenBatch>(parts.Count);
        long next = 0;
        foreach (var part in parts)
        {
            var encoded = new EncodedText[part.Length];
            for (int i = 0; i < part.Length; i++)
            {
                var (g, r) = rows[part[i]];
                encoded[i] = groups[g][r];
                positions[g][r] = next++;
            }
            buckets.Add(TokenBatch.Build(encoded, padId, device));
        }
        return new LengthBuckets(buckets, positions);
    }

    /// <summary>
    /// Rows cut into buckets of consecutive lengths, minimising Σ (rows × longest + <paramref name="overheadTokens"/>):
    /// each bucket's row indices, shortest first; buckets from the shortest to the longest. Ties keep the input order.
    /// </summary>
    public static List<int[]> Partition(IReadOnlyList<int> lengths, int overheadTokens = OverheadTokens)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        if (overheadTokens < 0) throw new ArgumentOutOfRangeException(nameof(overheadTokens), overheadTokens, "must be non-negative");
        int n = lengths.Count;
        var order = Enumerable.Range(0, n).OrderBy(i => lengths[i]).ThenBy(i => i).ToArray();
        if (n == 0) return [];
        // best[j] = least cost of the first j sorted rows; cut[j] = where the last bucket of that cut starts.
        var best = new long[n + 1];
        var cut = new int[n + 1];
        for (int j = 1; j <= n; j++)
        {
            long longest = lengths[order[j - 1]];
            long bestCost = long.MaxValue;
            int bestStart = 0;
            for (int i = 0; i < j; i++)
            {
                long cost = best[i] + (j - i) * longest + overheadTokens;
                if (cost < bestCost) { bestCost = cost; bestStart = i; }
            }
            best[j] = bestCost;
            cut[j] = bestStart;
        }
        var buckets = new List<int[]>();
        for (int j = n; j > 0; j = cut[j])
            buckets.Add(order[cut[j]..j]);
        buckets.Reverse();
        return buckets;
    }
}

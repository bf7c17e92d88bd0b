using Ullme.MLNet.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// The one padded batch of token sequences that every forward pass takes — embedding, scoring, training and
/// GradCache: ids, the attention mask, the pooling mask and, for causal scoring, the mask of scored tokens.
/// Built from tokenized rows by <see cref="Build(IReadOnlyList{EncodedText}, int, Device)"/> (texts to embed) or
/// <see cref="Build(IReadOnlyList{TokenScoreRequest}, int, Device)"/> (sequences whose tail is scored): right padding,
/// one host→device copy per tensor.
/// </summary>
/// <param name="InputIds">[N, T] int64.</param>
/// <param name="AttentionMask">[N, T]: 1 = real token, 0 = padding.</param>
/// <param name="PoolingMask">[N, T] or null (= the attention mask): the tokens that enter pooling, e.g. the
/// attention mask minus instruction tokens.</param>
/// <param name="ScoreMask">[N, T] bool or null: the tokens whose log-probability is scored (a continuation after its
/// prompt). Token t is predicted from the state at t − 1, so it is never set at t = 0.</param>
internal sealed record TokenBatch(Tensor InputIds, Tensor AttentionMask, Tensor? PoolingMask = null, Tensor? ScoreMask = null) : IDisposable
{
    /// <summary>Number of sequences N.</summary>
    public long Count => InputIds.shape[0];

    /// <summary>The mask pooling uses.</summary>
    public Tensor EffectivePoolingMask => PoolingMask ?? AttentionMask;

    /// <summary>Real (non-padding) tokens, counted on the host when the batch was built; −1 when the batch was made
    /// from tensors directly.</summary>
    public long RealTokens { get; init; } = -1;

    /// <summary>Rows [start, end), with the columns after the slice's last real token dropped when
    /// <paramref name="trimRightPadding"/> (right padding only; positions are unchanged).</summary>
    public TokenBatch Slice(long start, long end, bool trimRightPadding = true)
    {
        var rows = TensorIndex.Slice(start, end);
        return Trim(new TokenBatch(InputIds[rows], AttentionMask[rows], PoolingMask?[rows], ScoreMask?[rows]), trimRightPadding);
    }

    /// <summary>The given rows in the given order, with the columns after their last real token dropped when
    /// <paramref name="trimRightPadding"/>: the batch the selected rows would have been padded to on their own.</summary>
    public TokenBatch Select(IReadOnlyList<long> rows, bool trimRightPadding = true)
    {
        ArgumentNullException.ThrowIfNull(rows);
        foreach (long r in rows)
            if (r < 0 || r >= Count) throw new UllmeException($"TokenBatch.Select: row {r} is outside the batch of {Count}.");
        var index = tensor(rows.ToArray(), ScalarType.Int64).to(InputIds.device);
        return Trim(new TokenBatch(InputIds.index_select(0, index), AttentionMask.index_select(0, index),
            PoolingMask?.index_select(0, index), ScoreMask?.index_select(0, index)), trimRightPadding);
    }

    private static TokenBatch Trim(TokenBatch batch, bool trimRightPadding)
    {
        long t = batch.InputIds.shape[1];
        if (!trimRightPadding || t == 0 || batch.Count == 0) return batch;
        // Last real column + 1 over the rows.
        using var any = batch.AttentionMask.to(ScalarType.Bool).any(0);                                  // [T]
        using var cols = ScalarOps.Arange(1, t + 1, 1, ScalarType.Int64, any.device);                  // 1..T
        using var used = cols.mul(any.to(ScalarType.Int64));
        long length = Math.Max(1, used.max().item<long>());
        if (length >= t) return batch;
        var cut = TensorIndex.Slice(0, length);
        return new TokenBatch(batch.InputIds[TensorIndex.Colon, cut], batch.AttentionMask[TensorIndex.Colon, cut],
            batch.PoolingMask?[TensorIndex.Colon, cut], batch.ScoreMask?[TensorIndex.Colon, cut]);
    }

    /// <summary>
    /// Texts to embed: ids right-padded with <paramref name="padId"/>; attention mask = real tokens; pooling mask =
    /// attention mask minus each row's instruction span; no score mask.
    /// </summary>
    public static TokenBatch Build(IReadOnlyList<EncodedText> rows, int padId, Device device)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return Pad(rows.Count, i => rows[i].Ids, i => (rows[i].InstructionStart, rows[i].InstructionLength), null, padId, device);
    }

    /// <summary>
    /// Sequences whose tail is scored: ids right-padded with <paramref name="padId"/>; attention mask = real tokens;
    /// score mask = real tokens at positions ≥ <see cref="TokenScoreRequest.ScoreFrom"/>; pooling mask = attention mask.
    /// </summary>
    public static TokenBatch Build(IReadOnlyList<TokenScoreRequest> rows, int padId, Device device)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return Pad(rows.Count, i => rows[i].InputIds, null, i => rows[i].ScoreFrom, padId, device);
    }

    private static TokenBatch Pad(int b, Func<int, IReadOnlyList<int>> idsOf, Func<int, (int Start, int Length)>? instructionOf,
        Func<int, int>? scoreFromOf, int padId, Device device)
    {
        int t = 0;
        for (int i = 0; i < b; i++) t = Math.Max(t, idsOf(i).Count);
        var ids = new long[b * t];
        var attention = new long[b * t];
        var pooling = instructionOf is null ? null : new long[b * t];
        var score = scoreFromOf is null ? null : new bool[b * t];
        long tokens = 0;
        for (int i = 0; i < b; i++)
        {
            var row = idsOf(i);
            var (instrStart, instrLength) = instructionOf?.Invoke(i) ?? (0, 0);
            int scoreFrom = scoreFromOf?.Invoke(i) ?? 0;
            int o = i * t;
            for (int j = 0; j < t; j++)
            {
                bool real = j < row.Count;
                ids[o + j] = real ? row[j] : padId;
                attention[o + j] = real ? 1 : 0;
                if (pooling is not null) pooling[o + j] = real && (j < instrStart || j >= instrStart + instrLength) ? 1 : 0;
                if (score is not null) score[o + j] = real && j >= scoreFrom;
            }
            tokens += row.Count;
        }
        return new TokenBatch(
            ToDevice(tensor(ids, [b, t], ScalarType.Int64), device),
            ToDevice(tensor(attention, [b, t], ScalarType.Int64), device),
            pooling is null ? null : ToDevice(tensor(pooling, [b, t], ScalarType.Int64), device),
            score is null ? null : ToDevice(tensor(score, [b, t]), device))
        {
            RealTokens = tokens,
        };
    }

    private static Tensor ToDevice(Tensor cpu, Device device)
    {
        if (device.type == DeviceType.CPU) return cpu;
        var moved = cpu.to(device);
        cpu.Dispose();
        return moved;
    }

    /// <summary>Releases the batch's tensors now rather than with their dispose scope.</summary>
    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        PoolingMask?.Dispose();
        ScoreMask?.Dispose();
    }
}

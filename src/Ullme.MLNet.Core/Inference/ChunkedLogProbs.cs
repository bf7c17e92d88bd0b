using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// The one implementation of log-probabilities of chosen tokens under a language-model head, never holding
/// full-vocabulary logits for every position: used by scoring (<see cref="EmbeddingEngine.ScoreTokenIds"/>) and by
/// training (<c>Training.Losses.TokenLogProbs</c>, which adds a memory-saving backward around <see cref="OfRows"/>).
/// <para>
/// A causal LM scores token x_t from the state at t−1: log p(x_t | x_&lt;t) = logit[x_t] − logsumexp(logits). Only
/// the scored positions are gathered; their logits are formed a chunk of positions at a time ([chunk, V] at most),
/// in float32 (float64 kept), reduced to one number per position and dropped.
/// </para>
/// </summary>
internal static class ChunkedLogProbs
{
    /// <summary>Maps the selected states [M, H] and their targets [M] to log-probs [M] (e.g. <see cref="OfRows"/>).</summary>
    public delegate Tensor RowLogProbs(Tensor hidden, Tensor targets);

    /// <summary>
    /// log p(targets[b,t] | hidden[b,t]) wherever <paramref name="mask"/> is set, 0 elsewhere: [B, T] float32
    /// (float64 if <paramref name="hidden"/> is float64).
    /// </summary>
    /// <param name="hidden">[B, T, H] final states.</param>
    /// <param name="targets">[B, T] token ids predicted from each state.</param>
    /// <param name="mask">[B, T] bool or integer: the positions to score.</param>
    /// <param name="rowLogProbs">Computes the selected rows' log-probs.</param>
    public static Tensor Compute(Tensor hidden, Tensor targets, Tensor mask, RowLogProbs rowLogProbs)
    {
        using var scope = NewDisposeScope();
        long b = hidden.shape[0], t = hidden.shape[1], h = hidden.shape[2];
        var outType = hidden.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var flatHidden = hidden.reshape(b * t, h);                                       // [B*T, H]
        var flatTargets = targets.reshape(b * t).to(ScalarType.Int64);                   // [B*T]
        var index = mask.reshape(b * t).to(ScalarType.Bool).nonzero().squeeze(1);      // [M]
        var selected = index.shape[0] == 0
            ? zeros(0, dtype: outType, device: hidden.device)
            : rowLogProbs(flatHidden.index_select(0, index), flatTargets.index_select(0, index));   // [M]
        var result = zeros(b * t, dtype: outType, device: hidden.device).index_copy(0, index, selected.to(outType));
        return result.reshape(b, t).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Causal form: entry t of the [B, T] result is log p(inputIds[t] | inputIds[&lt;t]) where
    /// <paramref name="scoreMask"/>[t] is set (the state at t − 1 predicts token t; t = 0 is never scored), 0 elsewhere.
    /// </summary>
    public static Tensor ForInputs(Tensor hidden, Tensor inputIds, Tensor scoreMask, RowLogProbs rowLogProbs)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        var maskBool = scoreMask.to(ScalarType.Bool);
        var shiftedHidden = hidden[TensorIndex.Colon, TensorIndex.Slice(0, t - 1)];         // [B, T-1, H] predicts 1..T-1
        var shiftedTargets = inputIds[TensorIndex.Colon, TensorIndex.Slice(1, t)];          // [B, T-1]
        var shiftedMask = maskBool[TensorIndex.Colon, TensorIndex.Slice(1, t)];             // [B, T-1]
        var lp = Compute(shiftedHidden, shiftedTargets, shiftedMask, rowLogProbs);         // [B, T-1]
        return nn.functional.pad(lp, [1, 0]).MoveToOuterDisposeScope();                    // [B, T]
    }

    /// <summary>log_softmax(head(h))[target] for each row, <paramref name="chunkSize"/> rows at a time, with whatever
    /// grad mode is active. [M, H], [M] → [M].</summary>
    public static Tensor OfRows(Tensor hidden, Tensor targets, Func<Tensor, Tensor> lmHead, long chunkSize)
    {
        long m = hidden.shape[0];
        if (m <= chunkSize) return OneChunk(hidden, targets, lmHead);
        var parts = new List<Tensor>();
        for (long start = 0; start < m; start += chunkSize)
        {
            long end = Math.Min(m, start + chunkSize);
            parts.Add(OneChunk(hidden[TensorIndex.Slice(start, end)], targets[TensorIndex.Slice(start, end)], lmHead));
        }
        return cat(parts, 0);
    }

    /// <summary>Rows per chunk so that a chunk's logits stay under <paramref name="maxLogits"/> numbers.</summary>
    public static long RowsPerChunk(long vocabulary, long maxLogits) => Math.Max(1, maxLogits / Math.Max(1, vocabulary));

    /// <summary>One chunk: logits [C, V] in float32 (float64 kept), minus their logsumexp, gathered at the targets.</summary>
    private static Tensor OneChunk(Tensor hidden, Tensor targets, Func<Tensor, Tensor> lmHead)
    {
        using var scope = NewDisposeScope();
        var logits = lmHead(hidden);                                                    // [C, V]
        if (logits.dtype != ScalarType.Float64) logits = logits.to(ScalarType.Float32);
        var picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1);                 // [C]
        return picked.sub(logits.logsumexp(1)).MoveToOuterDisposeScope();              // [C]
    }
}

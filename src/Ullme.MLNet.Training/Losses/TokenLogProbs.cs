using TorchSharp;
using Ullme.MLNet.Training;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Losses;

/// <summary>
/// Log-probabilities of chosen target tokens under a language-model head, without ever holding full-vocabulary
/// logits for every position.
/// <para>
/// A causal LM scores token x_t from the state at t−1: log p(x_t | x_&lt;t) = logit[x_t] − logsumexp(logits). For a
/// batch of B×T positions and a vocabulary V the logits are B·T·V floats (8×512×152k ≈ 2.5 GB in float32 for
/// Qwen2). Here only the positions that are scored are gathered, and their logits are formed a chunk of positions
/// at a time, reduced to one number per position (log_softmax in float32, then gather), and dropped.
/// </para>
/// <para>
/// When gradients are needed the chunks are not kept for backward either: a custom autograd function stores only
/// the hidden states and targets, and its backward recomputes each chunk's logits with grad enabled and
/// back-propagates into the head's parameters (accumulating into their <c>.grad</c>, like PyTorch's re-entrant
/// checkpointing) and into the hidden states (returned to the outer graph). Peak extra memory is one chunk of
/// logits, forward and backward.
/// </para>
/// </summary>
public static class TokenLogProbs
{
    /// <summary>Positions per logits chunk. 256 positions × 152k vocabulary ≈ 155 MB in float32.</summary>
    public const int DefaultChunkSize = 256;

    /// <summary>
    /// log p(targets[b,t] | hidden[b,t]) for every position where <paramref name="mask"/> is set, 0 elsewhere.
    /// </summary>
    /// <param name="hidden">[B, T, H] final states (after the final norm).</param>
    /// <param name="targets">[B, T] int64 token ids predicted from each state.</param>
    /// <param name="mask">[B, T] bool or integer: which positions to score.</param>
    /// <param name="lmHead">Maps states [M, H] to logits [M, V] (e.g. <c>EmbeddingBackbone.LanguageModelLogits</c>).</param>
    /// <param name="chunkSize">Positions per logits chunk.</param>
    /// <returns>[B, T] float32 (float64 if <paramref name="hidden"/> is float64), differentiable w.r.t. the
    /// hidden states and the head's parameters.</returns>
    public static Tensor Compute(Tensor hidden, Tensor targets, Tensor mask, Func<Tensor, Tensor> lmHead, int chunkSize = DefaultChunkSize)
    {
        LossChecks.Rank(hidden, 3, "hidden");
        LossChecks.Rank(targets, 2, "targets");
        LossChecks.Rank(mask, 2, "mask");
        if (targets.shape[0] != hidden.shape[0] || targets.shape[1] != hidden.shape[1])
            throw new UllmeException($"TokenLogProbs: targets {LossChecks.Shape(targets)} must match the first two dimensions of hidden {LossChecks.Shape(hidden)}.");
        LossChecks.SameShape(targets, "targets", mask, "mask");
        if (chunkSize <= 0) throw new UllmeException($"TokenLogProbs: chunkSize must be positive, got {chunkSize}.");

        AutogradErrors.ThrowIfAny();
        using var scope = NewDisposeScope();
        long b = hidden.shape[0], t = hidden.shape[1], h = hidden.shape[2];
        var outType = hidden.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var flatHidden = hidden.reshape(b * t, h);                                       // [B*T, H]
        var flatTargets = targets.reshape(b * t).to(ScalarType.Int64);                   // [B*T]
        var index = mask.reshape(b * t).to(ScalarType.Bool).nonzero().squeeze(1);      // [M]
        var selectedHidden = flatHidden.index_select(0, index);                          // [M, H]
        var selectedTargets = flatTargets.index_select(0, index);                        // [M]

        Tensor selected;                                                                 // [M]
        if (index.shape[0] == 0)
            selected = zeros(0, dtype: outType, device: hidden.device);
        else if (is_grad_enabled() && selectedHidden.requires_grad)
            selected = ChunkedLogProbFunction.apply(selectedHidden, selectedTargets, new HeadBox(lmHead), (long)chunkSize);
        else
            selected = ForwardChunks(selectedHidden, selectedTargets, lmHead, chunkSize);

        var result = zeros(b * t, dtype: outType, device: hidden.device).index_copy(0, index, selected.to(outType));
        return result.reshape(b, t).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Causal-LM convenience: the state at t−1 predicts <paramref name="inputIds"/>[t]. Returns [B, T] aligned with
    /// the tokens: entry t is log p(inputIds[t] | inputIds[&lt;t]) where <paramref name="scoreMask"/>[t] is set (it
    /// must be clear at t = 0, which has no prefix), 0 elsewhere.
    /// </summary>
    /// <param name="hidden">[B, T, H] causal states for <paramref name="inputIds"/>.</param>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="scoreMask">[B, T]: the tokens to score (e.g. the passage after the prompt, not padding).</param>
    /// <param name="lmHead">Maps states [M, H] to logits [M, V].</param>
    /// <param name="chunkSize">Positions per logits chunk.</param>
    public static Tensor ForInputs(Tensor hidden, Tensor inputIds, Tensor scoreMask, Func<Tensor, Tensor> lmHead, int chunkSize = DefaultChunkSize)
    {
        LossChecks.Rank(inputIds, 2, "inputIds");
        LossChecks.SameShape(inputIds, "inputIds", scoreMask, "scoreMask");
        using var scope = NewDisposeScope();
        var maskBool = scoreMask.to(ScalarType.Bool);
        if (maskBool[TensorIndex.Colon, 0].any().item<bool>())
            throw new UllmeException("TokenLogProbs: scoreMask is set at position 0, which has no preceding token to predict it from.");
        long t = inputIds.shape[1];
        var shiftedHidden = hidden[TensorIndex.Colon, TensorIndex.Slice(0, t - 1)];         // [B, T-1, H] predicts 1..T-1
        var shiftedTargets = inputIds[TensorIndex.Colon, TensorIndex.Slice(1, t)];          // [B, T-1]
        var shiftedMask = maskBool[TensorIndex.Colon, TensorIndex.Slice(1, t)];             // [B, T-1]
        var lp = Compute(shiftedHidden, shiftedTargets, shiftedMask, lmHead, chunkSize);   // [B, T-1]
        var padded = nn.functional.pad(lp, [1, 0]);                                        // [B, T]
        return padded.MoveToOuterDisposeScope();
    }

    /// <summary>Σ_t lp·mask per row: the log-probability of each scored sequence. [N, T] → [N].</summary>
    public static Tensor Sum(Tensor tokenLogProbs, Tensor mask)
    {
        LossChecks.SameShape(tokenLogProbs, "tokenLogProbs", mask, "mask");
        using var scope = NewDisposeScope();
        var m = mask.to(tokenLogProbs.dtype);
        return (tokenLogProbs * m).sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>Σ_t lp·mask / Σ_t mask per row: mean token log-probability. [N, T] → [N]. A row without scored
    /// tokens is an error (its mean is undefined).</summary>
    public static Tensor Mean(Tensor tokenLogProbs, Tensor mask)
    {
        LossChecks.SameShape(tokenLogProbs, "tokenLogProbs", mask, "mask");
        using var scope = NewDisposeScope();
        var m = mask.to(tokenLogProbs.dtype);
        var counts = m.sum(1);
        if ((counts == 0).any().item<bool>())
            throw new UllmeException("TokenLogProbs.Mean: a sequence has no scored tokens (empty continuation?).");
        return ((tokenLogProbs * m).sum(1) / counts).MoveToOuterDisposeScope();
    }

    /// <summary>log_softmax(head(h))[target] for each row, chunk by chunk, with whatever grad mode is active.</summary>
    internal static Tensor ForwardChunks(Tensor hidden, Tensor targets, Func<Tensor, Tensor> lmHead, long chunkSize)
    {
        long m = hidden.shape[0];
        var parts = new List<Tensor>();
        for (long start = 0; start < m; start += chunkSize)
        {
            long end = Math.Min(m, start + chunkSize);
            parts.Add(ChunkLogProbs(hidden[TensorIndex.Slice(start, end)], targets[TensorIndex.Slice(start, end)], lmHead));
        }
        return parts.Count == 1 ? parts[0] : cat(parts, 0);
    }

    /// <summary>One chunk: logits [C, V] in float32 (float64 kept), minus their logsumexp, gathered at the targets.</summary>
    private static Tensor ChunkLogProbs(Tensor hidden, Tensor targets, Func<Tensor, Tensor> lmHead)
    {
        using var scope = NewDisposeScope();
        var logits = lmHead(hidden);                                                    // [C, V]
        if (logits.dtype != ScalarType.Float64) logits = logits.to(ScalarType.Float32);
        var picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1);                 // [C]
        return (picked - logits.logsumexp(1)).MoveToOuterDisposeScope();                // [C]
    }

    /// <summary>Carries the head delegate through autograd's object[] arguments.</summary>
    private sealed record HeadBox(Func<Tensor, Tensor> Head);

    /// <summary>Forward: chunked log-probs without a graph. Backward: recompute each chunk with grad and back-propagate.</summary>
    private sealed class ChunkedLogProbFunction : autograd.SingleTensorFunction<ChunkedLogProbFunction>
    {
        public override string Name => nameof(ChunkedLogProbFunction);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var hidden = (Tensor)vars[0];
            var targets = (Tensor)vars[1];
            var head = (HeadBox)vars[2];
            long chunk = (long)vars[3];
            ctx.save_for_backward([hidden, targets]);
            ctx.save_data("head", head);
            ctx.save_data("chunk", chunk);
            return ForwardChunks(hidden, targets, head.Head, chunk);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var hidden = saved[0];
            var targets = saved[1];
            var head = ((HeadBox)ctx.get_data("head")).Head;
            long chunk = (long)ctx.get_data("chunk");
            long m = hidden.shape[0];

            var gradHidden = zeros_like(hidden);
            try
            {
                using (enable_grad())
                {
                    for (long start = 0; start < m; start += chunk)
                    {
                        using var scope = NewDisposeScope();
                        long end = Math.Min(m, start + chunk);
                        var h = hidden[TensorIndex.Slice(start, end)].detach().requires_grad_(true);
                        var lp = ChunkLogProbs(h, targets[TensorIndex.Slice(start, end)], head);
                        var g = gradOutput[TensorIndex.Slice(start, end)].to(lp.dtype);
                        // Re-entrant backward: accumulates into the head's parameters and into h.grad.
                        autograd.backward([lp], [g]);
                        if (h.grad is { } hg)
                            gradHidden[TensorIndex.Slice(start, end)].copy_(hg);
                    }
                }
            }
            catch (Exception e)
            {
                AutogradErrors.Record(e);
            }
            foreach (var s in saved) s.Dispose();
            return [gradHidden, null!, null!, null!];
        }
    }
}

using TorchSharp;
using Ullme.MLNet.Inference;
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
internal static class TokenLogProbs
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
        return ChunkedLogProbs.Compute(hidden, targets, mask, Rows(lmHead, chunkSize));
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
        LossChecks.Rank(hidden, 3, "hidden");
        LossChecks.Rank(inputIds, 2, "inputIds");
        LossChecks.SameShape(inputIds, "inputIds", scoreMask, "scoreMask");
        if (inputIds.shape[0] != hidden.shape[0] || inputIds.shape[1] != hidden.shape[1])
            throw new UllmeException($"TokenLogProbs: inputIds {LossChecks.Shape(inputIds)} must match the first two dimensions of hidden {LossChecks.Shape(hidden)}.");
        if (chunkSize <= 0) throw new UllmeException($"TokenLogProbs: chunkSize must be positive, got {chunkSize}.");
        using (var scope = NewDisposeScope())
        {
            if (scoreMask.to(ScalarType.Bool)[TensorIndex.Colon, 0].any().item<bool>())
                throw new UllmeException("TokenLogProbs: scoreMask is set at position 0, which has no preceding token to predict it from.");
        }
        AutogradErrors.ThrowIfAny();
        return ChunkedLogProbs.ForInputs(hidden, inputIds, scoreMask, Rows(lmHead, chunkSize));
    }

    /// <summary>The engine's chunked log-probs of the selected rows; when gradients are recorded, wrapped in the
    /// function whose backward recomputes one chunk at a time.</summary>
    private static ChunkedLogProbs.RowLogProbs Rows(Func<Tensor, Tensor> lmHead, long chunkSize) => (h, y) =>
        is_grad_enabled() && h.requires_grad
            ? ChunkedLogProbFunction.apply(h, y, new HeadBox(lmHead), chunkSize)
            : ChunkedLogProbs.OfRows(h, y, lmHead, chunkSize);

    /// <summary>Σ_t lp·mask per row: the log-probability of each scored sequence. [N, T] → [N].</summary>
    public static Tensor Sum(Tensor tokenLogProbs, Tensor mask)
    {
        LossChecks.SameShape(tokenLogProbs, "tokenLogProbs", mask, "mask");
        using var scope = NewDisposeScope();
        var m = mask.to(tokenLogProbs.dtype);
        return tokenLogProbs.mul(m).sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>Σ_t lp·mask / Σ_t mask per row: mean token log-probability. [N, T] → [N]. A row without scored
    /// tokens is an error (its mean is undefined).</summary>
    public static Tensor Mean(Tensor tokenLogProbs, Tensor mask)
    {
        LossChecks.SameShape(tokenLogProbs, "tokenLogProbs", mask, "mask");
        using var scope = NewDisposeScope();
        var m = mask.to(tokenLogProbs.dtype);
        var counts = m.sum(1);
        if (counts.numel() > 0 && counts.min().to(ScalarType.Float64).item<double>() == 0)
            throw new UllmeException("TokenLogProbs.Mean: a sequence has no scored tokens (empty continuation?).");
        return tokenLogProbs.mul(m).sum(1).div(counts).MoveToOuterDisposeScope();
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
            return ChunkedLogProbs.OfRows(hidden, targets, head.Head, chunk);
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
                        var lp = ChunkedLogProbs.OfRows(h, targets[TensorIndex.Slice(start, end)], head, chunk);
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

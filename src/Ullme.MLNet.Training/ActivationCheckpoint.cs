using TorchSharp;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// Gradient (activation) checkpointing for one block, e.g. a decoder layer: the forward keeps only the block's
/// input, not its internal activations; the backward recomputes the block with grad from that input and
/// back-propagates through the recomputation. Memory per layer drops from all intermediate tensors (attention
/// scores, MLP activations) to one [B, T, H] state, for the price of a second forward.
/// <para>
/// Implemented as a TorchSharp <c>autograd.Function</c> (supported in 0.107) with re-entrant backward, as PyTorch's
/// <c>checkpoint(use_reentrant=True)</c>: the recomputed graph's <c>backward</c> accumulates into the block's
/// parameters directly, and the input gradient is handed back to the outer graph. The state of the dropout source
/// (<see cref="ReplayableDropout.Source"/>, the host generator every device's masks come from) is saved before the
/// forward and restored for the recomputation, so dropout draws the same masks on any device. If the input does
/// not require grad (frozen embeddings under LoRA) it is made to, otherwise autograd would not call the backward
/// and the block's adapters would get no gradient (HF's <c>enable_input_require_grads</c> fixes the same issue).
/// </para>
/// </summary>
internal static class ActivationCheckpoint
{
    /// <summary>Runs <paramref name="block"/>(<paramref name="input"/>) with checkpointing when gradients are
    /// being recorded, plainly otherwise. The block must be a pure function of its input, its parameters and torch's
    /// dropout source <see cref="ReplayableDropout.Source"/> (tensors it captures, such as masks, must not change
    /// before the backward).</summary>
    public static Tensor Apply(Func<Tensor, Tensor> block, Tensor input)
    {
        AutogradErrors.ThrowIfAny();
        if (!is_grad_enabled()) return block(input);
        var x = input.requires_grad ? input : input.detach().requires_grad_(true);
        return CheckpointFunction.apply(x, new BlockBox(block));
    }

    private sealed record BlockBox(Func<Tensor, Tensor> Block);

    private sealed class CheckpointFunction : autograd.SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => nameof(CheckpointFunction);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var box = (BlockBox)vars[1];
            var rng = ReplayableDropout.CaptureState().DetachFromDisposeScope();
            ctx.save_for_backward([x, rng]);
            ctx.save_data("block", box);
            using var scope = NewDisposeScope();
            return box.Block(x).MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var input = saved[0];
            var rng = saved[1];
            var block = ((BlockBox)ctx.get_data("block")).Block;
            var after = ReplayableDropout.CaptureState();
            Tensor? gradInput = null;
            try
            {
                ReplayableDropout.RestoreState(rng);
                using var scope = NewDisposeScope();
                using (enable_grad())
                {
                    var x = input.detach().requires_grad_(true);
                    var y = block(x);
                    autograd.backward([y], [gradOutput.to(y.dtype)]);
                    gradInput = (x.grad ?? zeros_like(x)).MoveToOuterDisposeScope();
                }
            }
            catch (Exception e)
            {
                AutogradErrors.Record(e);
            }
            finally
            {
                ReplayableDropout.RestoreState(after);
                after.Dispose();
                foreach (var s in saved) s.Dispose();
            }
            return [gradInput!, null!];
        }
    }
}

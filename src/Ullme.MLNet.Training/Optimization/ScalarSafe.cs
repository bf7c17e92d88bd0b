using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Optimization;

/// <summary>Optimizers whose scalar operands cannot be finalized mid-call (see <see cref="AdamW"/>).</summary>
internal static class ScalarSafe
{
/// <summary>
/// TorchSharp's AdamW, same state, same options, same arithmetic in the same order (so the same bits), except that
/// every scalar operand is a <see cref="Scalar"/> we hold (and dispose) across the native call.
/// <para>
/// Why: in TorchSharp 0.107.0 a <c>double</c> handed to a tensor op becomes a temporary <see cref="Scalar"/> through
/// an implicit conversion, and the op passes only its raw handle to libtorch, with no <c>GC.KeepAlive</c>; e.g.
/// <c>Tensor.addcdiv_(t1, t2, Scalar value) { THSTensor_addcdiv_(Handle, t1.Handle, t2.Handle, value.Handle); ... }</c>
/// (src/TorchSharp/Tensor/Tensor.Math.cs:213; likewise <c>add_(Tensor, Scalar)</c> :115, <c>add_(Scalar)</c> :127,
/// <c>addcmul_</c> :253, <c>div(Scalar)</c> :693, <c>mul_(Scalar)</c> :1381). Once <c>.Handle</c> has been read the
/// Scalar object is unreachable, so a garbage collection started by another thread while libtorch is still
/// dispatching the op lets the finalizer thread run <c>~Scalar</c> → <c>THSTorch_dispose_scalar</c> and free the
/// <c>c10::Scalar</c> that the kernel is about to read. The kernel then finds a garbage tag and throws
/// "Expected false to be true ... Exception raised from toFloat at /pytorch/c10/core/Scalar.h:140" — or, if the freed
/// block was already reused by the next Scalar, silently applies a wrong value. Scalars are not tracked by dispose
/// scopes in 0.107, so no scope protects them. <c>AdamW.step</c> (src/TorchSharp/Optimizers/AdamW.cs:175–194) makes
/// six such temporaries per parameter per step (<c>param.mul_(1 − lr·wd)</c>, <c>mul_(β₁)</c>,
/// <c>add_(g, alpha: 1 − β₁)</c>, <c>mul_(β₂)</c>, <c>addcmul_(…, value: 1 − β₂)</c>, <c>/ √bc₂</c>,
/// <c>add_(ε)</c> with its hidden <c>alpha: 1</c>, <c>addcdiv_(…, value: −step)</c>), which is how one full test run
/// failed inside <c>AdamW.step</c> while other test classes were allocating on other threads.
/// </para>
/// <para>
/// A <c>using</c> Scalar is referenced until its <c>Dispose</c> runs after the native call, so it cannot be
/// finalized during it; disposing it also frees it deterministically instead of through the finalizer queue.
/// </para>
/// <para>
/// The class is named <c>AdamW</c> on purpose: TorchSharp writes <c>GetType().Name</c> into a saved optimizer state
/// and refuses to load a state under another name, so this name keeps checkpoints interchangeable with
/// <c>torch.optim.AdamW</c> in both directions.
/// </para>
/// </summary>
public sealed class AdamW : TorchSharp.Modules.AdamW
{
    /// <summary>Same arguments as TorchSharp's <c>AdamW(IEnumerable&lt;ParamGroup&gt;, ...)</c>.</summary>
    public AdamW(IEnumerable<ParamGroup> groups, double lr, double beta1, double beta2, double eps, double weightDecay)
        : base(groups, lr, beta1, beta2, eps, weightDecay)
    {
    }

    /// <summary>One AdamW update of every parameter that has a gradient (decoupled weight decay, bias-corrected
    /// moments; AMSGrad and maximize honoured as TorchSharp does).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
    {
        var o = (Options)group.Options;
        double lr = o.LearningRate!.Value, beta1 = o.beta1!.Value, beta2 = o.beta2!.Value;
        double eps = o.eps!.Value, weightDecay = o.weight_decay!.Value;
        bool amsgrad = o.amsgrad!.Value, maximize = o.maximize!.Value;

        // The same values TorchSharp converts implicitly, built once per group and kept alive until the group is done.
        using var decay = (1 - lr * weightDecay).ToScalar();
        using var b1 = beta1.ToScalar();
        using var oneMinusB1 = (1 - beta1).ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var epsilon = eps.ToScalar();
        using var one = 1.ToScalar();   // add_(Scalar) forwards to add_(scalar, alpha: 1) with an int Scalar

        foreach (var param in group.Parameters)
        {
            var state = (State)_state[param.Handle];
            var grad = param.grad;   // registered in _step's dispose scope, so it stays reachable
            if (grad is null) continue;
            if (maximize) grad = -grad;

            state.step += 1;
            param.mul_(decay);

            double biasCorrection1 = 1 - Math.Pow(beta1, state.step);
            double biasCorrection2 = 1 - Math.Pow(beta2, state.step);

            state.exp_avg.mul_(b1).add_(grad, oneMinusB1);                 // m ← β₁m + (1−β₁)g
            state.exp_avg_sq.mul_(b2).addcmul_(grad, grad, oneMinusB2);    // v ← β₂v + (1−β₂)g²

            using var sqrtBiasCorrection2 = Math.Sqrt(biasCorrection2).ToScalar();
            Tensor denom;                                                   // √v̂ + ε
            if (amsgrad)
            {
                var previous = state.max_exp_avg_sq;
                state.max_exp_avg_sq = maximum(previous, state.exp_avg_sq).DetachFromDisposeScope();
                previous.Dispose();
                denom = state.max_exp_avg_sq.sqrt().div(sqrtBiasCorrection2).add_(epsilon, one);
            }
            else
            {
                denom = state.exp_avg_sq.sqrt().div(sqrtBiasCorrection2).add_(epsilon, one);
            }

            using var negativeStepSize = (-(lr / biasCorrection1)).ToScalar();
            param.addcdiv_(state.exp_avg, denom, negativeStepSize);         // θ ← θ − lr/bc₁ · m / (√v̂ + ε)
        }
    }, closure);
}
}

using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Losses;

/// <summary>The preference objective family; all are functions of the implicit-reward margin z.</summary>
public enum PreferenceLossKind
{
    /// <summary>DPO (Rafailov et al. 2023): −log σ(z).</summary>
    Sigmoid,

    /// <summary>IPO (Azar et al. 2023): (z/β − 1/(2β))², i.e. the log-ratio margin regressed onto 1/(2β).</summary>
    Ipo,

    /// <summary>SLiC-style hinge: max(0, 1 − z).</summary>
    Hinge,

    /// <summary>KTO's paired variant (Ethayarajh et al. 2024, as in TRL's <c>kto_pair</c>): chosen and rejected are
    /// judged against a reference point estimated from the other half of the batch.</summary>
    KtoPair,
}

/// <summary>
/// Preference optimisation on (query, preferred passage p⁺, rejected passage n): the trained policy π should raise
/// the likelihood of p⁺ relative to n more than the reference π_ref does.
/// <code>
///   r⁺ = log π(p⁺|q) − log π_ref(p⁺|q),   r⁻ = log π(n|q) − log π_ref(n|q)   (sums of token log-probs)
///   z  = β (r⁺ − r⁻)
///   DPO: −log σ(z)      IPO: (z/β − 1/(2β))²      hinge: max(0, 1 − z)
///   KTO-pair: ½[(1 − σ(β(r⁺ − z₀⁻))) + (1 − σ(β(z₀⁺ − r⁻)))],  z₀^± = max(0, mean_batch r^±) (no gradient)
/// </code>
/// averaged over the batch. The reference is the base model (LoRA disabled) and takes no gradient; in
/// reference-free mode log π_ref ≡ 0. At the start of training π = π_ref, so DPO starts at ln 2.
/// </summary>
public sealed class PreferenceLoss
{
    /// <summary>Which objective. Default DPO (<see cref="PreferenceLossKind.Sigmoid"/>).</summary>
    public PreferenceLossKind Kind { get; init; } = PreferenceLossKind.Sigmoid;

    /// <summary>β, the strength of the implicit KL constraint. Default 0.1.</summary>
    public double Beta { get; init; } = 0.1;

    /// <summary>The loss, averaged over pairs.</summary>
    /// <param name="policyChosen">[B] log π(p⁺|q).</param>
    /// <param name="policyRejected">[B] log π(n|q).</param>
    /// <param name="referenceChosen">[B] log π_ref(p⁺|q), or null for reference-free.</param>
    /// <param name="referenceRejected">[B] log π_ref(n|q), or null for reference-free.</param>
    public Tensor Compute(Tensor policyChosen, Tensor policyRejected, Tensor? referenceChosen = null, Tensor? referenceRejected = null)
    {
        if (Beta <= 0 || !double.IsFinite(Beta))
            throw new UllmeException($"PreferenceLoss: Beta must be a positive number, got {Beta}.");
        LossChecks.Rank(policyChosen, 1, "policyChosen");
        LossChecks.SameShape(policyChosen, "policyChosen", policyRejected, "policyRejected");
        if ((referenceChosen is null) != (referenceRejected is null))
            throw new UllmeException("PreferenceLoss: give both reference log-probs or neither (reference-free).");
        if (referenceChosen is not null)
        {
            LossChecks.SameShape(policyChosen, "policyChosen", referenceChosen, "referenceChosen");
            LossChecks.SameShape(policyChosen, "policyChosen", referenceRejected!, "referenceRejected");
        }

        using var scope = NewDisposeScope();
        var pc = LossChecks.Upcast(policyChosen);
        var pr = LossChecks.Upcast(policyRejected);
        // The reference takes no gradient, whatever the caller passes.
        var chosenRatio = referenceChosen is null ? pc : pc - LossChecks.Upcast(referenceChosen).detach();     // r⁺ [B]
        var rejectedRatio = referenceRejected is null ? pr : pr - LossChecks.Upcast(referenceRejected).detach(); // r⁻ [B]
        var z = (chosenRatio - rejectedRatio).Mul(Beta);                                                        // [B]

        var losses = Kind switch
        {
            PreferenceLossKind.Sigmoid => -nn.functional.logsigmoid(z),
            PreferenceLossKind.Ipo => z.Div(Beta).Sub(1.0 / (2.0 * Beta)).Square(),
            PreferenceLossKind.Hinge => z.SubtractedFrom(1).ClampMin(0),
            PreferenceLossKind.KtoPair => KtoPair(chosenRatio, rejectedRatio),
            _ => throw new UllmeException($"PreferenceLoss: unknown Kind {Kind}."),
        };
        return losses.mean().MoveToOuterDisposeScope();
    }

    private Tensor KtoPair(Tensor chosenRatio, Tensor rejectedRatio)
    {
        // KTO's reference point z₀ estimates KL(π‖π_ref); the paper does not back-propagate through it. In the paired
        // variant the chosen half is judged against the rejected half's estimate and vice versa.
        var chosenKl = chosenRatio.mean().ClampMin(0).detach();
        var rejectedKl = rejectedRatio.mean().ClampMin(0).detach();
        var chosenLoss = (chosenRatio - rejectedKl).Mul(Beta).sigmoid().SubtractedFrom(1);  // [B]
        var rejectedLoss = (chosenKl - rejectedRatio).Mul(Beta).sigmoid().SubtractedFrom(1); // [B]
        return cat([chosenLoss, rejectedLoss], 0);                                         // [2B]
    }
}

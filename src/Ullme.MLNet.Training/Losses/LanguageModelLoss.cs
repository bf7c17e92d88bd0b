using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Losses;

/// <summary>How <see cref="LanguageModelLoss"/> averages token NLLs.</summary>
public enum LanguageModelReduction
{
    /// <summary>Σ over all scored tokens of the batch / number of scored tokens (Hugging Face's causal-LM loss:
    /// long passages weigh more).</summary>
    TokenMean,

    /// <summary>Mean over sequences of each sequence's mean token NLL (every passage weighs the same).</summary>
    SequenceMean,
}

/// <summary>
/// Supervised fine-tuning (SFT) loss: next-token negative log-likelihood of the positive passage given the
/// generation prompt built from the query.
/// <code>
///   L = −Σ_{b,t} m[b,t] · log p(x_t | x_&lt;t)  /  Σ_{b,t} m[b,t]
/// </code>
/// where m marks the passage tokens (not the prompt, not padding). Keeps the decoder a language model while its
/// weights are tuned to embed (GritLM-style joint training).
/// </summary>
public sealed class LanguageModelLoss
{
    /// <summary>Averaging over tokens. Default <see cref="LanguageModelReduction.TokenMean"/>.</summary>
    public LanguageModelReduction Reduction { get; init; } = LanguageModelReduction.TokenMean;

    /// <param name="tokenLogProbs">[B, T] log p of each token (from <see cref="TokenLogProbs"/>).</param>
    /// <param name="mask">[B, T]: the passage tokens to train on.</param>
    /// <returns>Scalar NLL.</returns>
    public Tensor Compute(Tensor tokenLogProbs, Tensor mask)
    {
        LossChecks.Rank(tokenLogProbs, 2, "tokenLogProbs");
        LossChecks.SameShape(tokenLogProbs, "tokenLogProbs", mask, "mask");
        using var scope = NewDisposeScope();
        var lp = LossChecks.Upcast(tokenLogProbs);
        var m = mask.to(lp.dtype);
        var perRow = m.sum(1);                                                           // [B]
        if (perRow.Eq(0).any().item<bool>())
            throw new UllmeException("LanguageModelLoss: a sequence in the batch has no target tokens (empty passage?).");
        var nll = -(lp * m);                                                             // [B, T]
        var loss = Reduction switch
        {
            LanguageModelReduction.TokenMean => nll.sum() / perRow.sum(),
            LanguageModelReduction.SequenceMean => (nll.sum(1) / perRow).mean(),
            _ => throw new UllmeException($"LanguageModelLoss: unknown Reduction {Reduction}."),
        };
        return loss.MoveToOuterDisposeScope();
    }
}

using TorchSharp;
using Ullme.MLNet.Inference;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Training.Losses;

/// <summary>Which way the KL divergence between the two candidate distributions is taken.</summary>
public enum KlDirection
{
    /// <summary>KL(P_gen ‖ P_rep): the representation side is pulled toward the generation side (ULLME).</summary>
    GenerationToRepresentation,

    /// <summary>KL(P_rep ‖ P_gen).</summary>
    RepresentationToGeneration,
}

/// <summary>
/// GRL consistency (ULLME's Generation-augmented Representation Learning): the model's two views of relevance
/// should agree. For each query q and its own candidates C(q) = {p⁺} ∪ N(q):
/// <code>
///   P_rep(c|q) = softmax_c( cos(e_q, e_c) / τ_rep )
///   P_gen(c|q) = softmax_c( s_gen(q, c) / τ_gen ),   s_gen = mean (or sum) token log-prob of c after the prompt of q
///   L = (1/Q) Σ_q KL(P_gen ‖ P_rep) = (1/Q) Σ_q Σ_c P_gen (log P_gen − log P_rep)
/// </code>
/// The generation side is detached by default, so it acts as a teacher ranking that the embeddings learn to
/// reproduce; options reverse the direction or let the gradient reach the generation scores too.
/// </summary>
public sealed class GrlConsistencyLoss
{
    /// <summary>τ_rep for the representation softmax. Default 0.05.</summary>
    public double RepresentationTemperature { get; init; } = 0.05;

    /// <summary>τ_gen for the generation softmax. Default 1.</summary>
    public double GenerationTemperature { get; init; } = 1.0;

    /// <summary>KL direction. Default KL(P_gen ‖ P_rep).</summary>
    public KlDirection Direction { get; init; } = KlDirection.GenerationToRepresentation;

    /// <summary>Stop the gradient into the generation scores (default true, as in ULLME's code).</summary>
    public bool DetachGeneration { get; init; } = true;

    /// <summary>How token log-probs become s_gen (used by <see cref="ComputeFromTokens"/>). Default mean.</summary>
    public GenerationScore Score { get; init; } = GenerationScore.Mean;

    /// <summary>The loss, averaged over queries.</summary>
    /// <param name="queries">[Q, H] query embeddings.</param>
    /// <param name="candidates">[Q, K, H]: query i's candidates (its positive and hard negatives).</param>
    /// <param name="generationScores">[Q, K] s_gen(q_i, c_ik).</param>
    /// <param name="candidateMask">[Q, K] or null: false for padding slots when queries have fewer candidates.</param>
    public Tensor Compute(Tensor queries, Tensor candidates, Tensor generationScores, Tensor? candidateMask = null)
    {
        if (RepresentationTemperature <= 0 || !double.IsFinite(RepresentationTemperature))
            throw new UllmeException($"GrlConsistencyLoss: RepresentationTemperature must be positive, got {RepresentationTemperature}.");
        if (GenerationTemperature <= 0 || !double.IsFinite(GenerationTemperature))
            throw new UllmeException($"GrlConsistencyLoss: GenerationTemperature must be positive, got {GenerationTemperature}.");
        LossChecks.Rank(queries, 2, "queries");
        LossChecks.Rank(candidates, 3, "candidates");
        LossChecks.Rank(generationScores, 2, "generationScores");
        if (candidates.shape[0] != queries.shape[0] || candidates.shape[2] != queries.shape[1])
            throw new UllmeException($"GrlConsistencyLoss: candidates {LossChecks.Shape(candidates)} must be [Q, K, H] for queries {LossChecks.Shape(queries)}.");
        if (generationScores.shape[0] != candidates.shape[0] || generationScores.shape[1] != candidates.shape[1])
            throw new UllmeException($"GrlConsistencyLoss: generationScores {LossChecks.Shape(generationScores)} must be [Q, K] for candidates {LossChecks.Shape(candidates)}.");
        if (candidateMask is not null) LossChecks.SameShape(generationScores, "generationScores", candidateMask, "candidateMask");

        using var scope = NewDisposeScope();
        var q = nn.functional.normalize(LossChecks.Upcast(queries), p: 2, dim: -1);          // [Q, H]
        var c = nn.functional.normalize(LossChecks.Upcast(candidates), p: 2, dim: -1);       // [Q, K, H]
        var cos = c.matmul(q.unsqueeze(2)).squeeze(2);                                       // [Q, K]
        var repLogits = cos.Div(RepresentationTemperature);
        var gen = LossChecks.Upcast(generationScores);
        if (DetachGeneration) gen = gen.detach();
        var genLogits = gen.to(repLogits.dtype).Div(GenerationTemperature);

        Tensor? valid = null;
        if (candidateMask is not null)
        {
            valid = candidateMask.to(ScalarType.Bool);
            if (!valid.any(1).all().item<bool>())
                throw new UllmeException("GrlConsistencyLoss: a query has no valid candidates in candidateMask.");
            repLogits = repLogits.MaskedFill(valid.logical_not(), double.NegativeInfinity);
            genLogits = genLogits.MaskedFill(valid.logical_not(), double.NegativeInfinity);
        }
        var logRep = repLogits.log_softmax(1);                                               // [Q, K]
        var logGen = genLogits.log_softmax(1);                                               // [Q, K]
        var (logP, logQ) = Direction == KlDirection.GenerationToRepresentation ? (logGen, logRep) : (logRep, logGen);
        var terms = logP.exp() * (logP - logQ);                                              // [Q, K]
        if (valid is not null) terms = terms.MaskedFill(valid.logical_not(), 0.0);           // 0·(−∞ − −∞) would be NaN
        return terms.sum(1).mean().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Same, with s_gen formed from token log-probs by <see cref="Score"/>.
    /// </summary>
    /// <param name="queries">[Q, H] query embeddings.</param>
    /// <param name="candidates">[Q, K, H] candidate embeddings.</param>
    /// <param name="tokenLogProbs">[Q·K, T] token log-probs of every candidate (row q·K + k), e.g. from
    /// <see cref="TokenLogProbs.ForInputs"/>.</param>
    /// <param name="tokenMask">[Q·K, T]: the candidate's tokens (not prompt, not padding).</param>
    /// <param name="candidateMask">[Q, K] or null: false for padding slots.</param>
    public Tensor ComputeFromTokens(Tensor queries, Tensor candidates, Tensor tokenLogProbs, Tensor tokenMask, Tensor? candidateMask = null)
    {
        LossChecks.Rank(candidates, 3, "candidates");
        using var scope = NewDisposeScope();
        var scores = Score == GenerationScore.Mean ? TokenLogProbs.Mean(tokenLogProbs, tokenMask) : TokenLogProbs.Sum(tokenLogProbs, tokenMask);
        if (scores.shape[0] != candidates.shape[0] * candidates.shape[1])
            throw new UllmeException($"GrlConsistencyLoss: tokenLogProbs has {scores.shape[0]} rows, expected Q·K = {candidates.shape[0] * candidates.shape[1]}.");
        return Compute(queries, candidates, scores.reshape(candidates.shape[0], candidates.shape[1]), candidateMask).MoveToOuterDisposeScope();
    }
}

using TorchSharp;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Losses;

/// <summary>The tokens of one batch after <see cref="MaskedNextTokenLoss.Mask"/>: the model's input and the positions
/// whose original token is predicted.</summary>
/// <param name="InputIds">Per text, its ids with the chosen positions replaced.</param>
/// <param name="Predicted">Per text, per position: whether the original token there is a target.</param>
internal sealed record MaskedTokens(IReadOnlyList<int[]> InputIds, IReadOnlyList<bool[]> Predicted)
{
    /// <summary>Target positions over the batch.</summary>
    public int Count => Predicted.Sum(p => p.Count(x => x));
}

/// <summary>
/// LLM2Vec's masked next-token prediction (MNTP, BehnamGhader et al. 2024): a decoder made bidirectional learns to use
/// its new right context by recovering masked tokens, each predicted — as the decoder's head always predicts — from
/// the state one position to its left:
/// <code>
///   L = −Σ_{b,t ∈ M} log p(x_{b,t} | h_{b,t−1}(x̃))  /  |M|
/// </code>
/// where x is the text, x̃ the text with the positions M replaced (<see cref="Mask"/>: each non-special position is
/// chosen with probability <see cref="MaskRatio"/>; a chosen one becomes the mask token with probability 0.8, a random
/// token with 0.1, and stays with 0.1 — Hugging Face's <c>DataCollatorForLanguageModeling</c>, LLM2Vec's default
/// collator) and h the final states of x̃ under bidirectional attention. Only the chosen positions' logits are formed
/// (<see cref="TokenLogProbs"/>, chunked), so the vocabulary never costs B·T·V floats.
/// </summary>
internal sealed class MaskedNextTokenLoss
{
    /// <summary>Chance that a non-special position is chosen. Default 0.2.</summary>
    public double MaskRatio { get; init; } = 0.2;

    /// <summary>The id a chosen position shows (80% of the time).</summary>
    public required int MaskTokenId { get; init; }

    /// <summary>Vocabulary size (random replacements are drawn from [0, V)).</summary>
    public required int VocabularySize { get; init; }

    /// <summary>Ids never chosen (BOS, EOS, pad, the tokenizer's prefix and suffix ids).</summary>
    public IReadOnlySet<int> SpecialIds { get; init; } = new HashSet<int>();

    /// <summary>
    /// Chooses and replaces positions of <paramref name="rows"/>, drawing from <see cref="ReplayableDropout.Source"/>
    /// (torch's host generator: seeded by the run and saved in its checkpoints, so a resumed run masks alike).
    /// Position 0 is never chosen (no state precedes it). A batch in which no position was chosen gets one: a
    /// uniformly drawn eligible position, so every step trains.
    /// </summary>
    public MaskedTokens Mask(IReadOnlyList<int[]> rows)
    {
        int total = rows.Sum(r => r.Length);
        using var draws = torch.rand([Math.Max(1, total) * 3L], ScalarType.Float64, generator: ReplayableDropout.Source);
        var u = draws.data<double>().ToArray();
        var inputs = new List<int[]>(rows.Count);
        var predicted = new List<bool[]>(rows.Count);
        var eligible = new List<(int Row, int Pos)>();
        int k = 0, chosen = 0;
        for (int r = 0; r < rows.Count; r++)
        {
            var ids = (int[])rows[r].Clone();
            var target = new bool[ids.Length];
            for (int t = 0; t < ids.Length; t++, k++)
            {
                if (t == 0 || SpecialIds.Contains(ids[t])) continue;
                eligible.Add((r, t));
                if (u[3 * k] >= MaskRatio) continue;
                target[t] = true;
                chosen++;
                ids[t] = Replacement(rows[r][t], u[3 * k + 1], u[3 * k + 2]);
            }
            inputs.Add(ids);
            predicted.Add(target);
        }
        if (chosen == 0 && eligible.Count > 0)
        {
            var (r, t) = eligible[Math.Min(eligible.Count - 1, (int)(u[0] * eligible.Count))];
            predicted[r][t] = true;
            inputs[r][t] = Replacement(rows[r][t], u[1], u[2]);
        }
        return new MaskedTokens(inputs, predicted);
    }

    private int Replacement(int original, double kind, double pick) =>
        kind < 0.8 ? MaskTokenId : kind < 0.9 ? Math.Min(VocabularySize - 1, (int)(pick * VocabularySize)) : original;

    /// <summary>
    /// The mean NLL of the original tokens at the predicted positions, each from the state at the position before it.
    /// </summary>
    /// <param name="hidden">[B, T, H] final states of the masked input.</param>
    /// <param name="originalIds">[B, T] int64: the unmasked ids (the targets).</param>
    /// <param name="predicted">[B, T] bool: the target positions (never set at t = 0).</param>
    /// <param name="lmHead">States [M, H] → logits [M, V].</param>
    /// <returns>Scalar, float32 (float64 for float64 states).</returns>
    public static Tensor Compute(Tensor hidden, Tensor originalIds, Tensor predicted, Func<Tensor, Tensor> lmHead)
    {
        using var scope = NewDisposeScope();
        var mask = predicted.to(ScalarType.Bool);
        long count = mask.sum().item<long>();
        if (count == 0) throw new UllmeException("MaskedNextTokenLoss: no position of the batch is a target.");
        var lp = TokenLogProbs.ForInputs(hidden, originalIds, mask, lmHead);                 // [B, T], 0 off target
        using var n = ((double)count).ToScalar();
        return lp.sum().neg().div(n).MoveToOuterDisposeScope();
    }
}

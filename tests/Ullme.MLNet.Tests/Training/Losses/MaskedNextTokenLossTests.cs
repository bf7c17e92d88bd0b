using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

/// <summary>LLM2Vec's masked next-token prediction: the masking rule and the loss (token i predicted from state i − 1).</summary>
[Collection(TorchCollection.Name)]
public class MaskedNextTokenLossTests
{
    private const int V = 7, H = 4;

    [Fact]
    public void TheLossIsTheMeanNllOfEachMaskedTokenFromTheStateBeforeIt()
    {
        using var scope = NewDisposeScope();
        var hData = Values(3, 2 * 5 * H);
        var wData = Values(4, V * H);
        long[] ids = [1, 4, 5, 6, 3, 1, 2, 3, 0, 0];
        bool[] predicted = [false, true, false, true, false, false, true, true, false, false];
        var hidden = Leaf(hData, 2, 5, H);
        var w = T(wData, V, H);
        var loss = MaskedNextTokenLoss.Compute(hidden, tensor(ids, [2, 5]), tensor(predicted, [2, 5]), h => h.matmul(w.t()));

        double sum = 0;
        int count = 0;
        for (int b = 0; b < 2; b++)
            for (int t = 1; t < 5; t++)
            {
                if (!predicted[b * 5 + t]) continue;
                var logits = Enumerable.Range(0, V).Select(v => Enumerable.Range(0, H).Sum(k => wData[v * H + k] * hData[(b * 5 + t - 1) * H + k])).ToArray();
                sum += LogSumExp(logits) - logits[ids[b * 5 + t]];
                count++;
            }
        Close(sum / count, Scalar(loss), 1e-12, "loss");

        // The gradient reaches exactly the states one position before a target (the head predicts the next token).
        loss.backward();
        var grad = Data(hidden.grad!);
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 5; t++)
            {
                bool feedsTarget = t + 1 < 5 && predicted[b * 5 + t + 1];
                double norm = Enumerable.Range(0, H).Sum(k => Math.Abs(grad[(b * 5 + t) * H + k]));
                Assert.True(feedsTarget == norm > 0, $"row {b} position {t}: gradient {norm}, feeds a target: {feedsTarget}");
            }
    }

    [Fact]
    public void MaskingChoosesTheRatioOfNonSpecialPositions_80PercentShowTheMaskToken_AndReplaysFromTheGeneratorState()
    {
        const int maskId = 9;
        var masking = new MaskedNextTokenLoss { MaskRatio = 0.2, MaskTokenId = maskId, VocabularySize = 50, SpecialIds = new HashSet<int> { 1, 2 } };
        var rng = new Random(5);
        var rows = Enumerable.Range(0, 300).Select(_ => new[] { 1 }.Concat(Enumerable.Range(0, 40).Select(_ => rng.Next(10, 50))).Append(2).ToArray()).ToList();

        using var state = ReplayableDropout.CaptureState();
        var masked = masking.Mask(rows);
        int chosen = 0, shown = 0, kept = 0;
        for (int r = 0; r < rows.Count; r++)
        {
            Assert.False(masked.Predicted[r][0]);
            Assert.False(masked.Predicted[r][^1]);                                   // EOS is special
            Assert.Equal(rows[r][0], masked.InputIds[r][0]);
            Assert.Equal(rows[r][^1], masked.InputIds[r][^1]);
            for (int t = 0; t < rows[r].Length; t++)
            {
                if (!masked.Predicted[r][t])
                {
                    Assert.Equal(rows[r][t], masked.InputIds[r][t]);                  // only targets change
                    continue;
                }
                chosen++;
                if (masked.InputIds[r][t] == maskId) shown++;
                else if (masked.InputIds[r][t] == rows[r][t]) kept++;
            }
        }
        int eligible = rows.Count * 40;
        Assert.InRange(chosen / (double)eligible, 0.18, 0.22);
        Assert.InRange(shown / (double)chosen, 0.77, 0.83);
        Assert.InRange(kept / (double)chosen, 0.07, 0.14);                           // 10% kept (+ random draws equal to the original)

        ReplayableDropout.RestoreState(state);
        var again = masking.Mask(rows);
        Assert.Equal(masked.InputIds, again.InputIds);
        Assert.Equal(masked.Predicted, again.Predicted);
    }

    [Fact]
    public void ABatchWithNoChosenPositionGetsOne_ButNeverASpecialOne()
    {
        var masking = new MaskedNextTokenLoss { MaskRatio = 1e-9, MaskTokenId = 3, VocabularySize = 10, SpecialIds = new HashSet<int> { 1 } };
        var masked = masking.Mask([[1, 5, 6], [1, 1]]);
        Assert.Equal(1, masked.Count);
        Assert.True(masked.Predicted[0][1] || masked.Predicted[0][2]);
        Assert.DoesNotContain(true, masked.Predicted[1]);
    }

    [Fact]
    public void TheMaskTokenResolvesToUnkEosAnIdOrOneTokenText_AndOtherwiseNamesTheOption()
    {
        var words = new WordTokenizer(64);                                           // no unk: the default is eos
        Assert.Equal(2, MntpStep.ResolveMaskToken(words, null, 64));
        Assert.Equal(2, MntpStep.ResolveMaskToken(words, "eos", 64));
        Assert.Equal(0, MntpStep.ResolveMaskToken(words, "pad", 64));
        Assert.Equal(17, MntpStep.ResolveMaskToken(words, "17", 64));
        Assert.Equal(3 + 5, MntpStep.ResolveMaskToken(words, "w5", 64));
        Assert.Contains("FineTuneOptions.MaskToken", Assert.Throws<UllmeException>(() => MntpStep.ResolveMaskToken(words, "unk", 64)).Message);
        Assert.Contains("2 tokens", Assert.Throws<UllmeException>(() => MntpStep.ResolveMaskToken(words, "w1 w2", 64)).Message);
        Assert.Contains("outside the model's vocabulary of 64", Assert.Throws<UllmeException>(() => MntpStep.ResolveMaskToken(words, "64", 64)).Message);
    }
}

using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class LanguageModelLossTests
{
    // Two passages: 3 scored tokens in row 0, 1 in row 1 (prompt/padding positions are masked out).
    private static readonly double[] Lp = [-0.5, -1.0, -2.0, -9.0, -7.0, -3.0, -4.0, -0.25];
    private static readonly bool[] M = [false, true, true, true, false, false, false, true];

    [Fact]
    public void TokenMeanIsTotalNllOverScoredTokensWithGradientMinusMaskOverCount()
    {
        using var scope = NewDisposeScope();
        var lp = Leaf(Lp, 2, 4);
        var loss = new LanguageModelLoss().Compute(lp, tensor(M).reshape(2, 4));
        Close((1.0 + 2.0 + 9.0 + 0.25) / 4, Scalar(loss), 1e-15, "loss");
        loss.backward();
        Close(M.Select(m => m ? -1.0 / 4 : 0.0).ToArray(), Data(lp.grad!), 1e-15, "dL/dlp");
    }

    [Fact]
    public void SequenceMeanWeighsEveryPassageEquallyWithGradientMinusMaskOverRowCountTimesBatch()
    {
        using var scope = NewDisposeScope();
        var lp = Leaf(Lp, 2, 4);
        var loss = new LanguageModelLoss { Reduction = LanguageModelReduction.SequenceMean }.Compute(lp, tensor(M).reshape(2, 4));
        Close(((1.0 + 2.0 + 9.0) / 3 + 0.25) / 2, Scalar(loss), 1e-15, "loss");
        loss.backward();
        double[] expected = [0, -1.0 / 6, -1.0 / 6, -1.0 / 6, 0, 0, 0, -0.5];
        Close(expected, Data(lp.grad!), 1e-15, "dL/dlp");
    }

    [Fact]
    public void APassageWithoutTokensIsAnError()
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<UllmeException>(() => new LanguageModelLoss().Compute(T(Lp, 2, 4), tensor(new[] { true, false, false, false, false, false, false, false }).reshape(2, 4)));
        Assert.Contains("no target tokens", e.Message);
    }
}

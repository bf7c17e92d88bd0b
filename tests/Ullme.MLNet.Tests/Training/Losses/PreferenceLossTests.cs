using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class PreferenceLossTests
{
    // Sums of token log-probs for 3 (query, p+, n) pairs.
    private static readonly double[] Pc = [-12.0, -30.5, -8.25];
    private static readonly double[] Pr = [-14.0, -29.0, -30.0];
    private static readonly double[] Rc = [-13.0, -31.0, -9.0];
    private static readonly double[] Rr = [-13.5, -30.0, -19.0];
    private const double Beta = 0.1;

    private static double[] Margins(bool referenceFree) =>
        Enumerable.Range(0, 3).Select(i => (Pc[i] - (referenceFree ? 0 : Rc[i])) - (Pr[i] - (referenceFree ? 0 : Rr[i]))).ToArray();

    private static (Tensor loss, Tensor pc, Tensor pr, Tensor rc, Tensor rr) Run(PreferenceLossKind kind, bool referenceFree = false)
    {
        var pc = Leaf(Pc, 3);
        var pr = Leaf(Pr, 3);
        var rc = Leaf(Rc, 3);
        var rr = Leaf(Rr, 3);
        var loss = new PreferenceLoss { Kind = kind, Beta = Beta }.Compute(pc, pr, referenceFree ? null : rc, referenceFree ? null : rr);
        loss.backward();
        return (loss, pc, pr, rc, rr);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DpoIsMinusLogSigmoidOfBetaMarginWithGradientMinusBetaSigmoidOfMinusZ(bool referenceFree)
    {
        using var scope = NewDisposeScope();
        var h = Margins(referenceFree);
        var (loss, pc, pr, _, _) = Run(PreferenceLossKind.Sigmoid, referenceFree);
        Close(h.Select(x => -Math.Log(Sigmoid(Beta * x))).Average(), Scalar(loss), 1e-14, "loss");
        var g = h.Select(x => -Beta * Sigmoid(-Beta * x) / 3).ToArray();
        Close(g, Data(pc.grad!), 1e-14, "dL/dlogπ(p+)");
        Close(g.Select(x => -x).ToArray(), Data(pr.grad!), 1e-14, "dL/dlogπ(n)");
    }

    [Fact]
    public void IpoRegressesTheMarginOntoOneOverTwoBeta()
    {
        using var scope = NewDisposeScope();
        var h = Margins(false);
        var (loss, pc, pr, _, _) = Run(PreferenceLossKind.Ipo);
        Close(h.Select(x => Math.Pow(x - 1 / (2 * Beta), 2)).Average(), Scalar(loss), 1e-14, "loss");
        var g = h.Select(x => 2 * (x - 1 / (2 * Beta)) / 3).ToArray();
        Close(g, Data(pc.grad!), 1e-14, "dL/dlogπ(p+)");
        Close(g.Select(x => -x).ToArray(), Data(pr.grad!), 1e-14, "dL/dlogπ(n)");
    }

    [Fact]
    public void HingeIsZeroBeyondTheMarginAndLinearInside()
    {
        using var scope = NewDisposeScope();
        var h = Margins(false);   // β·h = 0.15, −0.05, 1.175: the last pair is past the margin
        var (loss, pc, pr, _, _) = Run(PreferenceLossKind.Hinge);
        Close(h.Select(x => Math.Max(0, 1 - Beta * x)).Average(), Scalar(loss), 1e-14, "loss");
        var g = h.Select(x => Beta * x < 1 ? -Beta / 3 : 0).ToArray();
        Assert.Equal(0.0, g[2]);
        Close(g, Data(pc.grad!), 1e-14, "dL/dlogπ(p+)");
        Close(g.Select(x => -x).ToArray(), Data(pr.grad!), 1e-14, "dL/dlogπ(n)");
    }

    [Fact]
    public void KtoPairJudgesEachHalfAgainstTheOtherHalfsDetachedKlEstimate()
    {
        using var scope = NewDisposeScope();
        var rPlus = Enumerable.Range(0, 3).Select(i => Pc[i] - Rc[i]).ToArray();
        var rMinus = Enumerable.Range(0, 3).Select(i => Pr[i] - Rr[i]).ToArray();
        double z0Plus = Math.Max(0, rPlus.Average()), z0Minus = Math.Max(0, rMinus.Average());
        Assert.True(z0Plus > 0);   // the data exercise the clamp on one side only
        Assert.Equal(0.0, z0Minus);
        double expected = (rPlus.Sum(r => 1 - Sigmoid(Beta * (r - z0Minus))) + rMinus.Sum(r => 1 - Sigmoid(Beta * (z0Plus - r)))) / 6;
        var (loss, pc, pr, _, _) = Run(PreferenceLossKind.KtoPair);
        Close(expected, Scalar(loss), 1e-14, "loss");
        // σ' = σ(1 − σ); the reference points take no gradient.
        var gc = rPlus.Select(r => { double s = Sigmoid(Beta * (r - z0Minus)); return -Beta * s * (1 - s) / 6; }).ToArray();
        var gr = rMinus.Select(r => { double s = Sigmoid(Beta * (z0Plus - r)); return Beta * s * (1 - s) / 6; }).ToArray();
        Close(gc, Data(pc.grad!), 1e-14, "dL/dlogπ(p+)");
        Close(gr, Data(pr.grad!), 1e-14, "dL/dlogπ(n)");
    }

    [Theory]
    [InlineData(PreferenceLossKind.Sigmoid)]
    [InlineData(PreferenceLossKind.Ipo)]
    [InlineData(PreferenceLossKind.Hinge)]
    [InlineData(PreferenceLossKind.KtoPair)]
    public void TheReferenceTakesNoGradient(PreferenceLossKind kind)
    {
        using var scope = NewDisposeScope();
        var (_, _, _, rc, rr) = Run(kind);
        Assert.Null(rc.grad);
        Assert.Null(rr.grad);
    }

    [Fact]
    public void DpoStartsAtLn2WhenPolicyEqualsReference()
    {
        using var scope = NewDisposeScope();
        var loss = new PreferenceLoss().Compute(T(Pc, 3), T(Pr, 3), T(Pc, 3), T(Pr, 3));
        Close(Math.Log(2), Scalar(loss), 1e-15, "loss");
    }

    [Fact]
    public void HalfAReferenceIsRejected()
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<UllmeException>(() => new PreferenceLoss().Compute(T(Pc, 3), T(Pr, 3), T(Rc, 3)));
        Assert.Contains("both reference", e.Message);
        e = Assert.Throws<UllmeException>(() => new PreferenceLoss().Compute(T(Pc, 3), T(Pr, 1, 3)));
        Assert.Contains("policyRejected", e.Message);
    }
}

using TorchSharp;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class TokenLogProbsTests
{
    private const int B = 2, Tn = 4, H = 3, V = 5;
    private static readonly double[] Hidden = Values(1, B * Tn * H);
    private static readonly double[] W = Values(2, V * H);
    private static readonly long[] Targets = [1, 4, 0, 2, 3, 3, 1, 0];
    private static readonly bool[] Mask = [false, true, true, true, true, true, false, false];

    /// <summary>log softmax(W h)[target] by hand.</summary>
    private static double HandLogProb(int row)
    {
        var logits = Enumerable.Range(0, V).Select(v => Dot(W, v * H, Hidden, row * H, H)).ToArray();
        return logits[Targets[row]] - LogSumExp(logits);
    }

    private static Tensor Head(Tensor w, Tensor h) => h.matmul(w.t());

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(256)]
    public void ValuesEqualHandLogSoftmaxAtMaskedPositionsForAnyChunkSize(int chunk)
    {
        using var scope = NewDisposeScope();
        var w = T(W, V, H);
        var lp = TokenLogProbs.Compute(T(Hidden, B, Tn, H), tensor(Targets).reshape(B, Tn), tensor(Mask).reshape(B, Tn), h => Head(w, h), chunk);
        Assert.Equal([B, Tn], lp.shape);
        var expected = Enumerable.Range(0, B * Tn).Select(r => Mask[r] ? HandLogProb(r) : 0.0).ToArray();
        Close(expected, Data(lp), 1e-12, "log p");
    }

    [Fact]
    public void Float32StatesGiveFloat32LogProbs()
    {
        using var scope = NewDisposeScope();
        var w = T(W, V, H).to(ScalarType.BFloat16);
        var lp = TokenLogProbs.Compute(T(Hidden, B, Tn, H).to(ScalarType.BFloat16), tensor(Targets).reshape(B, Tn), tensor(Mask).reshape(B, Tn), h => Head(w, h));
        Assert.Equal(ScalarType.Float32, lp.dtype);
        var expected = Enumerable.Range(0, B * Tn).Select(r => Mask[r] ? HandLogProb(r) : 0.0).ToArray();
        Close(expected, Data(lp), 0.05, "log p (bf16 states)");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(64)]
    public void ChunkedBackwardGivesTheSameGradientsAsFullLogSoftmaxAndFiniteDifferences(int chunk)
    {
        using var scope = NewDisposeScope();
        var weights = T(Values(3, B * Tn), B, Tn);   // an arbitrary linear functional of the log-probs
        var mask = tensor(Mask).reshape(B, Tn);
        var targets = tensor(Targets).reshape(B, Tn);

        // Reference: full-vocabulary log_softmax for all positions, plain autograd.
        var hRef = Leaf(Hidden, B, Tn, H);
        var wRef = Leaf(W, V, H);
        var full = Head(wRef, hRef).log_softmax(-1).gather(2, targets.unsqueeze(2)).squeeze(2) * mask.to(ScalarType.Float64);
        (full * weights).sum().backward();

        // Chunked path (custom autograd function with re-entrant backward into the head's weight).
        var h = Leaf(Hidden, B, Tn, H);
        var w = Leaf(W, V, H);
        var lp = TokenLogProbs.Compute(h, targets, mask, x => Head(w, x), chunk);
        Close(Data(full), Data(lp), 1e-12, "values");
        (lp * weights).sum().backward();
        Close(Data(hRef.grad!), Data(h.grad!), 1e-12, "dL/dhidden");
        Close(Data(wRef.grad!), Data(w.grad!), 1e-12, "dL/dW");

        double F() { using var s = NewDisposeScope(); using var g = no_grad(); return Scalar((TokenLogProbs.Compute(h, targets, mask, x => Head(w, x), chunk) * weights).sum()); }
        Close(Numeric(F, h), Data(h.grad!), 1e-7, "dL/dhidden (finite differences)");
        Close(Numeric(F, w), Data(w.grad!), 1e-7, "dL/dW (finite differences)");
    }

    [Fact]
    public void GradientsFlowThroughStatesComputedUpstream()
    {
        // The states come out of a layer (as in a real model): the chunked function must hand its input gradient
        // back to the outer graph.
        using var scope = NewDisposeScope();
        var x = Leaf(Values(4, B * Tn * H), B, Tn, H);
        var proj = Leaf(Values(5, H * H), H, H);
        var w = T(W, V, H);
        var mask = tensor(Mask).reshape(B, Tn);
        var targets = tensor(Targets).reshape(B, Tn);
        TokenLogProbs.Compute(x.matmul(proj).tanh(), targets, mask, h => Head(w, h), 3).sum().backward();
        double F() { using var s = NewDisposeScope(); return Scalar(TokenLogProbs.Compute(x.matmul(proj).tanh(), targets, mask, h => Head(w, h), 3).sum()); }
        Close(Numeric(F, proj), Data(proj.grad!), 1e-7, "dL/dproj");
        Close(Numeric(F, x), Data(x.grad!), 1e-7, "dL/dx");
    }

    [Fact]
    public void ForInputsScoresEachTokenFromThePreviousState()
    {
        using var scope = NewDisposeScope();
        var w = T(W, V, H);
        long[] ids = [1, 4, 0, 2, 3, 3, 1, 0];
        bool[] score = [false, false, true, true, false, true, true, false];
        var lp = TokenLogProbs.ForInputs(T(Hidden, B, Tn, H), tensor(ids).reshape(B, Tn), tensor(score).reshape(B, Tn), h => Head(w, h));
        var expected = new double[B * Tn];
        for (int b = 0; b < B; b++)
            for (int t = 1; t < Tn; t++)
            {
                if (!score[b * Tn + t]) continue;
                int row = b * Tn + t - 1;
                var logits = Enumerable.Range(0, V).Select(v => Dot(W, v * H, Hidden, row * H, H)).ToArray();
                expected[b * Tn + t] = logits[ids[b * Tn + t]] - LogSumExp(logits);
            }
        Close(expected, Data(lp), 1e-12, "log p(x_t | x_<t)");

        var e = Assert.Throws<UllmeException>(() => TokenLogProbs.ForInputs(T(Hidden, B, Tn, H), tensor(ids).reshape(B, Tn),
            tensor(new[] { true, false, false, false, false, false, false, false }).reshape(B, Tn), h => Head(w, h)));
        Assert.Contains("position 0", e.Message);
    }

    [Fact]
    public void SumAndMeanReduceOnlyMaskedTokens()
    {
        using var scope = NewDisposeScope();
        var lp = T([-1, -2, -3, -4, -5, -6], 2, 3);
        var mask = tensor(new[] { true, true, false, false, true, true }).reshape(2, 3);
        Close([-3.0, -11.0], Data(TokenLogProbs.Sum(lp, mask)), 1e-15, "sum");
        Close([-1.5, -5.5], Data(TokenLogProbs.Mean(lp, mask)), 1e-15, "mean");
        var e = Assert.Throws<UllmeException>(() => TokenLogProbs.Mean(lp, zeros(2, 3, dtype: ScalarType.Bool)));
        Assert.Contains("no scored tokens", e.Message);
    }
}

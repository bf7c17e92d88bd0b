using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class ContrastiveLossTests
{
    // 2 queries, their 2 positives and 2 hard negatives (one each) in 3 dimensions: every query sees 4 candidates.
    private static readonly double[] Q = [0.9, 0.1, -0.3, -0.2, 0.8, 0.5];
    private static readonly double[] P = [1.0, 0.3, -0.1, 0.1, 0.7, 0.9];
    private static readonly double[] N = [0.2, -0.9, 0.4, 0.6, 0.6, -0.2];

    /// <summary>InfoNCE by hand: every query against [p1, p2, n1, n2], target its own positive.</summary>
    private static double Hand(double tau, bool negativeL2)
    {
        double[][] cands = [P[0..3], P[3..6], N[0..3], N[3..6]];
        double total = 0;
        for (int i = 0; i < 2; i++)
        {
            var q = Q[(3 * i)..(3 * i + 3)];
            var logits = cands.Select(c =>
            {
                double cos = Cos(q, 0, c, 0, 3);
                return (negativeL2 ? -Math.Sqrt(2 - 2 * cos) : cos) / tau;
            }).ToArray();
            total += LogSumExp(logits) - logits[i];
        }
        return total / 2;
    }

    [Theory]
    [InlineData(ContrastiveSimilarity.Cosine, 0.05)]
    [InlineData(ContrastiveSimilarity.Cosine, 1.0)]
    [InlineData(ContrastiveSimilarity.NegativeL2, 0.05)]
    public void ValueEqualsHandComputedInfoNce(ContrastiveSimilarity similarity, double tau)
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss { Temperature = tau, Similarity = similarity }.Compute(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3));
        Close(Hand(tau, similarity == ContrastiveSimilarity.NegativeL2), Scalar(loss), 1e-12, "loss");
    }

    [Fact]
    public void DefaultTemperatureIsFiveHundredthsAndFloat32InputsWork()
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss().Compute(T(Q, 2, 3).to(ScalarType.Float32), T(P, 2, 3).to(ScalarType.Float32), T(N, 2, 3).to(ScalarType.Float32));
        Assert.Equal(ScalarType.Float32, loss.dtype);
        Close(Hand(0.05, false), Scalar(loss), 1e-5, "loss");
    }

    [Fact]
    public void WithoutHardNegativesOnlyInBatchPositivesCompete()
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss { Temperature = 0.5 }.Compute(T(Q, 2, 3), T(P, 2, 3));
        double expected = 0;
        for (int i = 0; i < 2; i++)
        {
            var logits = new[] { Cos(Q, 3 * i, P, 0, 3) / 0.5, Cos(Q, 3 * i, P, 3, 3) / 0.5 };
            expected += LogSumExp(logits) - logits[i];
        }
        Close(expected / 2, Scalar(loss), 1e-12, "loss");
    }

    [Theory]
    [InlineData(ContrastiveSimilarity.Cosine)]
    [InlineData(ContrastiveSimilarity.NegativeL2)]
    public void GradientsMatchFiniteDifferences(ContrastiveSimilarity similarity)
    {
        using var scope = NewDisposeScope();
        var q = Leaf(Q, 2, 3);
        var p = Leaf(P, 2, 3);
        var n = Leaf(N, 2, 3);
        var lossFn = new ContrastiveLoss { Temperature = 0.1, Similarity = similarity };
        lossFn.Compute(q, p, n).backward();
        double F() { using var s = NewDisposeScope(); return Scalar(lossFn.Compute(q, p, n)); }
        Close(Numeric(F, q), Data(q.grad!), 1e-6, "dL/dq");
        Close(Numeric(F, p), Data(p.grad!), 1e-6, "dL/dp");
        Close(Numeric(F, n), Data(n.grad!), 1e-6, "dL/dn");
    }

    [Fact]
    public void GradientWithRespectToLogitsIsSoftmaxMinusOneHot()
    {
        // Unit vectors along the axes make cos = dot, so ∂L/∂q can be written down exactly:
        // ∂L/∂q_i = (1/Q)(1/τ) Σ_d (softmax_d − 1[d = p_i]) · ∂cos(q_i, d)/∂q_i, and for |q| = 1, ∂cos/∂q = d − cos·q.
        using var scope = NewDisposeScope();
        double[] q = [1, 0, 0, 0, 1, 0];
        double[] pos = [0.6, 0.8, 0, 0, 0.6, 0.8];
        double tau = 0.5;
        var qt = Leaf(q, 2, 3);
        new ContrastiveLoss { Temperature = tau }.Compute(qt, T(pos, 2, 3)).backward();
        var expected = new double[6];
        for (int i = 0; i < 2; i++)
        {
            double[] cos = [Dot(q, 3 * i, pos, 0, 3), Dot(q, 3 * i, pos, 3, 3)];
            double lse = LogSumExp(cos.Select(c => c / tau));
            for (int d = 0; d < 2; d++)
            {
                double coef = (Math.Exp(cos[d] / tau - lse) - (d == i ? 1 : 0)) / tau / 2;
                for (int k = 0; k < 3; k++) expected[3 * i + k] += coef * (pos[3 * d + k] - cos[d] * q[3 * i + k]);
            }
        }
        Close(expected, Data(qt.grad!), 1e-12, "dL/dq");
    }

    [Theory]
    [InlineData(0.05)]
    [InlineData(0.7)]
    public void SymmetricAveragesBothDirectionsAndLeavesHardNegativesToQueries(double tau)
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss { Temperature = tau, Symmetric = true }.Compute(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3));
        // Document → query by hand: p_i against [q1, q2], target q_i (no hard negatives in this direction).
        double reverse = 0;
        for (int i = 0; i < 2; i++)
        {
            var logits = new[] { Cos(P, 3 * i, Q, 0, 3) / tau, Cos(P, 3 * i, Q, 3, 3) / tau };
            reverse += LogSumExp(logits) - logits[i];
        }
        Close((Hand(tau, false) + reverse / 2) / 2, Scalar(loss), 1e-12, "symmetric loss");
        var q = Leaf(Q, 2, 3);
        var p = Leaf(P, 2, 3);
        var lossFn = new ContrastiveLoss { Temperature = tau, Symmetric = true };
        lossFn.Compute(q, p, T(N, 2, 3)).backward();
        double F() { using var s = NewDisposeScope(); return Scalar(lossFn.Compute(q, p, T(N, 2, 3))); }
        Close(Numeric(F, q), Data(q.grad!), 1e-6, "dL/dq");
        Close(Numeric(F, p), Data(p.grad!), 1e-6, "dL/dp");
    }

    [Fact]
    public void BadShapesAndTemperatureAreRejectedWithTheirNames()
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<UllmeException>(() => new ContrastiveLoss().Compute(T(Q, 2, 3), T(P, 3, 2)));
        Assert.Contains("positives", e.Message);
        e = Assert.Throws<UllmeException>(() => new ContrastiveLoss().Compute(T(Q, 2, 3), T(P, 2, 3), T(Q, 3, 2)));
        Assert.Contains("hardNegatives", e.Message);
        e = Assert.Throws<UllmeException>(() => new ContrastiveLoss { Temperature = 0 }.Compute(T(Q, 2, 3), T(P, 2, 3)));
        Assert.Contains("Temperature", e.Message);
    }
}

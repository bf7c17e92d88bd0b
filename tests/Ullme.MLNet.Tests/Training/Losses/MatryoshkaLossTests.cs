using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class MatryoshkaLossTests
{
    // 3 queries, their positives and 3 hard negatives in 6 dimensions.
    private static readonly double[] Q = Values(1, 18), P = Values(2, 18), N = Values(3, 18);
    private const int H = 6;

    /// <summary>InfoNCE by hand on the first <paramref name="d"/> of each 6-wide row: every query against all
    /// positives then all negatives, target its own positive.</summary>
    private static double Hand(int d, double tau)
    {
        double total = 0;
        for (int i = 0; i < 3; i++)
        {
            var logits = new List<double>();
            for (int j = 0; j < 3; j++) logits.Add(Cos(Q, H * i, P, H * j, d) / tau);
            for (int j = 0; j < 3; j++) logits.Add(Cos(Q, H * i, N, H * j, d) / tau);
            total += LogSumExp(logits) - logits[i];
        }
        return total / 3;
    }

    [Fact]
    public void ValueIsTheWeightedSumOfInfoNceOnEachPrefix()
    {
        using var scope = NewDisposeScope();
        var loss = new MatryoshkaLoss { Inner = new ContrastiveLoss { Temperature = 0.1 }, Dimensions = [6, 4, 2], Weights = [1.0, 0.5, 0.25] }
            .Compute(T(Q, 3, H), T(P, 3, H), T(N, 3, H));
        Close(Hand(6, 0.1) + 0.5 * Hand(4, 0.1) + 0.25 * Hand(2, 0.1), Scalar(loss), 1e-12, "loss");
        // Default weights are 1; the full width alone is the plain contrastive loss.
        var unweighted = new MatryoshkaLoss { Inner = new ContrastiveLoss { Temperature = 0.1 }, Dimensions = [3, 1] }.Compute(T(Q, 3, H), T(P, 3, H), T(N, 3, H));
        Close(Hand(3, 0.1) + Hand(1, 0.1), Scalar(unweighted), 1e-12, "unweighted");
        var full = new MatryoshkaLoss { Inner = new ContrastiveLoss { Temperature = 0.1 }, Dimensions = [6] }.Compute(T(Q, 3, H), T(P, 3, H), T(N, 3, H));
        Close(Scalar(new ContrastiveLoss { Temperature = 0.1 }.Compute(T(Q, 3, H), T(P, 3, H), T(N, 3, H))), Scalar(full), 1e-12, "full width");
    }

    [Fact]
    public void GradientsMatchFiniteDifferencesAndSkipDimensionsBeyondTheWidestPrefix()
    {
        using var scope = NewDisposeScope();
        var q = Leaf(Q, 3, H);
        var p = Leaf(P, 3, H);
        var n = Leaf(N, 3, H);
        var lossFn = new MatryoshkaLoss { Inner = new ContrastiveLoss { Temperature = 0.2 }, Dimensions = [4, 2], Weights = [1.0, 2.0] };
        lossFn.Compute(q, p, n).backward();
        double F() { using var s = NewDisposeScope(); return Scalar(lossFn.Compute(q, p, n)); }
        Close(Numeric(F, q), Data(q.grad!), 1e-6, "dL/dq");
        Close(Numeric(F, p), Data(p.grad!), 1e-6, "dL/dp");
        Close(Numeric(F, n), Data(n.grad!), 1e-6, "dL/dn");
        // Dimensions 4 and 5 are in no prefix: no gradient reaches them.
        var gq = Data(q.grad!);
        for (int i = 0; i < 3; i++)
            for (int k = 4; k < H; k++) Assert.Equal(0.0, gq[H * i + k]);
    }

    [Fact]
    public void BadDimensionsAndWeightsAreRejectedWithTheirNames()
    {
        using var scope = NewDisposeScope();
        var inner = new ContrastiveLoss();
        Assert.Contains("width 6", Assert.Throws<UllmeException>(() => new MatryoshkaLoss { Inner = inner, Dimensions = [8] }.Compute(T(Q, 3, H), T(P, 3, H))).Message);
        Assert.Contains("twice", Assert.Throws<UllmeException>(() => new MatryoshkaLoss { Inner = inner, Dimensions = [4, 4] }.Compute(T(Q, 3, H), T(P, 3, H))).Message);
        Assert.Contains("MatryoshkaWeights", Assert.Throws<UllmeException>(() => new MatryoshkaLoss { Inner = inner, Dimensions = [4, 2], Weights = [1.0] }.Compute(T(Q, 3, H), T(P, 3, H))).Message);
        Assert.Contains("MatryoshkaDimensions", Assert.Throws<UllmeException>(() => new Ullme.MLNet.Training.FineTuneOptions { MatryoshkaDimensions = [0] }.Validate()).Message);
    }
}

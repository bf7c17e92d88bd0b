using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

[Collection(TorchCollection.Name)]
public class GrlConsistencyLossTests
{
    // 2 queries × 3 candidates (p+, n1, n2) in 3 dimensions, and the candidates' generation scores.
    private static readonly double[] Q = [0.9, 0.1, -0.3, -0.2, 0.8, 0.5];
    private static readonly double[] C = [1.0, 0.3, -0.1, 0.2, -0.9, 0.4, 0.5, 0.5, 0.5, 0.1, 0.7, 0.9, 0.6, 0.6, -0.2, -1.0, 0.0, 0.3];
    private static readonly double[] S = [-1.2, -2.5, -1.9, -0.8, -3.1, -0.9];

    private static double[] Softmax(double[] x) { double l = LogSumExp(x); return x.Select(v => Math.Exp(v - l)).ToArray(); }

    private static double Hand(double tauRep, double tauGen, bool reversed, bool[]? valid = null)
    {
        double total = 0;
        for (int i = 0; i < 2; i++)
        {
            var ks = Enumerable.Range(0, 3).Where(k => valid is null || valid[3 * i + k]).ToArray();
            var rep = Softmax(ks.Select(k => Cos(Q, 3 * i, C, 9 * i + 3 * k, 3) / tauRep).ToArray());
            var gen = Softmax(ks.Select(k => S[3 * i + k] / tauGen).ToArray());
            var (p, q) = reversed ? (rep, gen) : (gen, rep);
            total += p.Select((pk, j) => pk * Math.Log(pk / q[j])).Sum();
        }
        return total / 2;
    }

    [Theory]
    [InlineData(0.05, 1.0, KlDirection.GenerationToRepresentation)]
    [InlineData(0.5, 2.0, KlDirection.GenerationToRepresentation)]
    [InlineData(0.05, 1.0, KlDirection.RepresentationToGeneration)]
    public void ValueIsKlBetweenCandidateSoftmaxesAveragedOverQueries(double tauRep, double tauGen, KlDirection direction)
    {
        using var scope = NewDisposeScope();
        var loss = new GrlConsistencyLoss { RepresentationTemperature = tauRep, GenerationTemperature = tauGen, Direction = direction }
            .Compute(T(Q, 2, 3), T(C, 2, 3, 3), T(S, 2, 3));
        Close(Hand(tauRep, tauGen, direction == KlDirection.RepresentationToGeneration), Scalar(loss), 1e-12, "KL");
    }

    [Fact]
    public void ByDefaultOnlyTheEmbeddingsGetGradientAndItMatchesFiniteDifferences()
    {
        using var scope = NewDisposeScope();
        var q = Leaf(Q, 2, 3);
        var c = Leaf(C, 2, 3, 3);
        var s = Leaf(S, 2, 3);
        var fn = new GrlConsistencyLoss { RepresentationTemperature = 0.2 };
        fn.Compute(q, c, s).backward();
        Assert.Null(s.grad);
        double F() { using var sc = NewDisposeScope(); return Scalar(fn.Compute(q, c, s)); }
        Close(Numeric(F, q), Data(q.grad!), 1e-6, "dL/dq");
        Close(Numeric(F, c), Data(c.grad!), 1e-6, "dL/dc");
    }

    [Fact]
    public void WithGenerationGradientTheScoreGradientIsTheKlScoreFunction()
    {
        // ∂KL(P‖R)/∂s_k = (1/Q)(1/τ_gen) · P_k · [(log P_k − log R_k) − KL_q] for P = softmax(s/τ_gen).
        using var scope = NewDisposeScope();
        const double tauGen = 1.5, tauRep = 0.2;
        var s = Leaf(S, 2, 3);
        var q = Leaf(Q, 2, 3);
        var fn = new GrlConsistencyLoss { RepresentationTemperature = tauRep, GenerationTemperature = tauGen, DetachGeneration = false };
        fn.Compute(q, T(C, 2, 3, 3), s).backward();
        var expected = new double[6];
        for (int i = 0; i < 2; i++)
        {
            var rep = Softmax(Enumerable.Range(0, 3).Select(k => Cos(Q, 3 * i, C, 9 * i + 3 * k, 3) / tauRep).ToArray());
            var gen = Softmax(Enumerable.Range(0, 3).Select(k => S[3 * i + k] / tauGen).ToArray());
            double kl = gen.Select((p, k) => p * Math.Log(p / rep[k])).Sum();
            for (int k = 0; k < 3; k++) expected[3 * i + k] = gen[k] * (Math.Log(gen[k] / rep[k]) - kl) / tauGen / 2;
        }
        Close(expected, Data(s.grad!), 1e-12, "dL/ds_gen");
        double F() { using var sc = NewDisposeScope(); return Scalar(fn.Compute(q, T(C, 2, 3, 3), s)); }
        Close(Numeric(F, q), Data(q.grad!), 1e-6, "dL/dq");
    }

    [Fact]
    public void MaskedCandidateSlotsAreIgnoredWithoutNaN()
    {
        using var scope = NewDisposeScope();
        bool[] valid = [true, true, false, true, true, true];
        var c = Leaf(C, 2, 3, 3);
        var loss = new GrlConsistencyLoss().Compute(T(Q, 2, 3), c, T(S, 2, 3), tensor(valid).reshape(2, 3));
        Close(Hand(0.05, 1.0, false, valid), Scalar(loss), 1e-12, "KL");
        loss.backward();
        var g = Data(c.grad!);
        Assert.All(g, x => Assert.True(double.IsFinite(x)));
        Assert.All(g[6..9], x => Assert.Equal(0.0, x));   // the masked slot gets no gradient
    }

    [Fact]
    public void SumOrMeanScoresFromTokenLogProbs()
    {
        using var scope = NewDisposeScope();
        // 6 candidates × 3 token slots; candidate r has r % 3 + 1 tokens.
        var lp = T(Values(7, 18).Select(v => v - 1).ToArray(), 6, 3);
        var mask = tensor(Enumerable.Range(0, 18).Select(i => i % 3 <= (i / 3) % 3).ToArray()).reshape(6, 3);
        var lpData = Data(lp);
        var sums = Enumerable.Range(0, 6).Select(r => Enumerable.Range(0, r % 3 + 1).Sum(t => lpData[3 * r + t])).ToArray();
        var means = sums.Select((x, r) => x / (r % 3 + 1)).ToArray();
        foreach (var (kind, scores) in new[] { (GenerationScore.Sum, sums), (GenerationScore.Mean, means) })
        {
            var fn = new GrlConsistencyLoss { Score = kind };
            var expected = fn.Compute(T(Q, 2, 3), T(C, 2, 3, 3), T(scores, 2, 3));
            var actual = fn.ComputeFromTokens(T(Q, 2, 3), T(C, 2, 3, 3), lp, mask);
            Close(Scalar(expected), Scalar(actual), 1e-14, kind.ToString());
        }
    }

    [Fact]
    public void ShapeMismatchNamesTheTensor()
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<UllmeException>(() => new GrlConsistencyLoss().Compute(T(Q, 2, 3), T(C, 2, 3, 3), T(S, 3, 2)));
        Assert.Contains("generationScores", e.Message);
    }
}

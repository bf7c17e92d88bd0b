using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

/// <summary>Several positives per query: SupCon's L_out over [positives | hard negatives | extra positives].</summary>
[Collection(TorchCollection.Name)]
public class MultiplePositivesTests
{
    private static readonly double[] Q = [0.9, 0.1, -0.3, -0.2, 0.8, 0.5];
    private static readonly double[] P = [1.0, 0.3, -0.1, 0.1, 0.7, 0.9];
    private static readonly double[] N = [0.2, -0.9, 0.4];
    private static readonly double[] E = [0.7, 0.2, 0.1, 0.5, -0.4, 0.3];         // both of query 0's
    private const double Tau = 0.5;

    /// <summary>The loss by hand: each (query, own positive) term's softmax leaves out the query's other positives.</summary>
    private static double Expected(double[] q, bool symmetric)
    {
        double[][] cands = [P[0..3], P[3..6], N[0..3], E[0..3], E[3..6]];
        int[][] own = [[0, 3, 4], [1]];
        double total = 0;
        for (int i = 0; i < 2; i++)
        {
            double[] qi = q[(3 * i)..(3 * i + 3)];
            double sum = 0;
            foreach (int j in own[i])
            {
                var kept = Enumerable.Range(0, 5).Where(c => c == j || !own[i].Contains(c)).ToArray();
                var logits = kept.Select(c => Cos(qi, 0, cands[c], 0, 3) / Tau).ToArray();
                sum += LogSumExp(logits) - logits[Array.IndexOf(kept, j)];
            }
            total += sum / own[i].Length;
        }
        double forward = total / 2;
        if (!symmetric) return forward;
        double backward = 0;
        for (int i = 0; i < 2; i++)
        {
            var reverse = Enumerable.Range(0, 2).Select(j => Cos(cands[i], 0, q[(3 * j)..(3 * j + 3)], 0, 3) / Tau).ToArray();
            backward += LogSumExp(reverse) - reverse[i];
        }
        return (forward + backward / 2) / 2;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EachPositiveIsATargetWithTheQuerysOtherPositivesOutOfItsSoftmax(bool symmetric)
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss { Temperature = Tau, Symmetric = symmetric };
        var queries = Leaf(Q, 2, 3);
        var value = loss.ComputeMultiPositive(queries, T(P, 2, 3), T(N, 1, 3), T(E, 2, 3), [0, 0]);
        Close(Expected(Q, symmetric), Scalar(value), 1e-12, "loss");

        // Gradient w.r.t. the queries against finite differences of the hand computation.
        value.backward();
        var numeric = Numeric(() => Expected(Data(queries), symmetric), queries);
        Close(numeric, Data(queries.grad!), 1e-6, "dL/dq");
    }

    [Fact]
    public void WithoutExtraPositivesItIsTheOneTargetLoss_AndOwnExtrasIgnoreExclusion()
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss { Temperature = Tau };
        Close(Scalar(loss.Compute(T(Q, 2, 3), T(P, 2, 3), T(N, 1, 3))),
            Scalar(loss.ComputeMultiPositive(T(Q, 2, 3), T(P, 2, 3), T(N, 1, 3), zeros(0, 3, ScalarType.Float64), [])), 1e-12, "loss");
        // Query 0's own extras marked excluded (e.g. equal to its positive) stay targets; query 1 still pushes them away.
        bool[,] excluded = { { false, false, false, true, true }, { false, false, false, false, false } };
        Close(Scalar(loss.ComputeMultiPositive(T(Q, 2, 3), T(P, 2, 3), T(N, 1, 3), T(E, 2, 3), [0, 0])),
            Scalar(loss.ComputeMultiPositive(T(Q, 2, 3), T(P, 2, 3), T(N, 1, 3), T(E, 2, 3), [0, 0], tensor(excluded))), 1e-12, "loss");
        Assert.Contains("owner", Assert.Throws<UllmeException>(() => loss.ComputeMultiPositive(T(Q, 2, 3), T(P, 2, 3), null, T(E, 2, 3), [0, 2])).Message);
    }

    [Fact]
    public void JsonlPositivesArrayGivesTheFirstAsPositiveAndTheRestAsExtras()
    {
        var e = TrainingData.ParseLine("""{"query": "q", "positives": ["a", "b", "c"], "negatives": ["n"]}""", "d.jsonl", 3);
        Assert.Equal("a", e.Positive);
        Assert.Equal(["b", "c"], e.ExtraPositives);
        Assert.Contains("not both", Assert.Throws<UllmeException>(() => TrainingData.ParseLine("""{"query": "q", "positive": "a", "positives": ["b"]}""", "d.jsonl", 3)).Message);
        Assert.Contains("'d.jsonl' line 4: \"positives\" is empty", Assert.Throws<UllmeException>(() => TrainingData.ParseLine("""{"query": "q", "positives": []}""", "d.jsonl", 4)).Message);
        Assert.Contains("\"positives\"[1] must be a string", Assert.Throws<UllmeException>(() => TrainingData.ParseLine("""{"query": "q", "positives": ["a", 3]}""", "d.jsonl", 4)).Message);
    }

    [Fact]
    public void TheTrainerFeedsExtraPositivesToTheLossInBatchOrder()
    {
        using var scope = NewDisposeScope();
        using var model = TinyDecoder.Load();
        var batch = new List<TrainingExample>
        {
            new("w1 w2", "w3 w4", ["w9 w9"]) { ExtraPositives = ["w5 w6", "w7"] },
            new("w10 w11", "w12 w13", []),
            new("w20", "w21 w22", ["w30"]) { ExtraPositives = ["w23"] },
        };
        var options = new FineTuneOptions { Strategy = TrainingStrategy.Contrastive, Temperature = Tau };
        double trained = new UllmeFineTuner(model, options).ComputeLosses(batch).Contrastive!.Value;

        var engine = new EmbeddingEngine(model);
        var embed = new EmbeddingOptions { Pooling = options.Pooling, Attention = options.EmbeddingAttention, MaxLength = 64, Normalize = false };
        Tensor Rows(params string[] texts) => tensor(engine.Embed(texts, embed).SelectMany(v => v).ToArray()).reshape(texts.Length, -1);
        double expected = Scalar(new ContrastiveLoss { Temperature = Tau }.ComputeMultiPositive(
            Rows("w1 w2", "w10 w11", "w20"), Rows("w3 w4", "w12 w13", "w21 w22"), Rows("w9 w9", "w30"), Rows("w5 w6", "w7", "w23"), [0, 0, 2]));
        Assert.Equal(expected, trained, 5);
        double single = Scalar(new ContrastiveLoss { Temperature = Tau }.Compute(Rows("w1 w2", "w10 w11", "w20"), Rows("w3 w4", "w12 w13", "w21 w22"), Rows("w9 w9", "w30")));
        Assert.True(Math.Abs(single - trained) > 1e-3, "the extra positives changed nothing");
    }
}

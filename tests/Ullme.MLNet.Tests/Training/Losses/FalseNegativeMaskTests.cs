using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Losses;

/// <summary>False-negative masking: candidates whose text is a query's positive leave that query's softmax.</summary>
[Collection(TorchCollection.Name)]
public class FalseNegativeMaskTests
{
    private static readonly double[] Q = [0.9, 0.1, -0.3, -0.2, 0.8, 0.5];
    private static readonly double[] P = [1.0, 0.3, -0.1, 0.1, 0.7, 0.9];
    private static readonly double[] N = [0.2, -0.9, 0.4, 0.6, 0.6, -0.2];

    [Fact]
    public void TheMaskNamesDuplicatePositivesAndNegativesThatAreThePositive_NeverTheOwnPositive()
    {
        // rows 0 and 2 share a positive; row 1's hard negative is row 0's positive; row 2 has a negative equal to its own
        var mask = ContrastiveLoss.FalseNegatives(["paris", "rome", "paris"], ["paris", "oslo", "paris"])!;
        Assert.Equal((3, 6), (mask.GetLength(0), mask.GetLength(1)));
        bool[,] expected =
        {
            // p0     p1     p2     n0     n1     n2
            { false, false, true,  true,  false, true },   // query 0 (positive "paris")
            { false, false, false, false, false, false },  // query 1 ("rome"): nothing equals it
            { true,  false, false, true,  false, true },   // query 2 ("paris")
        };
        Assert.Equal(expected, mask);
        Assert.Null(ContrastiveLoss.FalseNegatives(["a", "b"], ["c"]));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MaskedCandidatesLeaveTheSoftmax_TheValueIsInfoNceOverTheRest(bool symmetric)
    {
        using var scope = NewDisposeScope();
        const double tau = 0.5;
        // query 0 must not be pushed from candidate n0 (index 2); query 1 must not be pushed from p0 (index 0)
        bool[,] excluded = { { false, false, true, false }, { true, false, false, false } };
        var loss = new ContrastiveLoss { Temperature = tau, Symmetric = symmetric }.ComputeMasked(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3), tensor(excluded));

        double[][] cands = [P[0..3], P[3..6], N[0..3], N[3..6]];
        double[][] queries = [Q[0..3], Q[3..6]];
        double forward = 0, backward = 0;
        for (int i = 0; i < 2; i++)
        {
            var kept = Enumerable.Range(0, 4).Where(j => !excluded[i, j]).ToArray();
            var logits = kept.Select(j => Cos(queries[i], 0, cands[j], 0, 3) / tau).ToArray();
            forward += LogSumExp(logits) - logits[Array.IndexOf(kept, i)];
            var keptQueries = Enumerable.Range(0, 2).Where(j => !excluded[i, j]).ToArray();   // p_i against the queries, same block
            var reverse = keptQueries.Select(j => Cos(cands[i], 0, queries[j], 0, 3) / tau).ToArray();
            backward += LogSumExp(reverse) - reverse[Array.IndexOf(keptQueries, i)];
        }
        double expected = symmetric ? (forward / 2 + backward / 2) / 2 : forward / 2;
        Close(expected, Scalar(loss), 1e-12, "loss");

        // unmasked it is another number: the mask is really applied
        var plain = new ContrastiveLoss { Temperature = tau, Symmetric = symmetric }.Compute(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3));
        Assert.True(Math.Abs(Scalar(plain) - expected) > 1e-3);
    }

    [Fact]
    public void AMaskedCandidateGetsNoGradientFromTheQueryThatIgnoresIt()
    {
        using var scope = NewDisposeScope();
        // hard negative n1 belongs to query 1's softmax only through candidates; mask it for both queries
        var n = Leaf(N, 2, 3);
        bool[,] excluded = { { false, false, false, true }, { false, false, false, true } };
        var loss = new ContrastiveLoss { Temperature = 0.5 }.ComputeMasked(T(Q, 2, 3), T(P, 2, 3), n, tensor(excluded));
        loss.backward();
        var g = n.grad!;
        Assert.Equal(0.0, g[1].abs().sum().item<double>());   // n1: no gradient at all
        Assert.True(g[0].abs().sum().item<double>() > 1e-6);   // n0 still pushed away
    }

    [Fact]
    public void MaskingAQuerysOwnPositive_OrAWrongShape_IsAnError()
    {
        using var scope = NewDisposeScope();
        var loss = new ContrastiveLoss();
        Assert.Contains("own positive", Assert.Throws<UllmeException>(() =>
            loss.ComputeMasked(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3), tensor(new bool[,] { { true, false, false, false }, { false, false, false, false } }))).Message);
        Assert.Contains("excluded must be a bool tensor [2, 4]", Assert.Throws<UllmeException>(() =>
            loss.ComputeMasked(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3), tensor(new bool[,] { { false, false }, { false, false } }))).Message);
    }

    [Fact]
    public void MatryoshkaPassesTheMaskToEveryPrefix()
    {
        using var scope = NewDisposeScope();
        bool[,] excluded = { { false, false, true, false }, { true, false, false, false } };
        var inner = new ContrastiveLoss { Temperature = 0.5 };
        var m = new MatryoshkaLoss { Inner = inner, Dimensions = [3, 2] }.Compute(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3), tensor(excluded));
        double expected = Scalar(inner.ComputeMasked(T(Q, 2, 3), T(P, 2, 3), T(N, 2, 3), tensor(excluded)))
            + Scalar(inner.ComputeMasked(T(Q, 2, 3).narrow(1, 0, 2), T(P, 2, 3).narrow(1, 0, 2), T(N, 2, 3).narrow(1, 0, 2), tensor(excluded)));
        Close(expected, Scalar(m), 1e-12, "loss");
    }
}

/// <summary>The trainer's objective builds the mask from the batch's texts when <c>MaskFalseNegatives</c> is on.</summary>
[Collection(TorchCollection.Name)]
public class FalseNegativeObjectiveTests
{
    [Fact]
    public void TheObjectiveMasksByText_OnlyWhenAsked()
    {
        using var scope = NewDisposeScope();
        var batch = new List<Ullme.MLNet.Training.TrainingExample>
        {
            new("capital of france", "paris", ["paris"]),      // its hard negative is its positive
            new("city of light", "paris", ["berlin"]),         // a duplicate positive of row 0
        };
        var rng = new Random(3);
        double[] R(int n) => Enumerable.Range(0, n).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var e = new Ullme.MLNet.Training.EmbeddingInputs(T(R(8), 2, 4), T(R(8), 2, 4), T(R(8), 2, 4));

        var on = new Ullme.MLNet.Training.TrainingObjective(new Ullme.MLNet.Training.FineTuneOptions { MaskFalseNegatives = true, Temperature = 0.5 });
        var tally = on.Begin(batch, null);
        Assert.Equal(new bool[,] { { false, true, true, false }, { true, false, true, false } }, tally.Excluded);
        on.Contrastive(tally, e)?.Dispose();
        double expected = Scalar(new ContrastiveLoss { Temperature = 0.5 }.ComputeMasked(e.Queries, e.Positives, e.Negatives, tensor(tally.Excluded!)));
        Close(expected, tally.Contrastive!.Value, 1e-6, "masked objective");   // the tally keeps a float32 copy

        var off = new Ullme.MLNet.Training.TrainingObjective(new Ullme.MLNet.Training.FineTuneOptions { Temperature = 0.5 });
        var plain = off.Begin(batch, null);
        Assert.Null(plain.Excluded);
        off.Contrastive(plain, e)?.Dispose();
        Assert.True(Math.Abs(plain.Contrastive!.Value - expected) > 1e-3);
    }
}

/// <summary>GISTEmbed's guided filter: a guide model's scores decide which in-batch candidates are false negatives.</summary>
[Collection(TorchCollection.Name)]
public class GuidedFalseNegativeTests
{
    [Fact]
    public void ACandidateTheGuideScoresAboveThePositive_IsExcluded()
    {
        // guide embeddings in 2-D: query 0 is closer to n0 than to its positive; query 1 is closest to its own positive
        float[][] q = [[1, 0], [0, 1]];
        float[][] p = [[0.6f, 0.8f], [0.1f, 1]];
        float[][] n = [[0.9f, 0.1f], [-1, 0]];
        var mask = ContrastiveLoss.GuidedFalseNegatives(q, p, n)!;
        Assert.Equal(new bool[,] { { false, false, true, false }, { false, false, false, false } }, mask);
        Assert.Null(ContrastiveLoss.GuidedFalseNegatives([[1, 0]], [[1, 0]], [[0, 1]]));
    }

    [Fact]
    public void TheObjectiveAsksTheGuideModel_AndUnitesItsMaskWithTheTextMask()
    {
        using var guide = Ullme.MLNet.Inference.UllmeModel.Load("default");
        var batch = new List<Ullme.MLNet.Training.TrainingExample>
        {
            new("A man is playing a guitar.", "Someone makes music.", ["A man plays the guitar.", "The stock market fell."]),
            new("The cat sleeps on the sofa.", "A cat is asleep on a couch.", ["Someone makes music."]),
        };
        var objective = new Ullme.MLNet.Training.TrainingObjective(new Ullme.MLNet.Training.FineTuneOptions { GuideModel = guide, MaskFalseNegatives = true });
        var excluded = objective.Begin(batch, null).Excluded!;

        var g = new Ullme.MLNet.Inference.EmbeddingEngine(guide).Embed(
            ["A man is playing a guitar.", "The cat sleeps on the sofa.", "Someone makes music.", "A cat is asleep on a couch.",
             "A man plays the guitar.", "The stock market fell.", "Someone makes music."]);
        var byGuide = ContrastiveLoss.GuidedFalseNegatives(g[..2], g[2..4], g[4..])!;
        Assert.True(byGuide[0, 2], "the guide should rank the paraphrase negative above the loose positive");
        Assert.True(excluded[0, 2]);                 // from the guide
        Assert.True(excluded[0, 4]);                 // from the text mask: query 1's negative is query 0's positive
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 5; j++)
                Assert.Equal(byGuide[i, j] || (i == 0 && j == 4), excluded[i, j]);
    }

    [AssetFact]
    public void TrainTakesAGuideModelAndTheTextMaskFromTheCommandLine()
    {
        string dir = Directory.CreateTempSubdirectory("ullme-guide-").FullName;
        try
        {
            string data = Path.Combine(dir, "t.jsonl");
            File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i =>
                System.Text.Json.JsonSerializer.Serialize(new { query = $"q {i} about cats", positive = $"p {i} cats", negatives = new[] { $"n {i} dogs", "p 0 cats" } })));
            var (code, err) = Ullme.MLNet.Tests.Cli.CliTests.Run("train", "--model", Assets.Stories260K, "--data", data, "--strategy", "contrastive",
                "--output", Path.Combine(dir, "out"), "--full", "--lr", "1e-3", "--steps", "2", "--batch-size", "4",
                "--guide-model", "default", "--mask-false-negatives", "--no-plot");
            Assert.True(code == 0, err);
            Assert.True(File.Exists(Path.Combine(dir, "out", "model.safetensors")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training;

public class LengthBucketsPartitionTests
{
    private static long Cost(IReadOnlyList<int> lengths, IEnumerable<int[]> buckets, int overhead) =>
        buckets.Sum(b => (long)b.Length * b.Max(i => lengths[i]) + overhead);

    /// <summary>The least cost over every way to cut the rows, sorted by length, into consecutive runs.</summary>
    private static long BruteForce(int[] lengths, int overhead)
    {
        var sorted = lengths.Order().ToArray();
        int n = sorted.Length;
        long best = long.MaxValue;
        for (int mask = 0; mask < 1 << (n - 1); mask++)          // bit i: a cut after sorted row i
        {
            long cost = 0;
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (i == n - 1 || (mask & (1 << i)) != 0)
                {
                    cost += (long)(i - start + 1) * sorted[i] + overhead;
                    start = i + 1;
                }
            }
            best = Math.Min(best, cost);
        }
        return best;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(40)]
    [InlineData(96)]
    public void EveryRowOnceInLengthOrderAtTheLeastCost(int overhead)
    {
        var rng = new Random(overhead + 1);
        for (int trial = 0; trial < 40; trial++)
        {
            var lengths = Enumerable.Range(0, rng.Next(1, 12)).Select(_ => rng.Next(1, 60)).ToArray();
            var buckets = LengthBuckets.Partition(lengths, overhead);

            Assert.Equal(Enumerable.Range(0, lengths.Length), buckets.SelectMany(b => b).Order());
            var flat = buckets.SelectMany(b => b).Select(i => lengths[i]).ToArray();
            Assert.Equal(flat.Order(), flat);                          // shortest first, buckets in length order
            Assert.Equal(BruteForce(lengths, overhead), Cost(lengths, buckets, overhead));
        }
    }

    [Fact]
    public void NoOverheadCutsAtEveryDistinctLengthAndAHugeOneKeepsOneBucket()
    {
        int[] lengths = [9, 3, 3, 7, 9, 1];
        var fine = LengthBuckets.Partition(lengths, 0);
        Assert.Equal(4, fine.Count);
        Assert.Equal(lengths.Sum(), Cost(lengths, fine, 0));        // no padding at all

        var one = Assert.Single(LengthBuckets.Partition(lengths, 1_000_000));
        Assert.Equal([5, 1, 2, 3, 0, 4], one);                      // by length, ties in input order
        Assert.Empty(LengthBuckets.Partition([], 96));
        Assert.Throws<ArgumentOutOfRangeException>(() => LengthBuckets.Partition(lengths, -1));
    }
}

[Collection(TorchCollection.Name)]
public class LengthBucketsEmbeddingTests
{
    private static readonly ContrastiveLoss Loss = new() { Temperature = 0.05 };

    private static EncodedText[] Rows(int seed, int[] lengths, int instruction)
    {
        var rng = new Random(seed);
        return lengths.Select(n => new EncodedText(Enumerable.Range(0, n).Select(_ => rng.Next(1, 11)).ToArray(), 0,
            Math.Min(instruction, n - 1), false)).ToArray();
    }

    private static Func<TokenBatch, Tensor> Embedder(TinyBackbone model) => GradCacheTests.Embedder(model);

    private static Dictionary<string, double[]> Grads(TinyBackbone model) => GradCacheTests.Grads(model);

    [Theory]
    [InlineData(null)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(100)]
    public void BucketedLeavesGiveTheGroupsEmbeddingsAndGradients(int? gradCacheChunk)
    {
        manual_seed(5);
        using var model = new TinyBackbone();
        // Queries with a 2-token instruction kept out of pooling, positives, negatives; lengths spread so the cut
        // mixes rows of different groups in one bucket.
        IReadOnlyList<EncodedText>[] groups =
        [
            Rows(1, [12, 3, 9, 5, 4, 11], instruction: 2),
            Rows(2, [4, 12, 2, 6, 5, 3], instruction: 0),
            Rows(3, [3, 6, 10, 2, 7, 12], instruction: 0),
        ];
        var embed = Embedder(model);

        // Reference: each group one padded batch.
        Dictionary<string, double[]> expected;
        double[][] expectedEmbeddings;
        double expectedLoss;
        using (var scope = NewDisposeScope())
        {
            model.zero_grad();
            var e = groups.Select(g => embed(TokenBatch.Build(g, 0, CPU))).ToArray();
            var loss = Loss.Compute(e[0], e[1], e[2]);
            loss.backward();
            expectedLoss = Scalar(loss);
            expected = Grads(model);
            expectedEmbeddings = e.Select(Data).ToArray();
        }

        using (var scope = NewDisposeScope())
        {
            model.zero_grad();
            var buckets = LengthBuckets.Create(groups, 0, CPU, overheadTokens: 4);
            Assert.InRange(buckets.Buckets.Count, 2, 18);
            Assert.True(buckets.Buckets.Sum(b => b.InputIds.shape[0] * b.InputIds.shape[1]) < groups.Sum(g => g.Count * g.Max(r => r.Length)),
                "the buckets hold fewer padded tokens than the groups");
            using var leaves = EmbeddingLeaves.Create(buckets, embed, training: true, gradCacheChunk);
            var e = leaves.Leaves;
            for (int g = 0; g < groups.Length; g++) Close(expectedEmbeddings[g], Data(e[g]), 1e-12, $"group {g} embeddings");
            var loss = Loss.Compute(e[0], e[1], e[2]);
            loss.backward();
            leaves.Backward();
            Close(expectedLoss, Scalar(loss), 1e-12, "loss");
            var actual = Grads(model);
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            Assert.True(expected.Count >= 9, "every encoder parameter gets a gradient");
            foreach (var (name, g) in expected) Close(g, actual[name], 1e-9, name);
        }
    }

    [Fact]
    public void WithoutGradientsTheLeavesAreTheEmbeddings()
    {
        manual_seed(6);
        using var model = new TinyBackbone();
        using var scope = NewDisposeScope();
        IReadOnlyList<EncodedText>[] groups = [Rows(7, [5, 2, 8], 1), Rows(8, [8, 1, 3], 0)];
        using var noGrad = no_grad();
        using var leaves = EmbeddingLeaves.Create(LengthBuckets.Create(groups, 0, CPU, overheadTokens: 0), Embedder(model), training: false);
        for (int g = 0; g < groups.Length; g++)
            Close(Data(Embedder(model)(TokenBatch.Build(groups[g], 0, CPU))), Data(leaves.Leaves[g]), 1e-12, $"group {g}");
        leaves.Backward();   // nothing recorded: a no-op
    }
}

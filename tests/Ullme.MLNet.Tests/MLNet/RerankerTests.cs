using Microsoft.ML;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>Reranking by representation, generation or a mix: orders follow hand-computed scores, the mix weight
/// means what RerankOptions says, and the IDataView surface groups by query id.</summary>
[Collection(TorchCollection.Name)]
public sealed class RerankerTests
{
    private static readonly string[] Candidates = ["the cat sat on the mat.", "stocks fell.", "a cat, a mat, a hat.", "rain again today", "cats like mats"];
    private const string Query = "a cat on a mat";

    private static EmbeddingEngine Engine => new(TinyScoringModel.Model);

    private static int[] OrderOf(IReadOnlyList<double> scores) =>
        Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i]).ThenBy(i => i).ToArray();

    [Fact]
    public void Each_signal_orders_candidates_by_its_own_hand_computed_score()
    {
        var scorer = new RelevanceScorer(Engine);
        var pairs = Candidates.Select(c => new QueryPassage(Query, c)).ToArray();
        var rep = scorer.Representation(pairs).Select(x => (double)x).ToArray();
        var gen = scorer.Generation(pairs).Select(x => (double)x).ToArray();

        var byRep = new Reranker(Engine, new RerankOptions { By = RerankBy.Representation }).Rerank(Query, Candidates);
        Assert.Equal(OrderOf(rep), byRep.Select(r => r.Index));
        Assert.Equal([1, 2, 3, 4, 5], byRep.Select(r => r.Rank));
        Assert.All(byRep, r => { Assert.Equal(rep[r.Index], r.Score, 1e-6); Assert.Null(r.Generation); Assert.Equal(Candidates[r.Index], r.Text); });

        var byGen = new Reranker(Engine, new RerankOptions { By = RerankBy.Generation }).Rerank(Query, Candidates);
        Assert.Equal(OrderOf(gen), byGen.Select(r => r.Index));
        Assert.All(byGen, r => { Assert.Equal(gen[r.Index], r.Score, 1e-6); Assert.Null(r.Representation); });
        Assert.NotEqual(OrderOf(rep), OrderOf(gen)); // otherwise the mix tests below prove nothing

        // Mix at w = 0.3, computed by hand: z-scores with the population standard deviation.
        static double[] Z(double[] s)
        {
            double m = s.Average(), sd = Math.Sqrt(s.Sum(x => (x - m) * (x - m)) / s.Length);
            return s.Select(x => (x - m) / sd).ToArray();
        }
        var zr = Z(rep);
        var zg = Z(gen);
        var mix = zr.Zip(zg, (a, b) => 0.7 * a + 0.3 * b).ToArray();
        var byMix = new Reranker(Engine, new RerankOptions { By = RerankBy.Mix, MixWeight = 0.3 }).Rerank(Query, Candidates);
        Assert.Equal(OrderOf(mix), byMix.Select(r => r.Index));
        Assert.All(byMix, r =>
        {
            Assert.Equal(mix[r.Index], r.Score, 1e-5);
            Assert.Equal(rep[r.Index], r.Representation!.Value, 1e-6);
            Assert.Equal(gen[r.Index], r.Generation!.Value, 1e-6);
        });

        // w = 0 orders like representation, w = 1 like generation.
        Assert.Equal(OrderOf(rep), new Reranker(Engine, new RerankOptions { By = RerankBy.Mix, MixWeight = 0 }).Rerank(Query, Candidates).Select(r => r.Index));
        Assert.Equal(OrderOf(gen), new Reranker(Engine, new RerankOptions { By = RerankBy.Mix, MixWeight = 1 }).Rerank(Query, Candidates).Select(r => r.Index));
    }

    [Fact]
    public void Mix_standardises_each_signal_so_scale_does_not_matter()
    {
        // Generation on a scale 1000x larger must not swamp representation: only ranks-within-spread count.
        var mixed = Reranker.Mix([0.9, 0.1, 0.5], [-1000, -3000, -2000], 0.5);
        Assert.Equal(Math.Sqrt(1.5), mixed[0], 1e-9);                 // z_rep = (1.2247, -1.2247, 0), z_gen = (1.2247, -1.2247, 0)
        Assert.Equal(-Math.Sqrt(1.5), mixed[1], 1e-9);
        Assert.Equal(0, mixed[2], 1e-9);
        Assert.Equal([0.0, 0.0], Reranker.Standardize([2.5, 2.5]));   // no spread: no preference
        Assert.Throws<UllmeException>(() => new Reranker(Engine, new RerankOptions { By = RerankBy.Mix, MixWeight = 1.5 }));
    }

    [Fact]
    public void Generation_reranking_with_an_encoder_fails_clearly()
    {
        var e = Assert.Throws<UllmeException>(() => new Reranker(new EmbeddingEngine(MLNetTestData.Default), new RerankOptions { By = RerankBy.Mix }));
        Assert.Contains("encoder without a language-model head", e.Message);
        var ok = new Reranker(new EmbeddingEngine(MLNetTestData.Default)).Rerank("How do I reset my PIN?", ["The weather is nice.", "You can change your PIN in the app."]);
        Assert.Equal(1, ok[0].Index);
    }

    private sealed class GroupRow
    {
        public int QueryId { get; set; }
        public string Query { get; set; } = "";
        public string Passage { get; set; } = "";
    }

    [Fact]
    public void DataView_reranking_groups_by_query_id_even_when_rows_interleave()
    {
        var ml = new MLContext();
        var rows = new List<GroupRow>();
        for (int i = 0; i < Candidates.Length; i++)
        {
            rows.Add(new GroupRow { QueryId = 7, Query = Query, Passage = Candidates[i] });
            if (i < 3) rows.Add(new GroupRow { QueryId = 3, Query = "rain", Passage = Candidates[4 - i] });
        }
        var reranker = new Reranker(Engine, new RerankOptions { By = RerankBy.Mix, MixWeight = 0.4 });
        var view = reranker.Rerank(ml, ml.Data.LoadFromEnumerable(rows));
        var result = ml.Data.CreateEnumerable<RerankedRow>(view, reuseRowObject: false).ToList();
        Assert.Equal(8, result.Count);
        Assert.Equal(["7", "7", "7", "7", "7", "3", "3", "3"], result.Select(r => r.GroupId));
        var expected7 = reranker.Rerank(Query, Candidates);
        Assert.Equal(expected7.Select(r => r.Text), result.Take(5).Select(r => r.Passage));
        // Same scores to within float32 noise (the data view embeds the group's rows in other batches than the direct call).
        foreach (var (want, got) in expected7.Zip(result.Take(5)))
            Assert.True(Math.Abs(want.Score - got.Score) < 1e-5, $"{got.Passage}: {got.Score} vs {want.Score}");
        var expected3 = reranker.Rerank("rain", [Candidates[4], Candidates[3], Candidates[2]]);
        Assert.Equal(expected3.Select(r => r.Text), result.Skip(5).Select(r => r.Passage));
        Assert.Equal([1, 2, 3], result.Skip(5).Select(r => r.Rank));

        rows.Add(new GroupRow { QueryId = 3, Query = "snow", Passage = "x" });
        var e = Assert.Throws<UllmeException>(() => reranker.Rerank(ml, ml.Data.LoadFromEnumerable(rows)));
        Assert.Contains("group '3'", e.Message);
        e = Assert.Throws<UllmeException>(() => reranker.Rerank(ml, ml.Data.LoadFromEnumerable(rows), groupColumnName: "Qid"));
        Assert.Contains("group column 'Qid' not found", e.Message);
    }
}

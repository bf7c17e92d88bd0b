using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>The SciFact reranking set: BM25 as defined, cited abstracts as positives, retrieved-but-not-cited ones as
/// negatives; and the Reranking task scoring candidates with any scorer.</summary>
public sealed class SciFactRerankingTests
{
    [Fact]
    public void Bm25_matches_the_formula_on_a_tiny_corpus()
    {
        var index = new Bm25Index(["cat cat dog", "dog bird", "fish"], k1: 1.2, b: 0.75);
        var s = index.Scores("Cat, dog!");
        double avg = 2.0, n = 3;
        double idfCat = Math.Log(1 + (n - 1 + 0.5) / 1.5), idfDog = Math.Log(1 + (n - 2 + 0.5) / 2.5);
        double Tf(int tf, int len) => tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avg));
        Assert.Equal(idfCat * Tf(2, 3) + idfDog * Tf(1, 3), s[0], 1e-12);
        Assert.Equal(idfDog * Tf(1, 2), s[1], 1e-12);
        Assert.Equal(0, s[2]);
        Assert.Equal([0, 1, 2], index.Top("cat dog", 3));
    }

    [Fact]
    public void Positives_are_cited_documents_and_negatives_the_retrieved_ones_not_cited()
    {
        var corpus = new List<CorpusDocument>
        {
            new("1", "Vitamin D", "vitamin d lowers fracture risk"),
            new("2", "Fractures", "fracture risk in elderly women"),
            new("3", "Vitamin C", "vitamin c and colds"),
            new("4", "Unrelated", "galaxies and stars"),
        };
        var claims = new List<(string, IReadOnlyList<string>)>
        {
            ("vitamin d reduces fracture risk", ["1"]),
            ("claim citing a missing doc", ["99"]),           // no positive in the corpus: skipped
            ("stars and galaxies", ["4", "3"]),
        };
        var samples = SciFactReranking.Build(corpus, claims, new SciFactRerankingOptions { Retrieve = 3, MaxNegatives = 2 });
        Assert.Equal(2, samples.Count);
        Assert.Equal(["Vitamin D vitamin d lowers fracture risk"], samples[0].Positives);
        // BM25 top 3 for the claim: doc 1, doc 2 (fracture risk), doc 3 (vitamin); doc 1 is cited.
        Assert.Equal(["Fractures fracture risk in elderly women", "Vitamin C vitamin c and colds"], samples[0].Negatives);
        Assert.Equal(2, samples[1].Positives.Count);
        Assert.DoesNotContain(samples[1].Negatives, n => samples[1].Positives.Contains(n));
    }

    private sealed class FixedScorer(IReadOnlyList<double[]> scores) : IRerankingScorer
    {
        public string? Instruction { get; private set; }

        public IReadOnlyList<double[]> Score(IReadOnlyList<RerankingSample> samples, string? queryInstruction, CancellationToken cancellationToken)
        {
            Instruction = queryInstruction;
            return scores;
        }
    }

    [Fact]
    public void Reranking_task_scores_map_and_mrr_from_a_custom_scorer()
    {
        var samples = new List<RerankingSample>
        {
            new("q1", ["p"], ["n1", "n2"]),       // scores: p 0.2, n1 0.9, n2 0.1 -> positive at rank 2
            new("q2", ["p1", "p2"], ["n"]),       // p1 0.5, p2 0.1, n 0.3 -> positives at ranks 1 and 3
        };
        var scorer = new FixedScorer([[0.2, 0.9, 0.1], [0.5, 0.1, 0.3]]);
        var task = new RerankingTask("R", new Dictionary<string, IReadOnlyList<RerankingSample>> { ["test"] = samples }) { Scorer = scorer };
        var embedder = new FakeEmbedder(_ => [1f, 0f]);
        var scores = task.Evaluate(new EvaluationContext(embedder))["test"];
        Assert.Equal(0, embedder.CallCount); // the scorer replaces the cosine path
        double ap1 = 0.5, ap2 = (1 + 2.0 / 3) / 2;
        Assert.Equal((ap1 + ap2) / 2, scores["map"], 1e-9);
        Assert.Equal((0.5 + 1) / 2, scores["mrr"], 1e-9);
    }

    [AssetFact]
    public void SciFact_train_claims_give_a_reranking_set_with_cited_positives()
    {
        string folder = Assets.Path("data", "scifact");
        var claims = SciFactReranking.ReadClaims(Path.Combine(folder, "claims_train.csv"));
        Assert.Equal(809, claims.Count);
        var samples = SciFactReranking.Build(folder, new SciFactRerankingOptions { MaxQueries = 50 });
        Assert.Equal(50, samples.Count);
        Assert.All(samples, s =>
        {
            Assert.NotEmpty(s.Positives);
            Assert.InRange(s.Negatives.Count, 1, 10);
            Assert.Empty(s.Negatives.Intersect(s.Positives));
        });
        // BM25 hard negatives share words with the claim.
        Assert.True(samples.Average(s => s.Negatives.Count) > 9);
    }
}

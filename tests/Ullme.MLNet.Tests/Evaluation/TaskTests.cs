using System.Globalization;
using System.Text.Json.Nodes;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>Task protocols with fake embedders whose geometry makes the right answer known.</summary>
[Collection(TorchCollection.Name)]
public class TaskTests
{
    private static string A(double deg) => "angle:" + deg.ToString(CultureInfo.InvariantCulture);

    private static Dictionary<string, IReadOnlyList<T>> Split<T>(string name, IEnumerable<T> rows) => new() { [name] = rows.ToList() };

    [Fact]
    public void StsCorrelatesCosineAndNegativeDistancesWithGold()
    {
        // Side 1 at 0 degrees, side 2 at theta: cosine = cos(theta) and distance 2 sin(theta/2) are monotone in
        // theta, and the gold score falls with theta, so every Spearman is exactly 1.
        double[] thetas = [0, 10, 30, 45, 60, 90];
        var pairs = thetas.Select(t => new StsPair("x" + A(0), "y" + A(t), 5 - t / 18)).ToList();
        var task = new StsTask("ToySTS", Split("test", pairs));
        var s = task.Evaluate(new EvaluationContext(new FakeEmbedder(FakeEmbedder.Angle)))["test"];
        Assert.Equal(1, s["cosine_spearman"], 12);
        Assert.Equal(1, s["euclidean_spearman"], 12);
        Assert.Equal(1, s["manhattan_spearman"], 12);
        Assert.InRange(s["cosine_pearson"], 0.9, 0.99999); // cos is not linear in theta
        Assert.Equal(s["cosine_spearman"], s.MainScore);
        Assert.Equal(["pearson", "spearman", "cosine_pearson", "cosine_spearman", "manhattan_pearson", "manhattan_spearman",
            "euclidean_pearson", "euclidean_spearman"], s.Metrics.Keys);
    }

    [Fact]
    public void SymmetricTasksInstructBothSidesAsymmetricOnlyQueries()
    {
        var fake = new FakeEmbedder(FakeEmbedder.Angle);
        var ctx = new EvaluationContext(fake) { UseInstructions = true, Instructions = new InstructionOptions() };
        var sts = new StsTask("ToySTS", Split("test", new[] { new StsPair("p" + A(0), "q" + A(10), 1), new StsPair("r" + A(0), "s" + A(50), 0) }))
        {
            DefaultInstruction = "Retrieve semantically similar text.",
        };
        sts.Evaluate(ctx);
        Assert.All(fake.Calls, c => Assert.Equal("Instruct: Retrieve semantically similar text.\nQuery: ", c.Instruction));

        fake.Calls.Clear();
        var retrieval = new RetrievalTask("ToyRetrieval", new RetrievalData(
            [new CorpusDocument("d1", "", "doc" + A(0)), new CorpusDocument("d2", "T", "doc" + A(90))],
            [new RetrievalQuery("q1", "query" + A(5))],
            new Dictionary<string, Dictionary<string, Dictionary<string, int>>> { ["test"] = new() { ["q1"] = new() { ["d1"] = 1 } } }));
        retrieval.Evaluate(ctx);
        Assert.All(fake.Calls.Where(c => c.Text.StartsWith("query", StringComparison.Ordinal)),
            c => Assert.Equal("Instruct: Retrieve text based on user query.\nQuery: ", c.Instruction));
        Assert.All(fake.Calls.Where(c => !c.Text.StartsWith("query", StringComparison.Ordinal)), c => Assert.Null(c.Instruction));
        // Documents are embedded as (title + " " + text).Trim() like MTEB.
        Assert.Contains(fake.Calls, c => c.Text == "T doc" + A(90));

        // Without instructions enabled nothing gets one.
        fake.Calls.Clear();
        sts.Evaluate(new EvaluationContext(fake) { UseInstructions = false, Instructions = new InstructionOptions() });
        Assert.All(fake.Calls, c => Assert.Null(c.Instruction));
    }

    [Fact]
    public void InstructionOverridesAndTemplateApply()
    {
        var task = new StsTask("ToySTS", Split("test", new[] { new StsPair("a", "b", 1), new StsPair("c", "d", 2) }));
        var options = new InstructionOptions
        {
            Template = "<instruct>{0}\n<query>",
            Overrides = new Dictionary<string, string> { ["toysts"] = "Find paraphrases" },
        };
        Assert.Equal("<instruct>Find paraphrases\n<query>", options.PrefixFor(task, TextRole.Symmetric));
        Assert.Null(options.PrefixFor(task, TextRole.Document));
        Assert.Throws<UllmeException>(() => (options with { Template = "no placeholder" }).PrefixFor(task, TextRole.Query));
        Assert.True(new InstructionOptions().IsEnabled(decoderModel: true));
        Assert.False(new InstructionOptions().IsEnabled(decoderModel: false));
    }

    [Fact]
    public void PairClassificationReportsMtebMetricNamesAndMaxAp()
    {
        // Positives at small angles, negatives at large ones: every score separates perfectly -> AP 1, accuracy 1.
        var pairs = new[] { (5, 1), (10, 1), (80, 0), (15, 1), (70, 0), (85, 0) }
            .Select((p, i) => new LabeledPair($"s{i}" + A(0), $"t{i}" + A(p.Item1), p.Item2)).ToList();
        var s = new PairClassificationTask("ToyPairs", Split("test", pairs))
            .Evaluate(new EvaluationContext(new FakeEmbedder(FakeEmbedder.Angle)))["test"];
        Assert.Equal(1, s["max_ap"], 12);
        Assert.Equal(1, s["cosine_accuracy"], 12);
        Assert.Equal(1, s["euclidean_ap"], 12); // distances are ranked low = similar
        Assert.Equal(s["max_ap"], s.MainScore);
        foreach (var name in new[] { "similarity", "cosine", "manhattan", "euclidean", "dot" })
            foreach (var metric in new[] { "accuracy", "f1", "precision", "recall", "ap" })
                Assert.True(s.Metrics.ContainsKey($"{name}_{metric}"), $"{name}_{metric} missing");
    }

    [Fact]
    public void UndersamplingAndFoldsAreBitIdenticalToMteb()
    {
        // Reference from MTEB's _undersample_data with samples_per_label = 2 on these labels (numpy 1.24):
        int[] labels = [0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1, 2, 0, 1, 2, 0, 2, 1, 0, 1];
        var task = new ClassificationTask("Toy", [new LabeledText("a", "x")], Split("test", new[] { new LabeledText("b", "x") }))
        {
            SamplesPerLabel = 2,
        };
        int[][] expected = [[0, 17, 15, 1, 11, 16], [0, 10, 12, 17, 2, 14], [0, 13, 9, 10, 14, 6]];
        List<int>? order = null;
        foreach (var e in expected)
        {
            var (selected, next) = task.Undersample(labels, 42, order);
            order = next;
            Assert.Equal(e, selected);
        }
        // sklearn KFold(5, shuffle=True, random_state=42) on 12 items: test folds
        int[][] folds = [[0, 9, 10], [2, 5, 8], [1, 11], [4, 7], [3, 6]];
        var actual = ClassificationTask.KFold(12, 5, 42);
        Assert.Equal(folds, actual.Select(f => f.Test).ToArray());
        Assert.All(actual, f => Assert.Equal(12, f.Train.Length + f.Test.Length));
    }

    private static float[] Cluster(string text)
    {
        // "L<k>_<i>": point i of class k, around centre k on a circle, small offset.
        int k = text[1] - '0';
        int i = int.Parse(text[3..], CultureInfo.InvariantCulture);
        double angle = k * 2 * Math.PI / 3;
        return [(float)(Math.Cos(angle) + 0.01 * (i % 5)), (float)(Math.Sin(angle) - 0.01 * (i % 3)), 0.1f];
    }

    private static List<LabeledText> Points(int perClass, int offset = 0) =>
        Enumerable.Range(0, 3).SelectMany(k => Enumerable.Range(offset, perClass).Select(i => new LabeledText($"L{k}_{i}", $"class{k}"))).ToList();

    [Fact]
    public void ClassificationLearnsSeparableClassesAndAveragesTenExperiments()
    {
        var task = new ClassificationTask("ToyClassification", Points(20), Split("test", Points(6, offset: 100)));
        var s = task.Evaluate(new EvaluationContext(new FakeEmbedder(Cluster)))["test"];
        Assert.Equal(1, s["accuracy"], 12);
        Assert.Equal(1, s["f1"], 12);
        Assert.True(double.IsNaN(s["ap"]), "ap is NaN for more than two classes, as in MTEB");
        Assert.Equal(10, ((JsonArray)s.Details["scores_per_experiment"]!).Count);
        Assert.Equal(s["accuracy"], s.MainScore);
    }

    [Fact]
    public void ClassificationOnASingleSplitCrossValidatesFiveFolds()
    {
        var task = new ClassificationTask("ToyCV", "train", Points(20));
        Assert.True(task.IsCrossValidation);
        var s = task.Evaluate(new EvaluationContext(new FakeEmbedder(Cluster)))["train"];
        Assert.Equal(1, s["accuracy"], 12);
        Assert.Equal(ClassificationTask.Folds, ((JsonArray)s.Details["scores_per_experiment"]!).Count);
    }

    [Fact]
    public void ClusteringFindsSeparableClusters()
    {
        var task = new ClusteringTask("ToyClustering", Split("test", Points(15)));
        var s = task.Evaluate(new EvaluationContext(new FakeEmbedder(Cluster)))["test"];
        Assert.Equal(1, s["v_measure"], 9);
        Assert.Equal(0, s["v_measure_std"], 9);
        Assert.Equal(10, ((JsonArray)s.Details["v_measures"]!).Count);
    }

    [Fact]
    public void RetrievalFindsTheNearestDocument()
    {
        // Document i at 10*i degrees; query i at 10*i + 2 degrees, relevant to document i only.
        var corpus = Enumerable.Range(0, 9).Select(i => new CorpusDocument($"d{i}", "", "doc" + A(10 * i))).ToList();
        var queries = Enumerable.Range(0, 9).Select(i => new RetrievalQuery($"q{i}", "query" + A(10 * i + 2))).ToList();
        var qrels = queries.ToDictionary(q => q.Id, q => new Dictionary<string, int> { ["d" + q.Id[1..]] = 1 });
        qrels["q_unknown"] = new Dictionary<string, int> { ["d0"] = 1 }; // judged but no such query: ignored
        var task = new RetrievalTask("ToyRetrieval", new RetrievalData(corpus, queries,
            new Dictionary<string, Dictionary<string, Dictionary<string, int>>> { ["test"] = qrels }));
        var s = task.Evaluate(new EvaluationContext(new FakeEmbedder(FakeEmbedder.Angle)))["test"];
        Assert.Equal(1, s["ndcg_at_10"], 12);
        Assert.Equal(1, s["mrr_at_1"], 12);
        Assert.Equal(1.0 / 3, s["precision_at_3"], 5);
        Assert.Equal(s["ndcg_at_10"], s.MainScore);
    }

    [Fact]
    public void CosineSearchMatchesBruteForceAcrossBlocks()
    {
        // 37 queries x 101 documents in blocks of 8 queries x 16 documents: the per-block top-k must merge into the
        // exact global top-k (checked against a double-precision brute force).
        var rng = new Random(7);
        float[] V(int d) => Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var queries = Enumerable.Range(0, 37).Select(_ => V(5)).ToArray();
        var corpus = Enumerable.Range(0, 101).Select(_ => V(5)).ToArray();
        var hits = Ullme.MLNet.Evaluation.Metrics.CosineSearch.TopK(queries, corpus, k: 10, queryBlock: 8, corpusBlock: 16);
        for (int q = 0; q < queries.Length; q++)
        {
            var expected = Enumerable.Range(0, corpus.Length)
                .Select(i => (Index: i, Score: Ullme.MLNet.Evaluation.Metrics.PairedScores.CosineOf(queries[q], corpus[i])))
                .OrderByDescending(x => x.Score).Take(10).ToArray();
            Assert.Equal(expected.Select(e => e.Index), hits[q].Select(h => h.Index));
            for (int i = 0; i < 10; i++) Assert.Equal(expected[i].Score, hits[q][i].Score, 1e-5);
        }
        // k larger than the corpus returns the whole corpus, best first.
        var all = Ullme.MLNet.Evaluation.Metrics.CosineSearch.TopK(queries[..1], corpus[..3], k: 1000);
        Assert.Equal(3, all[0].Length);
        Assert.True(all[0][0].Score >= all[0][1].Score && all[0][1].Score >= all[0][2].Score);
    }

    [Fact]
    public void RerankingRanksPositivesFirst()
    {
        var samples = new[]
        {
            new RerankingSample("q" + A(0), ["p" + A(5)], ["n" + A(60), "m" + A(90)]),
            new RerankingSample("r" + A(0), ["p" + A(50)], ["n" + A(10)]), // negative closer: positive at rank 2
            new RerankingSample("s" + A(0), [], ["n" + A(10)]), // no positive: skipped
        };
        var s = new RerankingTask("ToyReranking", Split("test", samples))
            .Evaluate(new EvaluationContext(new FakeEmbedder(FakeEmbedder.Angle)))["test"];
        // AP per query: 1 and 1/2 -> map 0.75; MRR@10: 1 and 1/2 -> 0.75
        Assert.Equal(0.75, s["map"], 12);
        Assert.Equal(0.75, s["mrr"], 12);
        Assert.Equal(0.75, s["map_at_1000"], 5);
        Assert.Equal(s["map_at_1000"], s.MainScore);
    }

    [Fact]
    public void CacheEmbedsSharedTextsOnceAcrossTasks()
    {
        var fake = new FakeEmbedder(FakeEmbedder.Angle);
        var ctx = new EvaluationContext(fake);
        var pairs = new[] { new StsPair("u" + A(0), "v" + A(20), 3), new StsPair("u" + A(0), "w" + A(70), 1) };
        new StsTask("First", Split("test", pairs)).Evaluate(ctx);
        int afterFirst = fake.Calls.Count;
        Assert.Equal(3, afterFirst); // "u..." appears twice on side 1 but is embedded once
        new StsTask("Second", Split("test", pairs)).Evaluate(ctx);
        Assert.Equal(afterFirst, fake.Calls.Count);
        Assert.True(ctx.Cache.Hits >= 4);
        // A different instruction is a different entry.
        new StsTask("Third", Split("test", pairs)) { DefaultInstruction = "x" }
            .Evaluate(new EvaluationContext(fake, ctx.Cache) { UseInstructions = true, Instructions = new InstructionOptions() });
        Assert.Equal(afterFirst + 3, fake.Calls.Count);
    }

    [Fact]
    public void LimitSpreadsLabelledRowsSoSortedFilesKeepTheirClasses()
    {
        // Rows sorted by label (like Banking77's train.csv): a limit of 6 must not take 6 rows of class 0.
        var fake = new FakeEmbedder(Cluster);
        var task = new ClusteringTask("Sorted", Split("test", Points(20))) { Runs = 1 };
        task.Evaluate(new EvaluationContext(fake) { Limit = 6 });
        Assert.Equal(6, fake.Calls.Count);
        Assert.Equal(3, fake.Calls.Select(c => c.Text[..2]).Distinct().Count());
        var cv = new ClassificationTask("SortedCV", "train", Points(20));
        var e = Assert.Throws<UllmeException>(() => cv.Evaluate(new EvaluationContext(fake) { Limit = 6 }));
        Assert.Contains("--limit", e.Message);
    }

    [Fact]
    public void LimitTruncatesEverySplit()
    {
        var fake = new FakeEmbedder(FakeEmbedder.Angle);
        var pairs = Enumerable.Range(0, 50).Select(i => new StsPair("a" + A(i), "b" + A(2 * i), i)).ToList();
        new StsTask("Limited", Split("test", pairs)).Evaluate(new EvaluationContext(fake) { Limit = 5 });
        Assert.Equal(10, fake.Calls.Count);
    }
}

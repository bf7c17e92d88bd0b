using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Transforms;

namespace Ullme.MLNet.Samples;

/// <summary>The figures of docs/scoring.md: SciFact reranking (MAP, MRR@10) by representation / generation / mix,
/// and representation-vs-generation agreement on STS-B dev before and after fine-tuning.</summary>
public static class ScoringEvidence
{
    /// <summary>SciFact reranking (train claims, BM25 hard negatives) for stories260K by representation, generation and
    /// mix (w = 0.5), and the default model (all-MiniLM-L6-v2) by representation.</summary>
    public static int Rerank(string? assets, int? maxQueries)
    {
        string root = SampleData.AssetsRoot(assets);
        var samples = SciFactReranking.Build(Path.Combine(root, "data", "scifact"), new SciFactRerankingOptions { MaxQueries = maxQueries });
        Console.WriteLine($"SciFact reranking: {samples.Count} claims, {samples.Average(s => s.Positives.Count + s.Negatives.Count):F1} candidates per claim");
        Console.WriteLine("| model | ranked by | MAP | MRR@10 | seconds |");
        Console.WriteLine("|---|---|---|---|---|");
        using (var stories = UllmeModel.Load(Path.Combine(root, "models", "stories260K")))
        {
            Row(stories, "stories260K", samples, new RerankOptions { By = RerankBy.Representation });
            Row(stories, "stories260K", samples, new RerankOptions { By = RerankBy.Generation });
            Row(stories, "stories260K", samples, new RerankOptions { By = RerankBy.Mix, MixWeight = 0.5 });
        }
        using (var minilm = UllmeModel.Load(UllmeModel.DefaultModelName))
            Row(minilm, "all-MiniLM-L6-v2", samples, new RerankOptions { By = RerankBy.Representation });
        return 0;
    }

    private static void Row(UllmeModel model, string name, IReadOnlyList<RerankingSample> samples, RerankOptions options)
    {
        var sw = Stopwatch.StartNew();
        var task = new RerankingTask("SciFactReranking", new Dictionary<string, IReadOnlyList<RerankingSample>> { ["train"] = samples })
        {
            Scorer = new RerankerScorer(new EmbeddingEngine(model), options),
        };
        var s = task.Evaluate(new EvaluationContext(new EngineEmbeddingSource(new EmbeddingEngine(model))))["train"];
        string by = options.By == RerankBy.Mix ? $"mix (w = {options.MixWeight})" : options.By.ToString().ToLowerInvariant();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {by} | {s["map"]:F4} | {s["mrr"]:F4} | {sw.Elapsed.TotalSeconds:F0} |"));
    }

    /// <summary>Spearman between the representation score (cosine) and the generation score (mean log-prob of s2 after
    /// the prompt built from s1) over STS-B dev pairs, computed with the UllmeScore transform (mode Both), for
    /// stories260K at its base weights and after one epoch of full fine-tuning on the SNLI triplets with each
    /// strategy (batch 32, lr 1e-3, as in grl-spec.md). Also the STS-B dev Spearman of the cosine vs gold.</summary>
    public static int Agreement(string? assets, IReadOnlyList<string> strategies)
    {
        string root = SampleData.AssetsRoot(assets);
        var pairs = StsBenchmarkFormat.Read(Path.Combine(root, "data", "stsbenchmark", "sts-dev.csv"));
        var triplets = TrainingData.LoadJsonl(Path.Combine(root, "data", "snli", "triplets.jsonl"));
        string folder = Path.Combine(root, "models", "stories260K");
        Console.WriteLine($"STS-B dev: {pairs.Count} pairs; training: {triplets.Count} SNLI triplets");
        Console.WriteLine("| stories260K | Spearman(rep, gen) | STS-B Spearman (cosine vs gold) | mean gen score | train seconds |");
        Console.WriteLine("|---|---|---|---|---|");
        using (var model = UllmeModel.Load(folder)) Report("base", model, pairs, 0);
        foreach (string name in strategies)
        {
            var strategy = Enum.Parse<TrainingStrategy>(name, ignoreCase: true);
            using var model = UllmeModel.Load(folder);
            var sw = Stopwatch.StartNew();
            new UllmeFineTuner(model, new FineTuneOptions
            {
                Strategy = strategy, Lora = null, BatchSize = 32, Epochs = 1, MaxLength = 128,
                Optimizer = new() { LearningRate = 1e-3 },
            }).Train(triplets);
            Report(strategy.ToString(), model, pairs, sw.Elapsed.TotalSeconds);
        }
        return 0;
    }

    private static void Report(string name, UllmeModel model, IReadOnlyList<StsPair> pairs, double seconds)
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(pairs.Select(p => new ScoringSample.Pair { Query = p.Text1, Passage = p.Text2 }));
        var scored = ml.Transforms.UllmeScore(model, new UllmeScoreOptions { Mode = UllmeScoreMode.Both, BatchSize = 32 }).Fit(data).Transform(data);
        var rows = ml.Data.CreateEnumerable<ScoringSample.Scores>(scored, reuseRowObject: false).ToList();
        var rep = rows.Select(r => (double)r.RelevanceRepresentation).ToArray();
        var gen = rows.Select(r => (double)r.Relevance).ToArray();
        double agreement = Correlation.Spearman(rep, gen);
        double sts = Correlation.Spearman(rep, pairs.Select(p => p.Score).ToArray());
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {agreement:F4} | {sts:F4} | {gen.Average():F3} | {seconds:F0} |"));
    }
}

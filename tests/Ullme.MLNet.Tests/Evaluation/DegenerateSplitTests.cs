using System.Globalization;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Results;
using Ullme.MLNet.Evaluation.Tasks;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>
/// <c>ullme eval --limit 50</c> on a 77-label task (Banking77) scores accuracy near 0 and V-measure near 1 whatever
/// the model: such splits are flagged, through the logger and in the result (the split's <c>warnings</c>).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class DegenerateSplitTests
{
    private const int Labels = 77;

    /// <summary>Texts "L{k}_{i}" of label k, embedded near the k-th of 77 directions.</summary>
    private static List<LabeledText> Rows(int perLabel, int offset = 0) =>
        Enumerable.Range(offset, perLabel).SelectMany(i => Enumerable.Range(0, Labels).Select(k => new LabeledText($"L{k}_{i}", $"intent{k}"))).ToList();

    private static float[] Embed(string text)
    {
        int us = text.IndexOf('_');
        int k = int.Parse(text[1..us], CultureInfo.InvariantCulture), i = int.Parse(text[(us + 1)..], CultureInfo.InvariantCulture);
        double a = 2 * Math.PI * k / Labels;
        return [(float)Math.Cos(a), (float)Math.Sin(a), 0.001f * (i % 7)];
    }

    private static (EvaluationReport Report, CapturingLogger Log) Run(int? limit)
    {
        var classification = new ClassificationTask("Banking77Like", Rows(10), new Dictionary<string, IReadOnlyList<LabeledText>> { ["test"] = Rows(3, offset: 100) })
        {
            Experiments = 2,
        };
        var clustering = new ClusteringTask("Banking77LikeClustering", new Dictionary<string, IReadOnlyList<LabeledText>> { ["test"] = Rows(3) }) { Runs = 2 };
        var log = new CapturingLogger();
        var report = UllmeEvaluation.Run(new FakeEmbedder(Embed), [classification, clustering],
            new EvaluationOptions { Limit = limit, Logger = log }, new ModelMeta { Name = "fake/model", EmbedDim = 3 }, useInstructions: false);
        return (report, log);
    }

    [Fact]
    public void FewerRowsThanLabelsIsWarnedAndRecorded()
    {
        var (report, log) = Run(limit: 50);
        var classification = report["Banking77Like"].Scores["test"][0];
        var clustering = report["Banking77LikeClustering"].Scores["test"][0];

        Assert.Contains(classification.Warnings, w => w.Contains("50 rows", StringComparison.Ordinal) && w.Contains("77 labels", StringComparison.Ordinal) && w.Contains("--limit 50", StringComparison.Ordinal));
        Assert.Contains(clustering.Warnings, w => w.Contains("50 rows", StringComparison.Ordinal) && w.Contains("77 labels", StringComparison.Ordinal));
        Assert.Contains(log.Warnings, w => w.StartsWith("Banking77Like test: ", StringComparison.Ordinal) && w.Contains("accuracy is not meaningful", StringComparison.Ordinal));
        Assert.Contains(log.Warnings, w => w.StartsWith("Banking77LikeClustering test: ", StringComparison.Ordinal) && w.Contains("v_measure", StringComparison.Ordinal));
        // In the result file too, next to the scores.
        Assert.Contains("\"warnings\": [", report["Banking77LikeClustering"].ToJson(), StringComparison.Ordinal);
    }

    [Fact]
    public void EnoughRowsGiveNoWarning()
    {
        var (report, log) = Run(limit: null);
        Assert.Empty(log.Warnings);
        Assert.All(report.Results, r => Assert.Empty(r.Scores["test"][0].Warnings));
        Assert.DoesNotContain("warnings", report["Banking77LikeClustering"].ToJson(), StringComparison.Ordinal);
    }
}

using System.Globalization;
using System.Text.Json;
using Ullme.MLNet.Evaluation;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Results;
using Ullme.MLNet.Evaluation.Tasks;

namespace Ullme.MLNet.Tests.Evaluation;

/// <summary>MTEB TaskResult layout: written files parse back, NaN survives, MTEB's own files load.</summary>
public sealed class ResultFileTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ullme-results-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static TaskResult Sample()
    {
        var s = new SplitScores { MainScoreName = "cosine_spearman" };
        s.Add("cosine_pearson", 0.8123);
        s.Add("cosine_spearman", 0.8203);
        s.Add("ap", double.NaN);
        s.Add("whole", 1.0);
        s.Details["v_measures"] = new System.Text.Json.Nodes.JsonArray(0.5, double.NaN);
        var r = new TaskResult { TaskName = "STSBenchmark", DatasetRevision = "rev1", EvaluationTime = 12.5, TaskType = TaskType.STS };
        r.Scores["test"] = [s];
        return r;
    }

    [Fact]
    public void JsonHasMtebTopLevelFieldsAndPerSplitEntries()
    {
        string json = Sample().ToJson();
        // Python's json.dump writes bare NaN; so do we.
        Assert.Contains("\"ap\": NaN", json);
        Assert.Contains("\"whole\": 1.0", json);
        using var doc = JsonDocument.Parse(MtebJsonForTest(json));
        var root = doc.RootElement;
        Assert.Equal(["dataset_revision", "task_name", "mteb_version", "scores", "evaluation_time", "kg_co2_emissions"],
            root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("STSBenchmark", root.GetProperty("task_name").GetString());
        Assert.Equal("rev1", root.GetProperty("dataset_revision").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("kg_co2_emissions").ValueKind);
        var entry = root.GetProperty("scores").GetProperty("test")[0];
        Assert.Equal(0.8203, entry.GetProperty("main_score").GetDouble());
        Assert.Equal("default", entry.GetProperty("hf_subset").GetString());
        Assert.Equal("eng-Latn", entry.GetProperty("languages")[0].GetString());
        Assert.Equal(0.8203, entry.GetProperty("cosine_spearman").GetDouble()); // a fraction, not 82.03
    }

    // System.Text.Json cannot read bare NaN: quote it the way our reader does, for inspecting the raw layout.
    private static string MtebJsonForTest(string json) => json.Replace(": NaN", ": \"NaN\"", StringComparison.Ordinal)
        .Replace("NaN\n", "\"NaN\"\n", StringComparison.Ordinal);

    [Fact]
    public void RoundTripKeepsValuesAndNaN()
    {
        var back = TaskResult.FromJson(Sample().ToJson());
        Assert.Equal("STSBenchmark", back.TaskName);
        Assert.Equal(12.5, back.EvaluationTime);
        var s = back.Scores["test"][0];
        Assert.Equal(0.8203, s.MainScore);
        Assert.Equal(0.8123, s["cosine_pearson"]);
        Assert.True(double.IsNaN(s["ap"]));
        Assert.Equal(2, s.Details["v_measures"]!.AsArray().Count);
        Assert.Equal(Sample().ToJson(), back.ToJson());
    }

    [Fact]
    public void ReadsAFileAsMtebWritesIt()
    {
        // Shape of a file written by mteb (python json.dump, indent 2), with bare NaN and Infinity.
        const string mteb = """
        {
          "dataset_revision": "0fd18e25b25c072e09e0d92ab615fda904d66300",
          "task_name": "Banking77Classification",
          "mteb_version": "1.12.41",
          "scores": {
            "test": [
              {
                "accuracy": 0.800,
                "f1": 0.79,
                "ap": NaN,
                "odd": -Infinity,
                "scores_per_experiment": [{"accuracy": 0.8, "ap": NaN}],
                "main_score": 0.8,
                "hf_subset": "default",
                "languages": ["eng-Latn"]
              }
            ]
          },
          "evaluation_time": 30.2,
          "kg_co2_emissions": null
        }
        """;
        var r = TaskResult.FromJson(mteb, "Banking77Classification.json");
        Assert.Equal(0.8, r.MainScore("test"));
        var s = r.Scores["test"][0];
        Assert.True(double.IsNaN(s["ap"]));
        Assert.True(double.IsNegativeInfinity(s["odd"]));
        Assert.Contains("NaN", r.ToJson());
        var e = Assert.Throws<UllmeException>(() => TaskResult.FromJson("{\"scores\": {}}", "x.json"));
        Assert.Contains("x.json", e.Message);
    }

    [Fact]
    public void RunWritesMtebFolderLayoutAndSummary()
    {
        var pairs = Enumerable.Range(0, 8).Select(i => new StsPair("a" + A(0), "b" + A(10 * i), 5 - i * 0.5)).ToList();
        var task = new StsTask("ToySTS", new Dictionary<string, IReadOnlyList<StsPair>> { ["validation"] = pairs }) { DatasetRevision = "r0" };
        var meta = new ModelMeta { Name = "sentence-transformers/all-MiniLM-L6-v2", EmbedDim = 2 };
        var report = UllmeEvaluation.Run(new FakeEmbedder(FakeEmbedder.Angle), [task], new EvaluationOptions { OutputDir = _dir },
            meta, useInstructions: false);

        string folder = Path.Combine(_dir, "sentence-transformers__all-MiniLM-L6-v2", "no_revision_available");
        Assert.True(File.Exists(Path.Combine(folder, "model_meta.json")));
        Assert.True(File.Exists(Path.Combine(folder, "summary.md")));
        var back = TaskResult.Load(Path.Combine(folder, "ToySTS.json"));
        Assert.Equal("r0", back.DatasetRevision);
        Assert.Equal(1, back.MainScore("validation"), 12);
        Assert.Equal(1, report["ToySTS"].MainScore("validation"), 12);
        Assert.Equal(1, report.Summary.Average, 12);
        Assert.Contains("| ToySTS | STS | validation | cosine_spearman | 100.00 |", report.Summary.ToMarkdown());
        using var metaDoc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "model_meta.json")));
        Assert.Equal("sentence-transformers/all-MiniLM-L6-v2", metaDoc.RootElement.GetProperty("name").GetString());
        Assert.Equal(2, metaDoc.RootElement.GetProperty("embed_dim").GetInt32());
        Assert.Empty(Directory.GetFiles(folder, "*.tmp", SearchOption.AllDirectories));
    }

    [Fact]
    public void SummaryAveragesEachTasksPrimarySplit()
    {
        static TaskResult R(string name, params (string Split, double Score)[] splits)
        {
            var r = new TaskResult { TaskName = name };
            foreach (var (split, score) in splits) r.Scores[split] = [new SplitScores { MainScore = score }];
            return r;
        }
        // Task A: test 0.8 (validation 0.9 not counted); task B: only train 0.6 -> average (0.8 + 0.6) / 2 = 0.7.
        var summary = new EvaluationSummary("m", [R("A", ("validation", 0.9), ("test", 0.8)), R("B", ("train", 0.6))]);
        Assert.Equal(0.7, summary.Average, 12);
        Assert.Equal(3, summary.Rows.Count);
        Assert.Contains("**70.00**", summary.ToMarkdown());
    }

    [Fact]
    public void BadNamesCannotEscapeTheResultsFolder()
    {
        Assert.Throws<UllmeException>(() => MtebResultWriter.ModelFolder(_dir, "model", ".."));
        Assert.Equal(Path.Combine(_dir, "org__name", "abc"), MtebResultWriter.ModelFolder(_dir, "org/name", "abc"));
    }

    private static string A(double deg) => "angle:" + deg.ToString(CultureInfo.InvariantCulture);
}

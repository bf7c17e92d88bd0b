using System.Text.Json;
using Ullme.Cli;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Cli;

/// <summary>`ullme rerank`: JSONL in, rankings out, identical to the Reranker API; clear one-line errors.</summary>
[Collection(TorchCollection.Name)]
public sealed class RerankCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-rerank-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static (int Code, string Err) Run(params string[] args) => CliTests.Run(args);

    [Theory]
    [InlineData("representation", 0.5)]
    [InlineData("generation", 0.5)]
    [InlineData("mix", 0.25)]
    public void Rerank_round_trip_matches_the_library(string by, double weight)
    {
        var queries = new[]
        {
            new RerankQuery("a cat on a mat", ["stocks fell.", "the cat sat on the mat.", "cats like mats"]),
            new RerankQuery("rain", ["it rained all day.", "sunny skies"]),
        };
        File.WriteAllLines(PathOf("in.jsonl"), [
            JsonSerializer.Serialize(new { id = "q1", query = queries[0].Query, candidates = queries[0].Candidates }),
            "",
            JsonSerializer.Serialize(new { query = queries[1].Query, candidates = queries[1].Candidates }),
        ]);
        var (code, err) = Run("rerank", "--model", TinyScoringModel.Folder, "--input", PathOf("in.jsonl"), "--output", PathOf("out.jsonl"),
            "--by", by, "--mix-weight", weight.ToString(System.Globalization.CultureInfo.InvariantCulture), "--batch-size", "2");
        Assert.True(code == 0, err);
        var lines = File.ReadAllLines(PathOf("out.jsonl")).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, lines.Length);
        Assert.Equal("q1", lines[0].GetProperty("id").GetString());
        Assert.False(lines[1].TryGetProperty("id", out _));

        var options = new RerankOptions { By = by switch { "representation" => RerankBy.Representation, "generation" => RerankBy.Generation, _ => RerankBy.Mix }, MixWeight = weight };
        var expected = new Reranker(new EmbeddingEngine(TinyScoringModel.Model), options).Rerank(queries);
        for (int q = 0; q < 2; q++)
        {
            Assert.Equal(queries[q].Query, lines[q].GetProperty("query").GetString());
            var ranking = lines[q].GetProperty("ranking").EnumerateArray().ToArray();
            Assert.Equal(expected[q].Select(r => r.Index), ranking.Select(r => r.GetProperty("index").GetInt32()));
            Assert.Equal(expected[q].Select(r => r.Text), ranking.Select(r => r.GetProperty("text").GetString()));
            Assert.Equal(Enumerable.Range(1, ranking.Length), ranking.Select(r => r.GetProperty("rank").GetInt32()));
            for (int i = 0; i < ranking.Length; i++) Assert.Equal(expected[q][i].Score, ranking[i].GetProperty("score").GetDouble(), 1e-5);
            Assert.Equal(by != "generation", ranking[0].TryGetProperty("representation", out _));
            Assert.Equal(by != "representation", ranking[0].TryGetProperty("generation", out _));
        }
    }

    [Fact]
    public void Bad_input_and_options_fail_with_one_line_naming_them_and_write_nothing()
    {
        File.WriteAllLines(PathOf("bad.jsonl"), ["{\"query\": \"q\", \"candidates\": [\"a\", 3]}"]);
        var (code, err) = Run("rerank", "--model", TinyScoringModel.Folder, "--input", PathOf("bad.jsonl"), "--output", PathOf("out.jsonl"));
        Assert.NotEqual(0, code);
        Assert.Contains("bad.jsonl:1", err);
        Assert.Contains("\"candidates\"[1]", err);
        Assert.False(File.Exists(PathOf("out.jsonl")));

        File.WriteAllLines(PathOf("ok.jsonl"), ["{\"query\": \"q\", \"candidates\": [\"a\"]}"]);
        (code, err) = Run("rerank", "--model", TinyScoringModel.Folder, "--input", PathOf("ok.jsonl"), "--output", PathOf("out.jsonl"), "--by", "magic");
        Assert.NotEqual(0, code);
        Assert.Contains("--by 'magic'", err);
        (code, err) = Run("rerank", "--model", TinyScoringModel.Folder, "--input", PathOf("ok.jsonl"), "--output", PathOf("out.jsonl"), "--by", "mix", "--mix-weight", "2");
        Assert.NotEqual(0, code);
        Assert.Contains("--mix-weight must be between 0 and 1 (got 2)", err);
        Assert.False(File.Exists(PathOf("out.jsonl")));
    }
}

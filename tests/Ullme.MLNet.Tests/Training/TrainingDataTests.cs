using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;

namespace Ullme.MLNet.Tests.Training;

public sealed class TrainingDataTests : IDisposable
{
    private readonly string _file = Path.Combine(Path.GetTempPath(), "ullme-data-" + Guid.NewGuid().ToString("N") + ".jsonl");

    public void Dispose()
    {
        if (File.Exists(_file)) File.Delete(_file);
    }

    [Fact]
    public void ReadsQueriesPositivesNegativesAndInstructionsSkippingBlankLines()
    {
        File.WriteAllLines(_file,
        [
            """{"query": "q1", "positive": "p1", "negatives": ["n1", "n2"]}""",
            "",
            """{"query": "q2", "positive": "p2", "negatives": [], "instruction": "Retrieve a passage"}""",
            """{"positive": "p3", "query": "q3"}""",
        ]);
        var data = TrainingData.LoadJsonl(_file);
        Assert.Equal(3, data.Count);
        Assert.Equal(new[] { "n1", "n2" }, data[0].Negatives);
        Assert.Null(data[0].Instruction);
        Assert.Equal("Retrieve a passage", data[1].Instruction);
        Assert.Empty(data[2].Negatives);
        Assert.Equal("q3", data[2].Query);
    }

    [Theory]
    [InlineData("""{"query": "q", "positive": "p", "negatives": "n"}""", "\"negatives\" must be an array")]
    [InlineData("""{"query": "q", "negatives": []}""", "missing \"positive\"")]
    [InlineData("""{"query": 3, "positive": "p"}""", "\"query\" must be a string")]
    [InlineData("""{"query": "q", "positive": "p", "negatives": ["a", 1]}""", "\"negatives\"[1] must be a string")]
    [InlineData("""{"query": "q", "positive": "p",""", "not valid JSON")]
    [InlineData("""["q", "p"]""", "expected a JSON object")]
    [InlineData("""{"query": "", "positive": "p"}""", "\"query\" is empty")]
    public void ErrorsNameTheFileAndLine(string badLine, string expected)
    {
        File.WriteAllLines(_file, ["""{"query": "q", "positive": "p"}""", "", badLine]);
        var e = Assert.Throws<UllmeException>(() => TrainingData.LoadJsonl(_file));
        Assert.Contains($"'{_file}' line 3", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void MissingOrEmptyFilesAreErrors()
    {
        Assert.Contains("does not exist", Assert.Throws<UllmeException>(() => TrainingData.LoadJsonl(_file)).Message);
        File.WriteAllText(_file, "\n\n");
        Assert.Contains("no examples", Assert.Throws<UllmeException>(() => TrainingData.LoadJsonl(_file)).Message);
    }

    [AssetFact]
    public void TheSharedSnliTripletsLoad()
    {
        var data = TrainingData.LoadJsonl(Assets.Path("data", "snli", "triplets.jsonl"));
        Assert.Equal(2943, data.Count);
        Assert.All(data, d => Assert.Single(d.Negatives));
        Assert.Equal("Two women are embracing while holding to go packages . ", data[0].Query);
    }
}

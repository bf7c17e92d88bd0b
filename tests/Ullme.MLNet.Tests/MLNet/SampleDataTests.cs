using Microsoft.ML;
using Ullme.MLNet.Samples;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>
/// The samples' (and docs/mlnet.md's) way of reading a <c>text,category</c> CSV with ML.NET: quoted fields that span
/// lines are one row (TextLoader's <c>ReadMultilines</c>), as in Banking77's train.csv.
/// </summary>
public sealed class SampleDataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-csv-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void QuotedFieldSpanningLinesIsOneRow()
    {
        string path = Path.Combine(_dir, "train.csv");
        File.WriteAllText(path,
            "text,category\n" +
            "I am still waiting on my card?,card_arrival\n" +
            "\"My card\nhas not arrived, and the app\nsays nothing\",card_arrival\n" +
            "\"Where is \"\"my\"\" PIN?\",lost_pin\n" +
            "plain,lost_pin\n");
        var rows = SampleData.ReadIntentCsv(new MLContext(seed: 1), path);
        Assert.Equal(4, rows.Count);
        Assert.Equal("My card\nhas not arrived, and the app\nsays nothing", rows[1].Text);
        Assert.Equal("Where is \"my\" PIN?", rows[2].Text);
        Assert.Equal(["card_arrival", "card_arrival", "lost_pin", "lost_pin"], rows.Select(r => r.Label));
    }

    /// <summary>Banking77's train.csv: 10,003 rows and 77 intents, none empty.</summary>
    [AssetFact]
    public void Banking77ReadsAllRowsAndLabels()
    {
        var rows = SampleData.ReadIntentCsv(new MLContext(seed: 1), Assets.Path("data", "banking77", "train.csv"));
        Assert.Equal(10_003, rows.Count);
        Assert.Equal(77, rows.Select(r => r.Label).Distinct().Count());
        Assert.DoesNotContain(rows, r => r.Label.Length == 0 || r.Text.Length == 0);
    }
}

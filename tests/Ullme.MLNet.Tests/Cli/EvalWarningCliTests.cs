using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Cli;

/// <summary><c>ullme eval --limit 50</c> on Banking77 (77 labels): the degenerate score is called out on stderr.</summary>
[Collection(TorchCollection.Name)]
public sealed class EvalWarningCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-evalwarn-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [AssetFact]
    public void LimitBelowTheLabelCountWarnsOnStderrAndInTheResultFile()
    {
        var (code, err) = CliTests.Run("eval", "--model", Assets.Stories260K, "--tasks", "Banking77Clustering",
            "--data-dir", Assets.Path("data"), "--output", _dir, "--limit", "50", "--instructions", "off", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Contains("warning:", err);
        Assert.Contains("Banking77Clustering", err);
        Assert.Contains("50 rows but the task has 77 labels", err.ReplaceLineEndings(" ").Replace("  ", " ", StringComparison.Ordinal));
        string result = Directory.GetFiles(_dir, "Banking77Clustering.json", SearchOption.AllDirectories).Single();
        Assert.Contains("\"warnings\": [", File.ReadAllText(result));
    }
}

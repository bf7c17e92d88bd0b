using Ullme.MLNet.Tests.Cli;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>`ullme job` and `ullme silo` refuse bad input with one clear line, before they need a cluster.</summary>
public sealed class JobCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-jobcli-").FullName;

    public JobCliTests() => Ullme.MLNet.Orleans.Client.UllmeCluster.ConnectTimeout = TimeSpan.FromSeconds(3);   // only unreachable clusters wait for it

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private (int Code, string Err) Submit(params string[] extra) =>
        CliTests.Run(["job", "submit", "--cluster", "localhost:1", "--state-dir", PathOf("state"), .. extra]);

    [Fact]
    public void BadInputs_AreOneLineErrors_NamingTheFileColumnOrFlag()
    {
        File.WriteAllText(PathOf("a.csv"), "id,body\n1,hello\n");
        File.WriteAllText(PathOf("a.jsonl"), "{\"text\": \"x\"}\n");

        var (code, err) = Submit("--input", PathOf("missing-*.jsonl"), "--output", PathOf("out"));
        Assert.NotEqual(0, code);
        Assert.Contains("missing-*.jsonl", err);

        (code, err) = Submit("--input", PathOf("a.csv"), "--output", PathOf("out"));
        Assert.NotEqual(0, code);
        Assert.Contains("'text'", err);
        Assert.Contains("body", err);

        (code, err) = Submit("--input", PathOf("a.jsonl"), "--output", PathOf("out"), "--text-column", "body");   // JSONL: no header, first row read
        Assert.NotEqual(0, code);
        Assert.Contains("a.jsonl:1", err);
        Assert.Contains("body", err);

        (code, err) = Submit("--input", PathOf("a.jsonl"), "--output", PathOf("out"), "--shard-rows", "0");
        Assert.NotEqual(0, code);
        Assert.Contains("--shard-rows", err);

        (code, err) = Submit("--input", PathOf("a.jsonl"), "--output", PathOf("out"), "--pooling", "maxx");
        Assert.NotEqual(0, code);
        Assert.Contains("maxx", err);

        Directory.CreateDirectory(PathOf("full"));
        File.WriteAllText(PathOf("full/x.txt"), "not empty");
        (code, err) = Submit("--input", PathOf("a.jsonl"), "--output", PathOf("full"));
        Assert.NotEqual(0, code);
        Assert.Contains("not empty", err);
        Assert.False(Directory.Exists(PathOf("out")), "a refused job created its output folder");
    }

    [Fact]
    public void ABadClusterString_AndNoSilo_AreClearErrors()
    {
        var (code, err) = CliTests.Run("job", "status", "job-1", "--cluster", "redis://nowhere");
        Assert.NotEqual(0, code);
        Assert.Contains("--cluster 'redis://nowhere'", err);

        (code, err) = CliTests.Run("job", "status", "job-1", "--cluster", "localhost:99999");
        Assert.NotEqual(0, code);
        Assert.Contains("localhost:<primary silo port", err);

        File.WriteAllText(PathOf("a.jsonl"), "{\"text\": \"x\"}\n");
        (code, err) = Submit("--input", PathOf("a.jsonl"), "--output", PathOf("out"));   // nothing listens on the gateway
        Assert.NotEqual(0, code);
        Assert.Contains("cannot reach the cluster", err);
    }

    [Fact]
    public void ABadJobId_IsRefused()
    {
        var (code, err) = CliTests.Run("job", "cancel", "../../etc", "--cluster", "localhost:1", "--state-dir", PathOf("state"));
        Assert.NotEqual(0, code);
        Assert.Contains("job id '../../etc'", err);
    }
}

/// <summary>Planning records each input's size and time, and a worker refuses an input changed since.</summary>
public sealed class PlannedInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-plan-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void AnInputChangedAfterPlanning_IsRefused_NotReadAtStaleOffsets()
    {
        string input = Path.Combine(_dir, "a.jsonl");
        File.WriteAllLines(input, Enumerable.Range(0, 10).Select(i => $"{{\"text\": \"row {i}\"}}"));
        var (spec, items) = Ullme.MLNet.Orleans.Client.UllmeCluster.Plan(
            new Ullme.MLNet.Orleans.Jobs.EmbeddingJobSpec { Inputs = [input], OutputDirectory = Path.Combine(_dir, "out"), ShardRows = 4 }, CancellationToken.None);
        Assert.Equal(3, items.Count);
        Assert.Equal(new FileInfo(input).Length, items[0].FileLength);
        items[2].CheckUnchanged();   // as planned

        File.WriteAllLines(input, Enumerable.Range(0, 10).Select(i => $"{{\"text\": \"a longer row {i}\"}}"));
        var e = Assert.Throws<UllmeException>(() => items[2].CheckUnchanged());
        Assert.Contains("changed since the job was planned", e.Message);
        Assert.Contains(input, e.Message);
        Assert.Equal(input, spec.Inputs.Single());
    }
}

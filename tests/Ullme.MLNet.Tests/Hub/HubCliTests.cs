using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Hub;

/// <summary>
/// <c>ullme embed --model org/name</c> end to end, in process, against the local Hub: HF_ENDPOINT and HF_HUB_CACHE
/// come from the environment as a user sets them (set here, in the non-parallel torch collection, and restored).
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class HubCliTests(HubTestRepos repos) : IClassFixture<HubTestRepos>, IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-hub-cli-").FullName;
    private readonly FakeHub _hub = new();
    private readonly Dictionary<string, string?> _saved = new();

    public async Task InitializeAsync()
    {
        _hub.Publish(HubTestRepos.RepoId, repos.MainFolder);
        await _hub.StartAsync();
        foreach (string name in new[] { "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE" })
            _saved[name] = Environment.GetEnvironmentVariable(name);
        Environment.SetEnvironmentVariable("HF_ENDPOINT", _hub.Endpoint);
        Environment.SetEnvironmentVariable("HF_HUB_CACHE", Path.Combine(_dir, "hub"));
        Environment.SetEnvironmentVariable("HF_HOME", Path.Combine(_dir, "hf-home"));
        Environment.SetEnvironmentVariable("HF_TOKEN", null);
        Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", null);
    }

    public async Task DisposeAsync()
    {
        foreach (var (name, value) in _saved) Environment.SetEnvironmentVariable(name, value);
        await _hub.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void EmbedWithAHubIdDownloadsOnceThenRunsOffline()
    {
        string input = Path.Combine(_dir, "in.txt"), output = Path.Combine(_dir, "out.npy");
        File.WriteAllLines(input, HubTestRepos.Texts);
        var (code, err) = CliTests.Run("embed", "--model", HubTestRepos.RepoId, "--input", input, "--output", output);
        Assert.True(code == 0, err);
        Assert.Contains($"GET /api/models/{HubTestRepos.RepoId}/revision/main", _hub.Requests);
        Assert.Contains(_hub.Requests, r => r.StartsWith("GET /lfs/", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(_dir, "hub", "models--tiny-org--tiny-llama", "refs", "main")));
        var expected = HubTestRepos.Embed(repos.MainFolder);
        var npy = CliTests.ReadNpy(output);
        for (int i = 0; i < expected.Length; i++)
            for (int j = 0; j < expected[i].Length; j++)
                Assert.Equal(expected[i][j], npy[i, j]);

        // cached: HF_HUB_OFFLINE=1 works and asks nothing; tokenize resolves the id too
        int requests = _hub.Requests.Count;
        Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
        (code, err) = CliTests.Run("embed", "--model", HubTestRepos.RepoId, "--input", input, "--output", output);
        Assert.True(code == 0, err);
        (code, err) = CliTests.Run("tokenize", "--model", HubTestRepos.RepoId, "--input", input, "--output", Path.Combine(_dir, "ids.jsonl"));
        Assert.True(code == 0, err);
        Assert.Equal(requests, _hub.Requests.Count);

        // not cached and offline: the one-line error, exit 1
        (code, err) = CliTests.Run("embed", "--model", "tiny-org/other", "--input", input, "--output", Path.Combine(_dir, "other.npy"));
        Assert.Equal(1, code);
        Assert.Contains("'tiny-org/other'", Flat(err));
        Assert.Contains("HF_HUB_OFFLINE", Flat(err));
        Assert.Contains(Flat(Path.Combine(_dir, "hub", "models--tiny-org--other")), Flat(err));
        Assert.False(File.Exists(Path.Combine(_dir, "other.npy")));
    }

    /// <summary>stderr is wrapped at 80 columns: compare without whitespace.</summary>
    /// <summary>The CLI wraps stderr at 80 columns (issue 13 point 7): compare without whitespace.</summary>
    private static string Flat(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\s+", "");
}

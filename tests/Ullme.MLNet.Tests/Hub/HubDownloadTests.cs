using Ullme.MLNet.Hub;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Tests.Hub;

/// <summary>
/// Hugging Face model ids against a local Hub (<see cref="FakeHub"/>) on loopback: download into the huggingface_hub
/// cache layout, cache reuse with the server gone, offline mode, resumed downloads, revisions, a Python-made cache,
/// and the errors a user sees. Every test passes its own <see cref="HubOptions"/> (no process environment).
/// </summary>
public sealed class HubDownloadTests(HubTestRepos repos) : IClassFixture<HubTestRepos>, IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-hub-").FullName;
    private readonly FakeHub _hub = new();
    private string _mainSha = "";
    private string _v1Sha = "";

    public async Task InitializeAsync()
    {
        _mainSha = _hub.Publish(HubTestRepos.RepoId, repos.MainFolder);
        _v1Sha = _hub.Publish(HubTestRepos.RepoId, repos.V1Folder, "v1");
        await _hub.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await _hub.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private HubOptions Options(string? token = null, bool offline = false) => HubTestRepos.Options(_hub.Endpoint, _dir, token, offline);

    private string RepoCache(HubOptions o) => Path.Combine(o.CacheFolder, "models--tiny-org--tiny-llama");

    [Fact]
    public void DownloadThenLoadGivesTheFolderEmbeddingsInTheHuggingFaceHubLayout()
    {
        var options = Options();
        var reports = new List<ModelDownloadProgress>();
        var viaId = HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options, DownloadProgress = new SyncProgress(reports.Add) });
        HubTestRepos.AssertSame(HubTestRepos.Embed(repos.MainFolder), viaId);

        string repo = RepoCache(options);
        Assert.Equal(_mainSha, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        string snapshot = Path.Combine(repo, "snapshots", _mainSha);
        var cached = Directory.EnumerateFileSystemEntries(snapshot, "*", SearchOption.AllDirectories)
            .Where(p => !Directory.Exists(p)).Select(p => Path.GetRelativePath(snapshot, p).Replace('\\', '/')).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(HubTestRepos.MainLoadFiles, cached);   // never pytorch_model.bin or README.md
        Assert.DoesNotContain(_hub.Requests, r => r.Contains("pytorch_model.bin", StringComparison.Ordinal) || r.Contains("README", StringComparison.Ordinal));

        // Relative symbolic links into blobs/, named by sha256 (LFS) or the git blob sha1 (regular files).
        byte[] weights = File.ReadAllBytes(Path.Combine(repos.MainFolder, "model.safetensors"));
        Assert.Equal(Path.Combine("..", "..", "blobs", FakeHub.Sha256(weights)), new FileInfo(Path.Combine(snapshot, "model.safetensors")).LinkTarget);
        byte[] pooling = File.ReadAllBytes(Path.Combine(repos.MainFolder, "1_Pooling", "config.json"));
        Assert.Equal(Path.Combine("..", "..", "..", "blobs", FakeHub.GitSha1(pooling)), new FileInfo(Path.Combine(snapshot, "1_Pooling", "config.json")).LinkTarget);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(repo, "blobs"), "*.incomplete"));
        Assert.Empty(Directory.EnumerateFiles(repo, "*.tmp", SearchOption.AllDirectories));

        long total = HubTestRepos.MainLoadFiles.Sum(f => new FileInfo(Path.Combine(repos.MainFolder, f)).Length);
        Assert.NotEmpty(reports);
        Assert.All(reports, r => Assert.Equal(total, r.BytesTotal));
        Assert.Equal(total, reports[^1].BytesDone);
        Assert.Equal(HubTestRepos.MainLoadFiles.Length, reports[^1].FileCount);
    }

    [Fact]
    public async Task SecondLoadUsesTheCacheWithTheServerStopped()
    {
        var options = Options();
        var first = HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options });
        int requests = _hub.Requests.Count;
        await _hub.StopAsync();
        using var model = UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options });   // online, but nothing listens
        HubTestRepos.AssertSame(first, new EmbeddingEngine(model).Embed(HubTestRepos.Texts));
        Assert.Equal(HubTestRepos.RepoId, model.ModelId);
        Assert.Equal(requests, _hub.Requests.Count);
    }

    [Fact]
    public void OfflineWithAnEmptyCacheIsOneClearErrorAndNoRequest()
    {
        var options = Options(offline: true);
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
        Assert.Contains($"'{HubTestRepos.RepoId}'", e.Message);
        Assert.Contains("revision main", e.Message);
        Assert.Contains(RepoCache(options), e.Message);
        Assert.Contains("HF_HUB_OFFLINE", e.Message);
        Assert.Contains(_hub.Endpoint, e.Message);
        Assert.Empty(_hub.Requests);
    }

    [Fact]
    public void AnInterruptedDownloadResumesWithRange()
    {
        byte[] weights = File.ReadAllBytes(Path.Combine(repos.MainFolder, "model.safetensors"));
        _hub.AbortOnce = ("model.safetensors", 40_000);
        var viaId = HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = Options() });
        HubTestRepos.AssertSame(HubTestRepos.Embed(repos.MainFolder), viaId);
        Assert.Contains(_hub.Requests, r => r == $"GET /lfs/{FakeHub.Sha256(weights)} bytes=40000-");
        Assert.Equal(weights.Length, _hub.BytesServed["model.safetensors"]);   // the first 40,000 bytes were not sent twice
    }

    [Fact]
    public void APartFromAnEarlierRunIsResumedNotFetchedAgain()
    {
        var options = Options();
        byte[] weights = File.ReadAllBytes(Path.Combine(repos.MainFolder, "model.safetensors"));
        string blobs = Path.Combine(RepoCache(options), "blobs");
        Directory.CreateDirectory(blobs);
        File.WriteAllBytes(Path.Combine(blobs, FakeHub.Sha256(weights) + ".incomplete"), weights[..50_000]);
        HubTestRepos.AssertSame(HubTestRepos.Embed(repos.MainFolder), HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
        Assert.Contains(_hub.Requests, r => r == $"GET /lfs/{FakeHub.Sha256(weights)} bytes=50000-");
        Assert.Equal(weights.Length - 50_000, _hub.BytesServed["model.safetensors"]);
    }

    [Fact]
    public void ACancelledDownloadStopsAndTheNextLoadResumesIt()
    {
        var options = Options();
        using var cts = new CancellationTokenSource();
        int weightReports = 0;
        // the 1st report announces the file, the 2nd comes once its .incomplete part is open: cancel then
        var progress = new SyncProgress(p => { if (p.File == "model.safetensors" && ++weightReports == 2) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() =>
            UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options, DownloadProgress = progress, CancellationToken = cts.Token }));
        string repo = RepoCache(options);
        byte[] weights = File.ReadAllBytes(Path.Combine(repos.MainFolder, "model.safetensors"));
        Assert.True(File.Exists(Path.Combine(repo, "blobs", FakeHub.Sha256(weights) + ".incomplete")));
        Assert.False(File.Exists(Path.Combine(repo, "snapshots", _mainSha, "model.safetensors")));
        Assert.False(File.Exists(Path.Combine(repo, "refs", "main")));
        HubTestRepos.AssertSame(HubTestRepos.Embed(repos.MainFolder), HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
    }

    [Fact]
    public void ACorruptTransferIsRefusedBySha256AndLeavesNothing()
    {
        var options = Options();
        _hub.CorruptFile = "model.safetensors";
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
        Assert.Contains("sha256", e.Message);
        Assert.Contains("model.safetensors", e.Message);
        string repo = RepoCache(options);
        Assert.False(File.Exists(Path.Combine(repo, "snapshots", _mainSha, "model.safetensors")));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(repo, "blobs"), "*.incomplete"));
        Assert.False(File.Exists(Path.Combine(repo, "refs", "main")));
    }

    [Fact]
    public void RevisionAfterAtSelectsTheBranchOrTheCommit()
    {
        var v1 = HubTestRepos.Embed(repos.V1Folder);
        var main = HubTestRepos.Embed(repos.MainFolder);
        Assert.NotEqual(main[0], v1[0]);
        var options = new ModelLoadOptions { Hub = Options() };
        HubTestRepos.AssertSame(v1, HubTestRepos.Embed(HubTestRepos.RepoId + "@v1", options));   // sharded: the index, then both shards
        Assert.Equal(_v1Sha, File.ReadAllText(Path.Combine(RepoCache(options.Hub!), "refs", "v1")));
        Assert.True(File.Exists(Path.Combine(RepoCache(options.Hub!), "snapshots", _v1Sha, "model-00002-of-00002.safetensors")));
        HubTestRepos.AssertSame(main, HubTestRepos.Embed($"{HubTestRepos.RepoId}@{_mainSha}", options));
        HubTestRepos.AssertSame(main, HubTestRepos.Embed(HubTestRepos.RepoId, options));
    }

    [Fact]
    public void APythonMadeCacheWithSymlinksOrPlainFilesIsUsedWithoutAnyRequest()
    {
        var options = Options() with { Endpoint = HubTestRepos.DeadEndpoint() };
        var expected = HubTestRepos.Embed(repos.MainFolder);
        string repo = RepoCache(options);
        string commit = new('a', 40);
        // As huggingface_hub's snapshot_download writes it: blobs by hash, relative links, refs/main.
        foreach (string file in Directory.EnumerateFiles(repos.MainFolder, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(repos.MainFolder, file);
            byte[] bytes = File.ReadAllBytes(file);
            string blob = Path.Combine(repo, "blobs", FakeHub.IsLfs(rel) ? FakeHub.Sha256(bytes) : FakeHub.GitSha1(bytes));
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            File.WriteAllBytes(blob, bytes);
            string link = Path.Combine(repo, "snapshots", commit, rel);
            Directory.CreateDirectory(Path.GetDirectoryName(link)!);
            File.CreateSymbolicLink(link, Path.GetRelativePath(Path.GetDirectoryName(link)!, blob));
        }
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), commit);
        HubTestRepos.AssertSame(expected, HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));

        // A snapshot of plain files (a cache copied without links) under a tag
        string plain = new('b', 40);
        CopyTree(repos.MainFolder, Path.Combine(repo, "snapshots", plain));
        File.WriteAllText(Path.Combine(repo, "refs", "v0"), plain + "\n");
        HubTestRepos.AssertSame(expected, HubTestRepos.Embed(HubTestRepos.RepoId + "@v0", new ModelLoadOptions { Hub = options }));
        Assert.Empty(_hub.Requests);
    }

    [Fact]
    public void AnUnknownModelOrRevisionIsA404ErrorNamingItTheCacheAndTheEndpoint()
    {
        var options = Options();
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load("tiny-org/no-such-model", new ModelLoadOptions { Hub = options }));
        Assert.Contains("'tiny-org/no-such-model'", e.Message);
        Assert.Contains("404", e.Message);
        Assert.Contains(_hub.Endpoint, e.Message);
        Assert.Contains(Path.Combine(options.CacheFolder, "models--tiny-org--no-such-model"), e.Message);

        e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId + "@no-such-branch", new ModelLoadOptions { Hub = options }));
        Assert.Contains("no revision 'no-such-branch'", e.Message);
        Assert.Contains(RepoCache(options), e.Message);
    }

    [Fact]
    public void APrivateModelNeedsHfTokenSentAsBearer()
    {
        _hub.RequiredToken = "hf_secret";
        var options = Options();
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
        Assert.Contains("401", e.Message);
        Assert.Contains("set HF_TOKEN", e.Message);
        Assert.Contains($"'{HubTestRepos.RepoId}'", e.Message);
        Assert.Contains(RepoCache(options), e.Message);

        e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options with { Token = "hf_wrong" } }));
        Assert.Contains("refused", e.Message);

        HubTestRepos.AssertSame(HubTestRepos.Embed(repos.MainFolder), HubTestRepos.Embed(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options with { Token = "hf_secret" } }));
        Assert.Contains("Bearer hf_secret", _hub.Authorizations);
    }

    [Fact]
    public void AGatedModelSays403AndHowToGetAccess()
    {
        _hub.Gated.Add(HubTestRepos.RepoId);
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = Options(token: "hf_x") }));
        Assert.Contains("403", e.Message);
        Assert.Contains("gated", e.Message);
        Assert.Contains("HF_TOKEN", e.Message);
    }

    [Fact]
    public void AnUnreachableHubIsOneClearError()
    {
        var options = Options() with { Endpoint = HubTestRepos.DeadEndpoint() };
        var e = Assert.Throws<UllmeException>(() => UllmeModel.Load(HubTestRepos.RepoId, new ModelLoadOptions { Hub = options }));
        Assert.Contains("Cannot reach", e.Message);
        Assert.Contains(options.Endpoint, e.Message);
        Assert.Contains($"'{HubTestRepos.RepoId}'", e.Message);
        Assert.Contains(RepoCache(options), e.Message);
    }

    [Fact]
    public void ALocalFolderNamedLikeAnIdWinsOverTheHub()
    {
        string org = "ullme-hub-test-" + Guid.NewGuid().ToString("N")[..8];
        string folder = Path.Combine(Directory.GetCurrentDirectory(), org, "tiny-llama");
        CopyTree(repos.V1Folder, folder);
        try
        {
            var options = Options() with { Endpoint = HubTestRepos.DeadEndpoint() };
            HubTestRepos.AssertSame(HubTestRepos.Embed(repos.V1Folder), HubTestRepos.Embed($"{org}/tiny-llama", new ModelLoadOptions { Hub = options }));
            Assert.False(Directory.Exists(options.CacheFolder));
        }
        finally
        {
            Directory.Delete(Path.Combine(Directory.GetCurrentDirectory(), org), recursive: true);
        }
    }

    private static void CopyTree(string from, string to)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    private sealed class SyncProgress(Action<ModelDownloadProgress> report) : IProgress<ModelDownloadProgress>
    {
        public void Report(ModelDownloadProgress value) => report(value);
    }
}

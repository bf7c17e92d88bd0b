using System.Text.Json;
using Ullme.MLNet.Orleans.Client;
using Ullme.MLNet.Orleans.Corpus;
using Ullme.MLNet.Orleans.Jobs;
using Ullme.MLNet.Tests.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>
/// Corpus jobs on real clusters of `ullme silo` processes on loopback: one silo killed with SIGKILL while it holds a
/// lease, and the whole cluster killed and restarted mid-job. The output must be exactly the rows of a single-process
/// `ullme embed` of the same file, each once, with the same vectors.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class ClusterFaultTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-cluster-").FullName;
    private readonly List<SiloProcess> _silos = [];

    public void Dispose()
    {
        foreach (var s in _silos) s.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static readonly string[] Words =
        "the a river mountain city protein network market quietly rapidly ancient modern study results patients model data light music garden".Split(' ');

    /// <summary>A JSONL corpus of <paramref name="rows"/> distinct texts of 6-30 words, and the reference embeddings of
    /// a single-process `ullme embed` of it.</summary>
    private (string Corpus, float[,] Reference) Corpus(int rows)
    {
        string corpus = PathOf("corpus.jsonl");
        var rng = new Random(17);
        using (var w = new StreamWriter(corpus))
            for (int i = 0; i < rows; i++)
            {
                int n = 6 + rng.Next(25);
                string text = string.Join(' ', Enumerable.Range(0, n).Select(_ => Words[rng.Next(Words.Length)])) + $" number {i}";
                w.WriteLine(JsonSerializer.Serialize(new { text }));
            }
        var (code, err) = CliTests.Run("embed", "--model", "default", "--input", corpus, "--output", PathOf("reference.npy"));   // no --threads: it would stay set for later tests
        Assert.True(code == 0, err);
        return (corpus, CliTests.ReadNpy(PathOf("reference.npy")));
    }

    /// <summary>How the silos and clients of one test find each other: a localhost cluster (primary port, state
    /// folder) or a PostgreSQL database (a cluster id of its own, so earlier runs' silos are not in its membership).</summary>
    private sealed record Setup(string[] Args, string Cluster, string? StateDir, string? ClusterId)
    {
        public Task<UllmeCluster> ConnectAsync() => UllmeCluster.ConnectAsync(Cluster, StateDir, ClusterId);
    }

    private Setup Localhost(int primary) =>
        new(["--cluster", $"localhost:{primary}", "--state-dir", PathOf("state")], $"localhost:{primary}", PathOf("state"), null);

    private static Setup Postgres()
    {
        string id = "test-" + Guid.NewGuid().ToString("N")[..12];
        return new(["--cluster", TestPostgres.ConnectionString!, "--cluster-id", id], TestPostgres.ConnectionString!, null, id);
    }

    private SiloProcess Silo(Setup setup, int port, int gateway)
    {
        var s = SiloProcess.Start(setup.Args, port, gateway);
        _silos.Add(s);
        return s;
    }

    private static async Task<string> Submit(Setup setup, string corpus, string output, int shardRows, double leaseSeconds)
    {
        var (code, stdout, stderr) = await SiloProcess.RunCli(TimeSpan.FromMinutes(2), ["job", "submit", .. setup.Args,
            "--input", corpus, "--output", output, "--shard-rows", shardRows.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--lease-seconds", leaseSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "--batch-size", "8"]);
        Assert.True(code == 0, $"job submit exited {code}: {stderr}");
        return stdout.Trim();
    }

    /// <summary>Point 3 of the issue: every row once, ids as planned, vectors as `ullme embed`'s, manifest consistent.</summary>
    private static void AssertSameAsSingleMachine(string output, float[,] reference, int shards)
    {
        var manifest = JobManifest.Read(Path.Combine(output, "manifest.json"));
        Assert.Equal(reference.GetLength(0), manifest.Rows);
        Assert.Equal(shards, manifest.Shards.Count);
        Assert.Equal(shards, Directory.GetFiles(output, "part-*.parquet").Length);
        Assert.False(Directory.Exists(Path.Combine(output, "_staging")) && Directory.EnumerateFileSystemEntries(Path.Combine(output, "_staging")).Any(),
            "staging files left behind");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int dim = reference.GetLength(1);
        foreach (var shard in manifest.Shards)
        {
            string path = Path.Combine(output, shard.File);
            Assert.Equal(shard.Sha256, ShardFile.Sha256(path));
            Assert.Equal(shard.Bytes, new FileInfo(path).Length);
            var (ids, vectors, _) = ShardFile.Read(path);
            Assert.Equal(shard.Rows, ids.Length);
            for (int k = 0; k < ids.Length; k++)
            {
                Assert.True(seen.Add(ids[k]), $"row {ids[k]} appears twice");
                Assert.StartsWith("corpus.jsonl:", ids[k]);
                int row = int.Parse(ids[k]["corpus.jsonl:".Length..], System.Globalization.CultureInfo.InvariantCulture) - 1;
                Assert.Equal(shard.StartRow + k, row);
                Assert.Equal(dim, vectors[k].Length);
                double dot = 0, na = 0, nb = 0;
                for (int j = 0; j < dim; j++)
                {
                    dot += vectors[k][j] * reference[row, j];
                    na += vectors[k][j] * vectors[k][j];
                    nb += reference[row, j] * reference[row, j];
                }
                double cosine = dot / Math.Sqrt(na * nb);
                Assert.True(cosine >= 0.99999, $"row {ids[k]}: cosine {cosine} against `ullme embed`");
            }
        }
        Assert.Equal(reference.GetLength(0), seen.Count);
    }

    [Fact]
    public Task ASiloKilledWhileItHoldsALease_LosesNothing_AndTheOutputEqualsASingleMachineRun()
    {
        // localhost clustering keeps its membership on the primary silo: kill another one
        int primary = SiloProcess.FreePort();
        return KillOneSilo(Localhost(primary), primary, killFirst: false);
    }

    [PostgresFact]
    public Task OnPostgres_AnySiloMayBeKilled_EvenTheFirst_AndTheOutputEqualsASingleMachineRun() =>
        KillOneSilo(Postgres(), SiloProcess.FreePort(), killFirst: true);

    private async Task KillOneSilo(Setup setup, int firstPort, bool killFirst)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        var (corpus, reference) = Corpus(rows: 1440);   // 24 work items of 60 rows (a second or so each: a kill rarely lands between a check and a commit)
        string output = PathOf("out");
        var first = Silo(setup, firstPort, SiloProcess.FreePort());
        await first.WaitListeningAsync(TimeSpan.FromMinutes(3));
        var second = Silo(setup, SiloProcess.FreePort(), SiloProcess.FreePort());
        var third = Silo(setup, SiloProcess.FreePort(), SiloProcess.FreePort());
        await second.WaitListeningAsync(TimeSpan.FromMinutes(3));
        await third.WaitListeningAsync(TimeSpan.FromMinutes(3));
        // Localhost clustering keeps its membership on the primary (the first silo): only the others may die there.
        var candidates = killFirst ? new[] { first, second, third } : [second, third];

        string job = await Submit(setup, corpus, output, shardRows: 60, leaseSeconds: 4);
        await using var cluster = await setup.ConnectAsync();

        // SIGKILL a candidate at a moment its log shows a lease it has not finished, with work left for the others.
        SiloProcess? victim = null;
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (victim is null && DateTime.UtcNow < deadline)
        {
            int committed = Directory.Exists(output) ? Directory.GetFiles(output, "part-*.parquet").Length : 0;
            Assert.True(committed < 20, "the job is nearly done and no candidate held a lease yet; make it longer");
            victim = candidates.FirstOrDefault(c => c.HeldItems(job).Count > 0);
            if (victim is null) await Task.Delay(5);
        }
        Assert.NotNull(victim);
        victim.Kill();
        var held = victim.HeldItems(job);   // its whole log, read to the end after it died
        Assert.True(held.Count > 0, $"the victim's lease ended just before the kill; its log:\n{victim.Log}");
        var survivors = new[] { first, second, third }.Where(s => s != victim).ToArray();
        var before = await cluster.GetStatusAsync(job);
        Assert.True(before!.ItemsDone < before.ItemsTotal, "the job finished before the kill; make it longer");

        var final = await cluster.WaitAsync(job, cancellationToken: new CancellationTokenSource(TimeSpan.FromMinutes(5)).Token);
        Assert.True(final.Phase == JobPhase.Completed,
            $"{final.Phase}; failed: {string.Join("; ", final.FailedItems.Select(f => f.Error))}\nlogs:\n{string.Join("\n---\n", survivors.Select(s => s.Log))}");
        Assert.Equal(24, final.ItemsTotal);
        Assert.True(final.Retries >= held.Count, $"{final.Retries} retries; the victim held {held.Count} items when killed");
        foreach (int item in held)
            Assert.True(survivors.Any(s => s.LeasedItems(job).Contains(item)), $"item {item} was not re-leased");
        AssertSameAsSingleMachine(output, reference, shards: 24);
    }

    [Fact]
    public Task ARestartedCluster_ResumesTheJob_WithoutRedoingCommittedItems()
    {
        int primary = SiloProcess.FreePort();
        return RestartCluster(Localhost(primary), primary);
    }

    [PostgresFact]
    public Task OnPostgres_ARestartedCluster_ResumesTheJob_WithoutRedoingCommittedItems() => RestartCluster(Postgres(), SiloProcess.FreePort());

    private async Task RestartCluster(Setup setup, int primary)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        var (corpus, reference) = Corpus(rows: 600);   // 30 work items of 20 rows
        string output = PathOf("out");
        int gatewayA = SiloProcess.FreePort(), portB = SiloProcess.FreePort(), gatewayB = SiloProcess.FreePort();
        var a = Silo(setup, primary, gatewayA);
        await a.WaitListeningAsync(TimeSpan.FromMinutes(3));
        var b = Silo(setup, portB, gatewayB);
        await b.WaitListeningAsync(TimeSpan.FromMinutes(3));
        string job = await Submit(setup, corpus, output, shardRows: 20, leaseSeconds: 4);

        // Let a third of the items commit, then kill the whole cluster at once.
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (Directory.GetFiles(output, "part-*.parquet").Length < 10 && DateTime.UtcNow < deadline) await Task.Delay(20);
        a.Kill();
        b.Kill();
        var committed = Directory.GetFiles(output, "part-*.parquet").ToDictionary(f => f, f => (File.GetLastWriteTimeUtc(f), ShardFile.Sha256(f)));
        Assert.InRange(committed.Count, 10, 29);

        var a2 = Silo(setup, primary, gatewayA);
        await a2.WaitListeningAsync(TimeSpan.FromMinutes(3));
        var b2 = Silo(setup, portB, gatewayB);
        await b2.WaitListeningAsync(TimeSpan.FromMinutes(3));
        await using var cluster = await setup.ConnectAsync();
        var final = await cluster.WaitAsync(job, cancellationToken: new CancellationTokenSource(TimeSpan.FromMinutes(5)).Token);
        Assert.True(final.Phase == JobPhase.Completed, $"{final.Phase}\nlog a2:\n{a2.Log}\nlog b2:\n{b2.Log}");

        // committed shards were not rewritten, and no silo of the new cluster leased their items again
        foreach (var (file, (mtime, sha)) in committed)
        {
            Assert.Equal(mtime, File.GetLastWriteTimeUtc(file));
            Assert.Equal(sha, ShardFile.Sha256(file));
            int item = int.Parse(Path.GetFileNameWithoutExtension(file)["part-".Length..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.False(a2.LeasedItems(job).Contains(item) || b2.LeasedItems(job).Contains(item), $"committed item {item} was embedded again");
        }
        Assert.True(a2.LeasedItems(job).Count + b2.LeasedItems(job).Count >= 30 - committed.Count);
        AssertSameAsSingleMachine(output, reference, shards: 30);
    }

    [Fact]
    public async Task ASiloStoppedWithSigterm_GivesItsLeaseBack_SoTheItemMovesAtOnce()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        var (corpus, reference) = Corpus(rows: 600);   // 2 items of 300 rows, each seconds of work on one thread
        int primary = SiloProcess.FreePort(), gateway = SiloProcess.FreePort();
        var setup = Localhost(primary);
        string output = PathOf("out");
        var a = Silo(setup, primary, gateway);
        await a.WaitListeningAsync(TimeSpan.FromMinutes(3));
        string job = await Submit(setup, corpus, output, shardRows: 300, leaseSeconds: 600);   // an expiry would take 10 minutes
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (a.HeldItems(job).Count == 0 && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.True(a.HeldItems(job).Count > 0, a.Log);
        Assert.Equal(0, a.Terminate(TimeSpan.FromMinutes(1)));

        var b = Silo(setup, primary, gateway);
        await b.WaitListeningAsync(TimeSpan.FromMinutes(3));
        await using var cluster = await setup.ConnectAsync();
        var final = await cluster.WaitAsync(job, cancellationToken: new CancellationTokenSource(TimeSpan.FromMinutes(3)).Token);
        Assert.Equal(JobPhase.Completed, final.Phase);
        Assert.Equal(0, final.Retries);   // a release is not a failed attempt
        AssertSameAsSingleMachine(output, reference, shards: 2);
    }
}

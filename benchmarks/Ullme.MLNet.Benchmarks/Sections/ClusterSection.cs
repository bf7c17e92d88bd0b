using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Orleans.Runtime;
using Orleans.Storage;
using Ullme.Cli;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Orleans.Client;
using Ullme.MLNet.Orleans.Corpus;
using Ullme.MLNet.Orleans.Hosting;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Benchmarks.Sections;

/// <summary>
/// Corpus embedding on a localhost Orleans cluster of 1, 2 and 3 `ullme silo` processes against one `ullme embed`
/// process on the same JSONL file in the same run; the cluster's per-item overhead (lease, commit, state writes,
/// polling) measured apart from the embedding; and from those costs a model of 10, 100 and 1,000 silos.
/// </summary>
public static class ClusterSection
{
    private static readonly string Ullme = typeof(UllmeCli).Assembly.Location;

    public static void Run(BenchContext ctx)
    {
        Console.WriteLine("Cluster");
        string dir = Directory.CreateTempSubdirectory("ullme-bench-cluster-").FullName;
        try
        {
            Measure(ctx, dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Measure(BenchContext ctx, string dir)
    {
        int rows = ctx.Quick ? 2000 : 8000, shardRows = 250;
        string corpus = Path.Combine(dir, "corpus.jsonl");
        using (var w = new StreamWriter(corpus))
            for (int i = 0; i < rows; i++)
                w.WriteLine(JsonSerializer.Serialize(new { text = $"{ctx.Texts.ShortTexts[i % ctx.Texts.ShortTexts.Count]} ({i})" }));
        string section = $"Cluster: {rows} short texts (MiniLM), {ctx.Threads} cores";

        // Single process, the same file, every core.
        var clock = Stopwatch.StartNew();
        Cli(TimeSpan.FromMinutes(10), "embed", "--model", "default", "--input", corpus, "--output", Path.Combine(dir, "single.npy"), "--threads", ctx.Threads.ToString(CultureInfo.InvariantCulture));
        double single = rows / clock.Elapsed.TotalSeconds;
        ctx.Report.Add(section, "ullme embed (one process, model load included)", new() { ["rows/s"] = single, ["seconds"] = clock.Elapsed.TotalSeconds });

        double? oneSilo = null;
        JobCosts? costs = null;
        foreach (int silos in new[] { 1, 2, 3 })
        {
            int threads = Math.Max(1, ctx.Threads / silos);
            var (rate, seconds, jobCosts) = RunCluster(dir, corpus, silos, threads, shardRows, $"c{silos}");
            oneSilo ??= rate;
            costs ??= jobCosts;
            ctx.Report.Add(section, $"{silos} silo{(silos > 1 ? "s" : "")} × {threads} thread{(threads > 1 ? "s" : "")} (submit to manifest; silos already up)",
                new() { ["rows/s"] = rate, ["seconds"] = seconds, ["vs ullme embed"] = rate / single });
        }
        ctx.Report.AddRatio("cluster, 1 silo vs ullme embed", oneSilo!.Value / single, "rows/s of a one-silo job over a single `ullme embed` of the same file",
            "same cores; the cluster adds per-item reads, shard writes and coordinator calls, and excludes model load");

        // Per-item overhead: a job of one-row items on one silo, so the embedding is negligible against the rest.
        var (tinyRate, tinySeconds, tiny) = RunCluster(dir, corpus, silos: 1, threads: ctx.Threads, shardRows: 1, "tiny", limitRows: ctx.Quick ? 100 : 300);
        double perItemWall = tinySeconds / tiny.Items;
        ctx.Report.Add("Cluster: per-item overhead (one-row items, 1 silo)", "wall per item", new() { ["ms"] = perItemWall * 1000 });
        ctx.Report.Add("Cluster: per-item overhead (one-row items, 1 silo)", "worker: read + embed + write shard", new() { ["ms"] = tiny.MeanItemSeconds * 1000 });
        ctx.Report.Add("Cluster: per-item overhead (one-row items, 1 silo)", "coordinator round trips + polling (the rest)", new() { ["ms"] = (perItemWall - tiny.MeanItemSeconds) * 1000 });

        // The coordinator writes its whole ledger (group commits): one write's cost grows with the item count.
        var stateWrite = new Dictionary<int, double>();
        foreach (int items in new[] { 1_000, 10_000, 100_000 }) stateWrite[items] = StateWriteSeconds(dir, items);
        foreach (var (items, s) in stateWrite)
            ctx.Report.Add("Cluster: coordinator state write (folder storage)", $"{items:N0} items", new() { ["ms"] = s * 1000 });

        // What one job's coordinator sustains: many fake workers lease and commit (empty shards) as fast as they can.
        var capacity = new Dictionary<int, double>();
        foreach (int items in new[] { 10_000, 100_000 })
        {
            capacity[items] = CoordinatorItemsPerSecond(dir, items, workers: 64, seconds: ctx.Quick ? 3 : 8);
            ctx.Report.Add("Cluster: one job's coordinator, 64 concurrent fake workers (lease + commit, folder storage)", $"{items:N0}-item job",
                new() { ["items/s"] = capacity[items] });
        }

        Simulate(ctx, costs!, perItemWall - tiny.MeanItemSeconds, capacity, shardRows);
    }

    private sealed record JobCosts(int Items, double MeanItemSeconds, long ShardBytes, long Rows);

    /// <summary>Starts <paramref name="silos"/> silos, submits the corpus, waits for the manifest; rows/s from submit
    /// to completion, and the per-item costs the coordinator recorded.</summary>
    private static (double Rate, double Seconds, JobCosts Costs) RunCluster(string dir, string corpus, int silos, int threads, int shardRows, string name, int? limitRows = null)
    {
        string state = Path.Combine(dir, name + "-state"), output = Path.Combine(dir, name + "-out");
        string input = corpus;
        if (limitRows is { } n)
        {
            input = Path.Combine(dir, name + ".jsonl");
            File.WriteAllLines(input, File.ReadLines(corpus).Take(n));
        }
        int primary = FreePort();
        var processes = new List<Silo>();
        try
        {
            for (int i = 0; i < silos; i++)
            {
                int port = i == 0 ? primary : FreePort();
                processes.Add(StartSilo(primary, state, port, FreePort(), threads));
                if (i == 0) WaitListening(processes[0]);
            }
            foreach (var p in processes.Skip(1)) WaitListening(p);
            var cluster = UllmeCluster.ConnectAsync($"localhost:{primary}", state).GetAwaiter().GetResult();
            try
            {
                var clock = Stopwatch.StartNew();
                var job = cluster.SubmitAsync(new EmbeddingJobSpec { Inputs = [input], OutputDirectory = output, ShardRows = shardRows, BatchSize = 32 }).GetAwaiter().GetResult();
                var final = cluster.WaitAsync(job.JobId, pollInterval: TimeSpan.FromMilliseconds(50)).GetAwaiter().GetResult();
                double seconds = clock.Elapsed.TotalSeconds;
                if (final.Phase != JobPhase.Completed) throw new InvalidOperationException($"cluster job {final.Phase}");
                var manifest = JobManifest.Read(JobPaths.Manifest(output));
                var ledger = ReadLedger(state, job.JobId);
                var costs = new JobCosts(ledger.Records.Count, ledger.Records.Average(r => r.Seconds), manifest.Shards.Sum(s => s.Bytes), manifest.Rows);
                return (manifest.Rows / seconds, seconds, costs);
            }
            finally
            {
                cluster.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        finally
        {
            foreach (var (p, _) in processes)
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit();
                p.Dispose();
            }
        }
    }

    private static JobLedger ReadLedger(string state, string jobId)
    {
        string path = Directory.GetFiles(Path.Combine(state, "grains", "job"), $"*{jobId}.json").Single();
        var bytes = File.ReadAllBytes(path);
        int nl = Array.IndexOf(bytes, (byte)'\n');
        return JsonSerializer.Deserialize<JobLedger>(bytes.AsSpan(nl + 1))!;
    }

    /// <summary>Median seconds of one ledger write of <paramref name="items"/> items to the folder storage.</summary>
    private static double StateWriteSeconds(string dir, int items)
    {
        var ledger = new JobLedger();
        ledger.Start("bench", new EmbeddingJobSpec { Inputs = ["/data/corpus-00001.jsonl"], OutputDirectory = "/data/out" },
            Enumerable.Range(0, items).Select(i => new WorkItem(i, "/data/corpus-00001.jsonl", i * 1000L, 1000, i * 180_000L, i * 1000L + 1, "corpus-00001.jsonl")).ToList(), DateTime.UtcNow);
        var storage = new FolderGrainStorage(Path.Combine(dir, "state-bench"));
        var state = new BenchState { State = ledger };
        var id = GrainId.Create("embeddingjob", $"bench-{items}");
        var t = Timing.Measure(() => storage.WriteStateAsync("job", id, state).GetAwaiter().GetResult(), 1.0, 1, 20);
        return t.MedianSeconds;
    }

    private sealed class BenchState : IGrainState<JobLedger>
    {
        [System.Diagnostics.CodeAnalysis.AllowNull] public JobLedger State { get; set; } = default!;
        public string? ETag { get; set; }
        public bool RecordExists { get; set; }
    }

    /// <summary>
    /// Throughput of S silos from the measured costs: each silo embeds a <paramref name="shardRows"/>-row item in the
    /// time one silo took here plus the per-item cluster overhead; one job's coordinator commits at most the measured
    /// items/s. The job runs at the smaller of the two; the output store must absorb shard bytes at that rate.
    /// </summary>
    private static void Simulate(BenchContext ctx, JobCosts oneSilo, double overhead, Dictionary<int, double> capacity, int shardRows)
    {
        double itemSeconds = oneSilo.MeanItemSeconds;
        double bytesPerRow = (double)oneSilo.ShardBytes / oneSilo.Rows;
        string section = $"Cluster: model of S silos (each like one silo here, {shardRows}-row items)";
        foreach (var (items, itemsPerSecond) in capacity)
        {
            double coordinatorLimit = itemsPerSecond * shardRows;
            foreach (int silos in new[] { 1, 10, 100, 1000 })
            {
                double workers = silos * shardRows / (itemSeconds + Math.Max(0, overhead));
                double rate = Math.Min(workers, coordinatorLimit);
                ctx.Report.Add(section, $"{silos} silos, a {items:N0}-item job", new()
                {
                    ["rows/s"] = rate,
                    ["coordinator busy"] = Math.Min(1, workers / coordinatorLimit),
                    ["output MB/s"] = rate * bytesPerRow / 1e6,
                }, workers > coordinatorLimit ? "coordinator-bound" : "silo-bound");
            }
        }
        ctx.Report.Notes.Add($"Cluster model: {itemSeconds * 1000:F0} ms per {shardRows}-row item on one silo here, {overhead * 1000:F1} ms per-item cluster overhead, " +
            $"{bytesPerRow:F0} shard bytes per row; one job's coordinator commits at most the measured items/s (its grain handles one call at a time; " +
            "state writes are group commits). Past that limit, use larger items (--shard-rows) or several jobs (each has its own coordinator, on any silo).");
    }

    /// <summary>Items/s one coordinator commits with <paramref name="workers"/> concurrent fake workers on an in-process
    /// coordinator-only silo (leases, empty staged shards renamed into place, group-committed state writes).</summary>
    private static double CoordinatorItemsPerSecond(string dir, int items, int workers, int seconds)
    {
        string state = Path.Combine(dir, $"coord-{items}-state"), output = Path.Combine(dir, $"coord-{items}-out");
        int primary = FreePort();
        var silo = UllmeSilo.CreateCoordinatorOnly(new UllmeSiloOptions { Cluster = $"localhost:{primary}", StateDirectory = state, Port = primary, GatewayPort = FreePort() });
        silo.StartAsync().GetAwaiter().GetResult();
        try
        {
            var cluster = UllmeCluster.ConnectAsync($"localhost:{primary}", state).GetAwaiter().GetResult();
            try
            {
                var spec = new EmbeddingJobSpec { Inputs = ["/data/corpus.jsonl"], OutputDirectory = output, LeaseSeconds = 600 };
                var plan = Enumerable.Range(0, items).Select(i => new WorkItem(i, "/data/corpus.jsonl", i * 1000L, 1000, i * 180_000L, i * 1000L + 1, "corpus.jsonl")).ToList();
                var status = cluster.SubmitPlannedAsync(spec, plan, $"coord-{items}").GetAwaiter().GetResult();
                var job = cluster.Client.GetGrain<IEmbeddingJobGrain>(status.JobId);
                var until = DateTime.UtcNow.AddSeconds(seconds);
                long committed = 0;
                var clock = Stopwatch.StartNew();
                var tasks = Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
                {
                    var info = new WorkerInfo($"fake-{w}", "fake-model", 384, "fake");
                    while (DateTime.UtcNow < until)
                    {
                        var lease = await job.LeaseAsync(info);
                        if (lease is null) return;
                        string staging = JobPaths.StagingShard(output, lease.Item.Index, lease.LeaseId);
                        await File.WriteAllBytesAsync(staging, new byte[16]);
                        if (await job.CompleteAsync(lease.Item.Index, lease.LeaseId, new WorkResult(staging, lease.Item.Rows, "0", 16, 0, "fake")))
                            Interlocked.Increment(ref committed);
                    }
                })).ToArray();
                Task.WaitAll(tasks);
                return committed / clock.Elapsed.TotalSeconds;
            }
            finally
            {
                cluster.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        finally
        {
            silo.StopAsync().GetAwaiter().GetResult();
            silo.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private sealed record Silo(Process Process, Task<bool> Listening);

    private static Silo StartSilo(int primary, string state, int port, int gateway, int threads)
    {
        var psi = new ProcessStartInfo("dotnet", [Ullme, "silo", "--model", "default", "--cluster", $"localhost:{primary}", "--state-dir", state,
            "--port", port.ToString(CultureInfo.InvariantCulture), "--gateway-port", gateway.ToString(CultureInfo.InvariantCulture),
            "--threads", threads.ToString(CultureInfo.InvariantCulture)])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        var p = Process.Start(psi)!;
        var listening = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) listening.TrySetResult(false);
            else if (e.Data.StartsWith("Silo listening", StringComparison.Ordinal)) listening.TrySetResult(true);
        };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return new Silo(p, listening.Task);
    }

    private static void WaitListening(Silo silo)
    {
        if (!silo.Listening.Wait(TimeSpan.FromMinutes(3)) || !silo.Listening.Result) throw new InvalidOperationException("a silo did not start");
    }

    private static void Cli(TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo("dotnet", [Ullme, .. args]) { RedirectStandardError = true })!;
        string err = p.StandardError.ReadToEnd();
        if (!p.WaitForExit(timeout) || p.ExitCode != 0) throw new InvalidOperationException($"ullme {args[0]} failed: {err}");
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}

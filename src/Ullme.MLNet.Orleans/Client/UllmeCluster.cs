using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Runtime;
using Orleans.Runtime.Messaging;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Orleans.Corpus;
using Ullme.MLNet.Orleans.Hosting;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Client;

/// <summary>
/// A client of an Ullme Orleans cluster: submits corpus embedding jobs, follows and cancels them.
/// <code>
/// await using var cluster = await UllmeCluster.ConnectAsync("localhost");
/// var job = await cluster.SubmitAsync(new EmbeddingJobSpec { Inputs = ["corpus/*.jsonl"], OutputDirectory = "vectors" });
/// var done = await cluster.WaitAsync(job.JobId);
/// </code>
/// Inputs are planned here (split into work items of <see cref="EmbeddingJobSpec.ShardRows"/> rows); every silo must
/// see the input and output paths (one machine, or a shared file system).
/// </summary>
public sealed class UllmeCluster : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly IClusterClient _client;

    /// <summary>The Orleans client (the coordinator benchmark drives the job grain with it).</summary>
    internal IClusterClient Client => _client;

    private UllmeCluster(IHost host)
    {
        _host = host;
        _client = host.Services.GetRequiredService<IClusterClient>();
    }

    /// <summary>Connects to the cluster <paramref name="cluster"/> names (<c>localhost</c>, <c>localhost:&lt;port&gt;</c>,
    /// or a PostgreSQL connection string); <paramref name="stateDirectory"/> is a localhost cluster's state folder.</summary>
    public static async Task<UllmeCluster> ConnectAsync(string cluster = "localhost", string? stateDirectory = null, string? clusterId = null,
        CancellationToken cancellationToken = default)
    {
        var connection = ClusterConnection.Parse(cluster, stateDirectory, clusterId);
        int[] gateways = connection.IsLocalhost ? connection.LiveGateways() : [];
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client =>
        {
            if (connection.IsLocalhost)
            {
                client.UseLocalhostClustering(gateways, ClusterNames.ServiceId, connection.ClusterId);
            }
            else
            {
                client.Configure<ClusterOptions>(o =>
                {
                    o.ClusterId = connection.ClusterId;
                    o.ServiceId = ClusterNames.ServiceId;
                });
                client.UseAdoNetClustering(o =>
                {
                    o.Invariant = UllmeSilo.PostgresInvariant;
                    o.ConnectionString = connection.PostgresConnectionString!;
                });
            }
            // Our calls take milliseconds; a call that went through a gateway killed mid-call gets no answer at all, so it
            // times out soon and is retried (Retry) through a live gateway instead of waiting Orleans' default 30 s.
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(10));
        });
        var host = builder.Build();
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(ConnectTimeout);
            await host.StartAsync(timeout.Token);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            host.Dispose();
            string why = e is OperationCanceledException ? $"no gateway answered within {ConnectTimeout.TotalSeconds:0} s" : e.Message;
            throw new UllmeException($"cannot reach the cluster at {connection}: {why} (is a silo running? `ullme silo --cluster {cluster}`)", e);
        }
        return new UllmeCluster(host);
    }

    /// <summary>How long <see cref="ConnectAsync"/> tries to reach a gateway.</summary>
    internal static TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Plans <paramref name="spec"/>'s inputs into work items and starts the job; returns its first status
    /// (its <see cref="EmbeddingJobStatus.JobId"/> names it from then on). The output folder must be new or empty.</summary>
    public async Task<EmbeddingJobStatus> SubmitAsync(EmbeddingJobSpec spec, string? jobId = null, CancellationToken cancellationToken = default)
    {
        var (planned, items) = Plan(spec, cancellationToken);
        return await SubmitPlannedAsync(planned, items, jobId);
    }

    /// <summary>Starts a job <see cref="Plan"/> already planned (the CLI plans before it connects, so a bad input is
    /// reported without a cluster).</summary>
    internal async Task<EmbeddingJobStatus> SubmitPlannedAsync(EmbeddingJobSpec planned, List<WorkItem> items, string? jobId)
    {
        string id = jobId ?? NewJobId();
        if (!IsJobId(id)) throw new UllmeException($"job id '{id}': use letters, digits, '-' and '_' (at most 64).");
        var existing = await GetStatusAsync(id);
        if (existing is not null) throw new UllmeException($"job '{id}' already exists ({existing.Phase}, output {existing.OutputDirectory}).");
        Directory.CreateDirectory(planned.OutputDirectory);
        return await Retry(() => _client.GetGrain<IEmbeddingJobGrain>(id).StartAsync(planned, items));   // a second Start is a no-op
    }

    /// <summary>Validates a spec, resolves its paths and plans its work items (what <see cref="SubmitAsync"/> sends).</summary>
    internal static (EmbeddingJobSpec Spec, List<WorkItem> Items) Plan(EmbeddingJobSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Inputs.Count == 0) throw new UllmeException("EmbeddingJobSpec.Inputs (--input) names no file.");
        if (string.IsNullOrWhiteSpace(spec.OutputDirectory)) throw new UllmeException("EmbeddingJobSpec.OutputDirectory (--output) is empty.");
        if (spec.ShardRows is < 1 or > 10_000_000) throw new UllmeException($"EmbeddingJobSpec.ShardRows (--shard-rows) {spec.ShardRows}: use 1 to 10,000,000.");
        if (!(spec.LeaseSeconds is >= 1 and <= 86_400)) throw new UllmeException($"EmbeddingJobSpec.LeaseSeconds (--lease-seconds) {spec.LeaseSeconds}: use 1 to 86,400.");
        if (spec.MaxAttempts is < 1 or > 100) throw new UllmeException($"EmbeddingJobSpec.MaxAttempts (--max-attempts) {spec.MaxAttempts}: use 1 to 100.");
        if (string.IsNullOrWhiteSpace(spec.TextColumn)) throw new UllmeException("EmbeddingJobSpec.TextColumn (--text-column) is empty.");
        EmbeddingWorker.Options(spec).Validate();
        string output = Path.GetFullPath(spec.OutputDirectory);
        if (File.Exists(output)) throw new UllmeException($"--output '{spec.OutputDirectory}' is a file; give a folder.");
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
            throw new UllmeException($"--output '{spec.OutputDirectory}' is not empty; give a new or empty folder (a job never mixes its shards with other files).");
        var files = CorpusFiles.Expand(spec.Inputs);
        foreach (string f in files)
            if (IO.PathGuard.IsSameOrInside(f, output)) throw new UllmeException($"input '{f}' is inside --output '{spec.OutputDirectory}'.");
        var stamps = files.ToDictionary(f => f, f => { var fi = new FileInfo(f); return (fi.Length, fi.LastWriteTimeUtc); }, StringComparer.Ordinal);
        var items = CorpusPlanner.Plan(files, spec.TextColumn, spec.IdColumn, spec.ShardRows, cancellationToken)
            .Select(i => i with { FileLength = stamps[i.File].Length, FileWriteUtc = stamps[i.File].LastWriteTimeUtc }).ToList();
        // JSONL has no header to check: read each file's first row now, so a wrong --text-column / --id-column is an
        // error here rather than a failed item on every silo.
        foreach (var first in items.GroupBy(i => i.File).Select(g => g.First()))
            if (Path.GetExtension(first.File).ToLowerInvariant() is ".jsonl" or ".ndjson")
                CorpusReader.Read(first with { Rows = 1 }, spec.TextColumn, spec.IdColumn, cancellationToken);
        foreach (var (file, before) in stamps)
        {
            var now = new FileInfo(file);
            if (now.Length != before.Length || now.LastWriteTimeUtc != before.LastWriteTimeUtc)
                throw new UllmeException($"'{file}' changed while it was planned; submit again once it is complete.");
        }
        return (spec with { Inputs = files, OutputDirectory = output }, items);
    }

    /// <summary>The job's status, or null when no job has that id.</summary>
    public Task<EmbeddingJobStatus?> GetStatusAsync(string jobId) => Retry(() => _client.GetGrain<IEmbeddingJobGrain>(CheckId(jobId)).GetStatusAsync());

    /// <summary>Cancels the job: no item is leased any more; committed shards stay. Null when no job has that id.</summary>
    public Task<EmbeddingJobStatus?> CancelAsync(string jobId) => Retry(() => _client.GetGrain<IEmbeddingJobGrain>(CheckId(jobId)).CancelAsync());

    /// <summary>Runs a failed or cancelled job again: its failed and unfinished items are queued with fresh attempts
    /// (after the cause is fixed, e.g. a malformed input line); committed shards stay. Null when no job has that id.</summary>
    public Task<EmbeddingJobStatus?> RetryAsync(string jobId) => Retry(() => _client.GetGrain<IEmbeddingJobGrain>(CheckId(jobId)).RetryAsync());

    /// <summary>The ids of the running jobs.</summary>
    public Task<string[]> ListRunningAsync() => Retry(() => _client.GetGrain<IJobRegistryGrain>(IJobRegistryGrain.Key).ActiveAsync());

    /// <summary>How long a call keeps retrying while the silo hosting a job's coordinator is being replaced (a killed
    /// silo is declared dead after a few missed probes; the coordinator then re-activates from storage elsewhere).</summary>
    internal static TimeSpan FailoverTimeout { get; set; } = TimeSpan.FromSeconds(90);

    private static async Task<T> Retry<T>(Func<Task<T>> call)
    {
        var deadline = DateTime.UtcNow + FailoverTimeout;
        while (true)
        {
            try
            {
                return await call();
            }
            catch (Exception e) when (IsTransient(e) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250));
            }
        }
    }

    /// <summary>Failures a cluster heals from by itself: a message to a silo that died, a timeout while membership
    /// catches up.</summary>
    internal static bool IsTransient(Exception e) =>
        e is OrleansMessageRejectionException or SiloUnavailableException or TimeoutException or ConnectionFailedException ||
        (e.InnerException is { } inner && IsTransient(inner));

    /// <summary>Polls the job's status every <paramref name="pollInterval"/> (default 1 s), reporting each, until it
    /// finishes; returns the final status.</summary>
    public async Task<EmbeddingJobStatus> WaitAsync(string jobId, IProgress<EmbeddingJobStatus>? progress = null, TimeSpan? pollInterval = null,
        CancellationToken cancellationToken = default)
    {
        var every = pollInterval ?? TimeSpan.FromSeconds(1);
        while (true)
        {
            EmbeddingJobStatus? status;
            try
            {
                status = await GetStatusAsync(jobId);
            }
            catch (Exception e) when (IsTransient(e))
            {
                // the coordinator is still moving to another silo: ask again
                await Task.Delay(every, cancellationToken);
                continue;
            }
            if (status is null) throw new UllmeException($"no job '{jobId}' on this cluster.");
            progress?.Report(status);
            if (status.IsFinished) return status;
            await Task.Delay(every, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _host.StopAsync(TimeSpan.FromSeconds(5));
        }
        finally
        {
            _host.Dispose();
        }
    }

    private static string NewJobId() =>
        string.Create(CultureInfo.InvariantCulture, $"job-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}");

    private static bool IsJobId(string id) => id.Length is > 0 and <= 64 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_');

    internal static string CheckId(string jobId) =>
        IsJobId(jobId) ? jobId : throw new UllmeException($"job id '{jobId}': use letters, digits, '-' and '_' (at most 64).");
}

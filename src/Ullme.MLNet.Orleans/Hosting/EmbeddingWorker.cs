using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Orleans.Corpus;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>The model replica a silo hosts: loaded once, used by its worker for every item of every job.</summary>
internal sealed class SiloModel(UllmeModel model, string backend)
{
    public UllmeModel Model { get; } = model;
    public EmbeddingEngine Engine { get; } = new(model);
    public string Backend { get; } = backend;
}

/// <summary>
/// A silo's pull worker: it asks the running jobs for a work item, embeds it with the silo's model, writes the shard
/// under its staging name and has the job grain commit it. While it works it renews the lease every third of the lease
/// time; when the lease is lost (expired and handed on, job cancelled) it drops the item. When the silo stops it gives
/// its lease back so another silo takes the item at once. One item at a time: the model already uses every thread it
/// was given (<c>--threads</c>).
/// </summary>
internal sealed partial class EmbeddingWorker(IGrainFactory grains, SiloModel model, WorkerIdentity identity, ILogger<EmbeddingWorker> logger) : BackgroundService
{
    /// <summary>How long an idle worker waits before asking for work again.</summary>
    internal static TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    private WorkerInfo Info => new(identity.Name, model.Model.ModelId, model.Model.EmbeddingDimension, model.Backend);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        var registry = grains.GetGrain<IJobRegistryGrain>(IJobRegistryGrain.Key);
        while (!stoppingToken.IsCancellationRequested)
        {
            WorkLease? lease = null;
            try
            {
                foreach (string job in await registry.ActiveAsync())
                {
                    lease = await grains.GetGrain<IEmbeddingJobGrain>(job).LeaseAsync(Info);
                    if (lease is not null) break;
                }
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                // the coordinator is moving (its silo died) or the cluster is starting: ask again shortly
                LogPollFailed(e.GetType().Name, e.Message);
            }
            if (lease is null)
            {
                try
                {
                    await Task.Delay(PollInterval, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                continue;
            }
            await ProcessAsync(lease, stoppingToken);
        }
    }

    private async Task ProcessAsync(WorkLease lease, CancellationToken stoppingToken)
    {
        var job = grains.GetGrain<IEmbeddingJobGrain>(lease.JobId);
        var item = lease.Item;
        var spec = lease.Spec;
        string staging = JobPaths.StagingShard(spec.OutputDirectory, item.Index, lease.LeaseId);
        using var lost = new CancellationTokenSource();
        using var work = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, lost.Token);
        using var renewStop = new CancellationTokenSource();
        var renewal = RenewAsync(job, lease, lost, renewStop.Token);
        var clock = Stopwatch.StartNew();
        LogLeased(lease.JobId, item.Index, item.File, item.StartRow + 1, item.Rows, lease.Attempt);
        bool keepStaging = false;
        try
        {
            var rows = await Task.Run(() =>
            {
                item.CheckUnchanged();
                return CorpusReader.Read(item, spec.TextColumn, spec.IdColumn, work.Token);
            }, work.Token);
            var options = Options(spec);
            var result = await Task.Run(() => model.Engine.EmbedDetailed(rows.Select(r => r.Text).ToList(), options, null, work.Token), work.Token);
            Directory.CreateDirectory(JobPaths.Staging(spec.OutputDirectory));
            var metadata = new Dictionary<string, string>
            {
                ["ullme.job"] = lease.JobId,
                ["ullme.item"] = item.Index.ToString(CultureInfo.InvariantCulture),
                ["ullme.model"] = model.Model.ModelId,
                ["ullme.backend"] = model.Backend,
                ["ullme.input"] = item.File,
                ["ullme.start_row"] = item.StartRow.ToString(CultureInfo.InvariantCulture),
            };
            ShardFile.Write(staging, rows.Select(r => r.Id).ToList(), result.Embeddings, metadata);
            work.Token.ThrowIfCancellationRequested();
            var shard = new WorkResult(staging, rows.Count, ShardFile.Sha256(staging), new FileInfo(staging).Length, clock.Elapsed.TotalSeconds, model.Backend);
            renewStop.Cancel();
            await renewal;
            keepStaging = await CommitAsync(job, lease, shard, stoppingToken);
            if (keepStaging) LogCommitted(lease.JobId, item.Index, rows.Count, clock.Elapsed.TotalSeconds);
            else LogDuplicate(lease.JobId, item.Index);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // the silo is stopping: hand the item back at once rather than after the lease runs out
            try
            {
                await job.ReleaseAsync(item.Index, lease.LeaseId).WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
            }
            catch (Exception e)
            {
                LogReleaseFailed(lease.JobId, item.Index, e.Message);
            }
        }
        catch (OperationCanceledException) when (lost.IsCancellationRequested)
        {
            LogLeaseLost(lease.JobId, item.Index);
        }
        catch (Exception e)
        {
            string error = e is UllmeException ? e.Message : $"{e.GetType().Name}: {e.Message}";
            LogItemFailed(lease.JobId, item.Index, error);
            try
            {
                await job.FailAsync(item.Index, lease.LeaseId, error);
            }
            catch (Exception report)
            {
                LogReleaseFailed(lease.JobId, item.Index, report.Message);
            }
        }
        finally
        {
            renewStop.Cancel();
            try
            {
                await renewal;
            }
            catch (OperationCanceledException)
            {
            }
            if (!keepStaging) JobPaths.TryDelete(staging);
        }
    }

    /// <summary>Commits through the job grain, retrying while its silo is being replaced; false when another worker
    /// committed the item first (this shard is a duplicate; the grain deleted it).</summary>
    private async Task<bool> CommitAsync(IEmbeddingJobGrain job, WorkLease lease, WorkResult shard, CancellationToken stoppingToken)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(Math.Max(30, lease.Spec.LeaseSeconds * 2));
        while (true)
        {
            try
            {
                return await job.CompleteAsync(lease.Item.Index, lease.LeaseId, shard);
            }
            catch (Exception e) when (e is not InvalidOperationException and not ArgumentException && DateTime.UtcNow < deadline && !stoppingToken.IsCancellationRequested)
            {
                LogPollFailed(e.GetType().Name, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(500), CancellationToken.None);
            }
        }
    }

    private async Task RenewAsync(IEmbeddingJobGrain job, WorkLease lease, CancellationTokenSource lost, CancellationToken stop)
    {
        var every = TimeSpan.FromSeconds(lease.Spec.LeaseSeconds / 3);
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(every, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            try
            {
                if (!await job.RenewAsync(lease.Item.Index, lease.LeaseId))
                {
                    lost.Cancel();
                    return;
                }
            }
            catch (Exception e) when (!stop.IsCancellationRequested)
            {
                // the coordinator is moving: keep working, renew again next time
                LogPollFailed(e.GetType().Name, e.Message);
            }
        }
    }

    internal static EmbeddingOptions Options(EmbeddingJobSpec spec) => new()
    {
        Pooling = spec.Pooling is null ? null : OptionNames.Pooling.Parse(spec.Pooling, "EmbeddingJobSpec.Pooling"),
        Attention = spec.Attention is null ? null : OptionNames.Attention.Parse(spec.Attention, "EmbeddingJobSpec.Attention"),
        Instruction = spec.Instruction,
        MaxLength = spec.MaxLength,
        BatchSize = spec.BatchSize,
        Normalize = spec.Normalize,
        Dimensions = spec.Dimensions,
    };

    [LoggerMessage(Level = LogLevel.Debug, Message = "Asking for work failed ({Kind}: {Message}); trying again")]
    private partial void LogPollFailed(string kind, string message);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {Job}: item {Item} ({File}, rows from {Row}, {Rows} rows), attempt {Attempt}")]
    private partial void LogLeased(string job, int item, string file, long row, int rows, int attempt);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {Job}: item {Item} committed ({Rows} rows in {Seconds:F2} s)")]
    private partial void LogCommitted(string job, int item, int rows, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "Job {Job}: item {Item} was committed by another worker first; this copy is dropped")]
    private partial void LogDuplicate(string job, int item);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {Job}: item {Item} lost its lease (expired and handed to another worker, or the job was cancelled)")]
    private partial void LogLeaseLost(string job, int item);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {Job}: item {Item} failed: {Error}")]
    private partial void LogItemFailed(string job, int item, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Job {Job}: item {Item}: could not report to the coordinator ({Message}); its lease will expire")]
    private partial void LogReleaseFailed(string job, int item, string message);
}

/// <summary>The worker's name in leases and logs: host, silo port and process id.</summary>
internal sealed record WorkerIdentity(string Name);

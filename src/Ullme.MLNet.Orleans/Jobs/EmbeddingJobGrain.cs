using Microsoft.Extensions.Logging;
using Orleans.Concurrency;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>
/// The coordinator of one job. Every change of the ledger is written to grain storage before the call returns, so the
/// job survives the silo hosting this grain (it re-activates on another) and a restart of the whole cluster. A shard is
/// committed by renaming the worker's staging file to its final name, only while the item is not committed yet: a
/// second completion of the same item (a worker whose lease had expired) is refused and its file deleted, so every
/// row appears in the output once.
/// <para>
/// The grain is reentrant so that state writes are group commits: every call changes the ledger synchronously (no
/// await between its check and its change, so calls never see each other half-done), then waits for a write that
/// began after its change. While one write runs, the changes of every call that arrives meanwhile go out in the next
/// one, so the coordinator's rate is bounded by its call handling, not by one ledger write per call.
/// </para>
/// </summary>
[Reentrant]
internal sealed class EmbeddingJobGrain(
    [PersistentState("job", ClusterNames.Storage)] IPersistentState<JobLedger> state,
    IGrainFactory grains,
    ILogger<EmbeddingJobGrain> logger) : Grain, IEmbeddingJobGrain
{
    private JobLedger Ledger => state.State;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        Ledger.Reactivated(DateTime.UtcNow);
        return Task.CompletedTask;
    }

    public async Task<EmbeddingJobStatus> StartAsync(EmbeddingJobSpec spec, IReadOnlyList<WorkItem> items)
    {
        if (!Ledger.Started)
        {
            Ledger.Start(this.GetPrimaryKeyString(), spec, items, DateTime.UtcNow);
            Directory.CreateDirectory(JobPaths.Staging(spec.OutputDirectory));
            if (Ledger.Phase == JobPhase.Completed) WriteManifest();
            await PersistAsync();
            if (Ledger.Phase == JobPhase.Running) await grains.GetGrain<IJobRegistryGrain>(IJobRegistryGrain.Key).AddAsync(Ledger.JobId);
            logger.LogInformation("Job {Job}: {Items} work items, {Rows} rows → {Output}", Ledger.JobId, items.Count, items.Sum(i => (long)i.Rows), spec.OutputDirectory);
        }
        return Ledger.Status(DateTime.UtcNow);
    }

    public Task<EmbeddingJobStatus?> GetStatusAsync() => Task.FromResult(Ledger.Started ? Ledger.Status(DateTime.UtcNow) : null);

    public async Task<EmbeddingJobStatus?> CancelAsync()
    {
        if (!Ledger.Started) return null;
        if (Ledger.Cancel(DateTime.UtcNow)) await Finished();
        return Ledger.Status(DateTime.UtcNow);
    }

    public async Task<EmbeddingJobStatus?> RetryAsync()
    {
        if (!Ledger.Started) return null;
        if (Ledger.Retry())
        {
            await PersistAsync();
            await grains.GetGrain<IJobRegistryGrain>(IJobRegistryGrain.Key).AddAsync(Ledger.JobId);
            logger.LogInformation("Job {Job}: running again ({Items} items left)", Ledger.JobId, Ledger.Records.Count(r => r.Status != ItemStatus.Done));
        }
        return Ledger.Status(DateTime.UtcNow);
    }

    public async Task<WorkLease?> LeaseAsync(WorkerInfo worker)
    {
        if (!Ledger.Started) return null;
        var now = DateTime.UtcNow;
        bool changed = Ledger.ExpireLeases(now);
        if (Ledger.RejectsModel(worker))
            logger.LogWarning("Job {Job} runs model {Model} ({Dimension} dimensions); worker {Worker} hosts {Other} ({OtherDimension}): no work for it",
                Ledger.JobId, Ledger.ModelId, Ledger.Dimension, worker.Worker, worker.ModelId, worker.Dimension);
        changed |= RecoverCommittedShards();
        var lease = Ledger.Lease(worker, now, Guid.NewGuid().ToString("N"));
        if (lease is not null || changed)
        {
            await PersistAsync();
            if (Ledger.Phase != JobPhase.Running) await Finished();
        }
        return lease;
    }

    public Task<bool> RenewAsync(int item, string leaseId) => Task.FromResult(Ledger.Renew(item, leaseId, DateTime.UtcNow));

    public async Task<bool> CompleteAsync(int item, string leaseId, WorkResult result)
    {
        var spec = Ledger.Spec ?? throw new InvalidOperationException($"job '{this.GetPrimaryKeyString()}' was never started");
        string staging = JobPaths.StagingShard(spec.OutputDirectory, item, leaseId);
        if (!PathGuard.Same(staging, result.StagingPath))
            throw new ArgumentException($"the shard of item {item} must be staged as '{staging}', not '{result.StagingPath}'", nameof(result));
        if (!Ledger.CanCommit(item))
        {
            JobPaths.TryDelete(staging);
            if (Ledger.Phase == JobPhase.Completed) JobPaths.TryDeleteEmpty(JobPaths.Staging(spec.OutputDirectory));
            return false;
        }
        var info = new FileInfo(staging);
        if (!info.Exists || info.Length != result.Bytes)
            throw new InvalidOperationException($"the staged shard '{staging}' is missing or not {result.Bytes} bytes long");
        if (result.Rows != Ledger.Items[item].Rows)
            throw new InvalidOperationException($"item {item} has {Ledger.Items[item].Rows} rows; the shard has {result.Rows}");
        string final = JobPaths.Shard(spec.OutputDirectory, item);
        File.Move(staging, final, overwrite: true);   // a shard left by a commit whose state write was lost is the same item's
        Ledger.Committed(item, Path.GetFileName(final), result, DateTime.UtcNow);
        if (Ledger.Phase == JobPhase.Completed) WriteManifest();
        await PersistAsync();
        if (Ledger.Phase != JobPhase.Running) await Finished();
        return true;
    }

    public async Task FailAsync(int item, string leaseId, string error)
    {
        if (!Ledger.Fail(item, leaseId, error, DateTime.UtcNow)) return;
        logger.LogWarning("Job {Job}, item {Item} ({File}, row {Row}): {Error}", Ledger.JobId, item, Ledger.Items[item].File, Ledger.Items[item].StartRow + 1, error);
        await PersistAsync();
        if (Ledger.Phase != JobPhase.Running) await Finished();
    }

    public async Task ReleaseAsync(int item, string leaseId)
    {
        if (Ledger.Release(item, leaseId)) await PersistAsync();
    }

    /// <summary>
    /// A shard renamed into place whose state write was lost (the coordinator's silo died between the two) is this
    /// job's committed item all the same: before an item is leased, a final shard of this job and item with the
    /// item's row count is taken as its commit instead of embedding it again. Checked once per item and activation.
    /// </summary>
    private bool RecoverCommittedShards()
    {
        if (_recoveryChecked) return false;
        _recoveryChecked = true;
        bool changed = false;
        var spec = Ledger.Spec!;
        for (int i = 0; i < Ledger.Records.Count; i++)
        {
            if (!Ledger.CanCommit(i)) continue;
            string final = JobPaths.Shard(spec.OutputDirectory, i);
            if (!File.Exists(final)) continue;
            try
            {
                var (ids, _, metadata) = Corpus.ShardFile.Read(final);
                if (!metadata.TryGetValue("ullme.job", out var job) || job != Ledger.JobId ||
                    !metadata.TryGetValue("ullme.item", out var item) || item != i.ToString(System.Globalization.CultureInfo.InvariantCulture) ||
                    ids.Length != Ledger.Items[i].Rows)
                    continue;
                var info = new FileInfo(final);
                metadata.TryGetValue("ullme.backend", out var backend);
                Ledger.Committed(i, Path.GetFileName(final), new WorkResult(final, ids.Length, Corpus.ShardFile.Sha256(final), info.Length, 0, backend ?? ""), DateTime.UtcNow);
                logger.LogInformation("Job {Job}: item {Item} recovered from its committed shard {Shard}", Ledger.JobId, i, final);
                changed = true;
            }
            catch (Exception e)
            {
                logger.LogWarning("Job {Job}: {Shard} is not a readable shard ({Error}); item {Item} is embedded again", Ledger.JobId, final, e.Message, i);
            }
        }
        if (changed && Ledger.Phase == JobPhase.Completed) WriteManifest();
        return changed;
    }

    private bool _recoveryChecked;

    private Task? _writer;
    private bool _dirty;
    private TaskCompletionSource? _nextWrite;

    /// <summary>Returns once a state write that started after the caller's change has completed (see the class notes).</summary>
    private Task PersistAsync()
    {
        _dirty = true;
        var wait = _nextWrite ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _writer ??= WriteLoopAsync();
        return wait.Task;
    }

    private async Task WriteLoopAsync()
    {
        await Task.Yield();   // let the calls queued behind this one add their changes to the first write
        while (_dirty)
        {
            _dirty = false;
            var done = _nextWrite!;
            _nextWrite = null;
            try
            {
                await state.WriteStateAsync();
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }
        _writer = null;
    }

    private async Task Finished()
    {
        if (Ledger.Phase != JobPhase.Completed) JobPaths.TryDeleteEmpty(JobPaths.Staging(Ledger.Spec!.OutputDirectory));
        await PersistAsync();
        await grains.GetGrain<IJobRegistryGrain>(IJobRegistryGrain.Key).RemoveAsync(Ledger.JobId);
        logger.LogInformation("Job {Job}: {Phase}", Ledger.JobId, Ledger.Phase);
    }

    private void WriteManifest()
    {
        var spec = Ledger.Spec!;
        JobManifest.Write(spec.OutputDirectory, Ledger);
        // Every item is committed: what is left in staging is the partial or duplicate output of workers that were
        // killed or lost their lease (a late duplicate's own commit call deletes its file; this catches the rest).
        try
        {
            string staging = JobPaths.Staging(spec.OutputDirectory);
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            logger.LogWarning("Job {Job}: could not remove {Staging}: {Error}", Ledger.JobId, JobPaths.Staging(spec.OutputDirectory), e.Message);
        }
    }

}

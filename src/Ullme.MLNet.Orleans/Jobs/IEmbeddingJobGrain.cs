namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>The coordinator of one job (key: the job id): it holds the work items, leases them to workers, commits
/// their shards exactly once and writes the manifest. Its state is persisted after every change, so a job survives
/// the silo that hosts it and a restart of the whole cluster.</summary>
internal interface IEmbeddingJobGrain : IGrainWithStringKey
{
    /// <summary>Starts the job with its planned items; a second call with the same id is a no-op returning the status.</summary>
    Task<EmbeddingJobStatus> StartAsync(EmbeddingJobSpec spec, IReadOnlyList<WorkItem> items);

    Task<EmbeddingJobStatus?> GetStatusAsync();

    Task<EmbeddingJobStatus?> CancelAsync();

    /// <summary>Runs a failed or cancelled job again (its unfinished items, with fresh attempts); null when no such job.</summary>
    Task<EmbeddingJobStatus?> RetryAsync();

    /// <summary>The next item for <paramref name="worker"/>, or null when none is free (all leased or done, or the
    /// worker's model is not the job's).</summary>
    Task<WorkLease?> LeaseAsync(WorkerInfo worker);

    /// <summary>Extends a lease; false when it is no longer the holder's (expired and re-leased, job cancelled).</summary>
    Task<bool> RenewAsync(int item, string leaseId);

    /// <summary>Commits the item's shard (rename from its staging name) unless the item is already committed; true when
    /// this call committed it.</summary>
    Task<bool> CompleteAsync(int item, string leaseId, WorkResult result);

    /// <summary>Reports a failed attempt; the item goes back to the queue until its attempts run out.</summary>
    Task FailAsync(int item, string leaseId, string error);

    /// <summary>Gives a lease back (the worker is shutting down) so another worker takes it at once.</summary>
    Task ReleaseAsync(int item, string leaseId);
}

/// <summary>The cluster's list of running jobs (one grain, key <see cref="Key"/>): workers poll it for work.</summary>
internal interface IJobRegistryGrain : IGrainWithStringKey
{
    const string Key = "jobs";

    Task AddAsync(string jobId);

    Task RemoveAsync(string jobId);

    Task<string[]> ActiveAsync();
}

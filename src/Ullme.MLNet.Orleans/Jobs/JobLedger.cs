namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>Where one work item is.</summary>
internal enum ItemStatus
{
    Pending,
    Leased,
    Done,
    Failed,
}

/// <summary>The persisted record of one work item.</summary>
internal sealed class ItemRecord
{
    public ItemStatus Status { get; set; }
    public string? LeaseId { get; set; }
    public string? Worker { get; set; }
    public DateTime LeaseExpiresUtc { get; set; }
    public int Attempts { get; set; }
    public string? Shard { get; set; }
    public string? Sha256 { get; set; }
    public long Bytes { get; set; }
    public double Seconds { get; set; }
    public string? Backend { get; set; }
    public string? Error { get; set; }
}

/// <summary>
/// A job's whole persisted state (what the job grain writes to its grain storage after every change) and the rules
/// that change it: leasing, renewal, expiry, completion, failure, release, cancellation. Pure (the clock is passed in),
/// so the exactly-once rules are tested without a cluster; the grain adds the storage writes and the file renames.
/// </summary>
internal sealed class JobLedger
{
    public string JobId { get; set; } = "";
    public EmbeddingJobSpec? Spec { get; set; }
    public List<WorkItem> Items { get; set; } = [];
    public List<ItemRecord> Records { get; set; } = [];
    public JobPhase Phase { get; set; }
    public string? ModelId { get; set; }
    public int Dimension { get; set; }
    public DateTime SubmittedUtc { get; set; }
    public DateTime? FirstLeaseUtc { get; set; }
    public DateTime? FinishedUtc { get; set; }
    public int Retries { get; set; }
    /// <summary>Rows committed after the first lease of this activation's clock started, for the rate (not persisted
    /// meaningfully across restarts: the rate restarts with the coordinator).</summary>
    public long RowsDone { get; set; }

    public bool Started => Spec is not null;

    public void Start(string jobId, EmbeddingJobSpec spec, IReadOnlyList<WorkItem> items, DateTime now)
    {
        for (int i = 0; i < items.Count; i++)
            if (items[i].Index != i) throw new ArgumentException($"work item {i} has index {items[i].Index}; items must be numbered 0..{items.Count - 1}", nameof(items));
        JobId = jobId;
        Spec = spec;
        Items = [.. items];
        Records = items.Select(_ => new ItemRecord()).ToList();
        Phase = items.Count == 0 ? JobPhase.Completed : JobPhase.Running;
        SubmittedUtc = now;
        FinishedUtc = items.Count == 0 ? now : null;
    }

    /// <summary>After a restart of the coordinator: leases it handed out may still be held by live workers, so they
    /// keep their lease for one more lease time (a worker that renews keeps it; one that died loses it then).</summary>
    public void Reactivated(DateTime now)
    {
        if (Spec is null) return;
        foreach (var r in Records)
            if (r.Status == ItemStatus.Leased) r.LeaseExpiresUtc = now + TimeSpan.FromSeconds(Spec.LeaseSeconds);
    }

    /// <summary>Returns leases whose time ran out to the queue (or fails the item when its attempts are spent); true
    /// when anything changed.</summary>
    public bool ExpireLeases(DateTime now)
    {
        bool changed = false;
        for (int i = 0; i < Records.Count; i++)
        {
            var r = Records[i];
            if (r.Status != ItemStatus.Leased || r.LeaseExpiresUtc > now) continue;
            GiveBack(r, $"the lease of worker '{r.Worker}' expired (not renewed within {Spec!.LeaseSeconds:0.###} s)");
            changed = true;
        }
        changed |= FinishIfDone(now);
        return changed;
    }

    /// <summary>The next item for <paramref name="worker"/>: the first pending one, leased until now + lease time.</summary>
    public WorkLease? Lease(WorkerInfo worker, DateTime now, string leaseId)
    {
        if (Spec is null || Phase != JobPhase.Running) return null;
        if (ModelId is not null && (ModelId != worker.ModelId || Dimension != worker.Dimension)) return null;
        int index = Records.FindIndex(r => r.Status == ItemStatus.Pending);
        if (index < 0) return null;
        ModelId ??= worker.ModelId;
        if (Dimension == 0) Dimension = worker.Dimension;
        FirstLeaseUtc ??= now;
        var r = Records[index];
        if (r.Attempts > 0) Retries++;
        r.Status = ItemStatus.Leased;
        r.LeaseId = leaseId;
        r.Worker = worker.Worker;
        r.Attempts++;
        r.LeaseExpiresUtc = now + TimeSpan.FromSeconds(Spec.LeaseSeconds);
        return new WorkLease(JobId, leaseId, Items[index], Spec, r.Attempts);
    }

    /// <summary>True when the models differ (the worker gets no lease of this job).</summary>
    public bool RejectsModel(WorkerInfo worker) => ModelId is not null && (ModelId != worker.ModelId || Dimension != worker.Dimension);

    public bool Renew(int item, string leaseId, DateTime now)
    {
        if (!Holds(item, leaseId) || Phase != JobPhase.Running) return false;
        Records[item].LeaseExpiresUtc = now + TimeSpan.FromSeconds(Spec!.LeaseSeconds);
        return true;
    }

    /// <summary>Whether a completion of <paramref name="item"/> should be committed: the item is not committed yet
    /// and the job still runs. The holder of an expired lease may still commit first (its work is as good as the new
    /// holder's; the one that commits second is told so and deletes its shard).</summary>
    public bool CanCommit(int item) =>
        Phase == JobPhase.Running && item >= 0 && item < Records.Count && Records[item].Status is ItemStatus.Pending or ItemStatus.Leased;

    public void Committed(int item, string shard, WorkResult result, DateTime now)
    {
        var r = Records[item];
        r.Status = ItemStatus.Done;
        r.Shard = shard;
        r.Sha256 = result.Sha256;
        r.Bytes = result.Bytes;
        r.Seconds = result.Seconds;
        r.Backend = result.Backend;
        r.LeaseId = null;
        r.Error = null;
        RowsDone += Items[item].Rows;
        FinishIfDone(now);
    }

    /// <summary>A failed attempt: the item goes back to the queue, or fails for good when its attempts are spent.</summary>
    public bool Fail(int item, string leaseId, string error, DateTime now)
    {
        if (!Holds(item, leaseId)) return false;
        GiveBack(Records[item], error);
        FinishIfDone(now);
        return true;
    }

    /// <summary>A lease given back (the worker is stopping): the item is free at once and the attempt is not counted.</summary>
    public bool Release(int item, string leaseId)
    {
        if (!Holds(item, leaseId)) return false;
        var r = Records[item];
        r.Status = ItemStatus.Pending;
        r.LeaseId = null;
        r.Worker = null;
        r.Attempts--;
        return true;
    }

    /// <summary>Runs a failed or cancelled job again: its failed and unfinished items go back to the queue with fresh
    /// attempts; committed items stay committed. False when the job is running or completed.</summary>
    public bool Retry()
    {
        if (Phase is not (JobPhase.Failed or JobPhase.Canceled)) return false;
        foreach (var r in Records)
        {
            if (r.Status == ItemStatus.Done) continue;
            r.Status = ItemStatus.Pending;
            r.LeaseId = null;
            r.Attempts = 0;
        }
        Phase = JobPhase.Running;
        FinishedUtc = null;
        return true;
    }

    public bool Cancel(DateTime now)
    {
        if (Phase != JobPhase.Running) return false;
        Phase = JobPhase.Canceled;
        FinishedUtc = now;
        foreach (var r in Records)
            if (r.Status == ItemStatus.Leased)
            {
                r.Status = ItemStatus.Pending;
                r.LeaseId = null;
            }
        return true;
    }

    public EmbeddingJobStatus Status(DateTime now)
    {
        long rowsTotal = Items.Sum(i => (long)i.Rows);
        long rowsDone = 0;
        int itemsDone = 0, leased = 0;
        var failed = new List<FailedItem>();
        for (int i = 0; i < Records.Count; i++)
        {
            switch (Records[i].Status)
            {
                case ItemStatus.Done: itemsDone++; rowsDone += Items[i].Rows; break;
                case ItemStatus.Leased: leased++; break;
                case ItemStatus.Failed: failed.Add(new FailedItem(i, Items[i].File, Items[i].StartRow, Records[i].Attempts, Records[i].Error ?? "")); break;
            }
        }
        var end = FinishedUtc ?? now;
        double elapsed = FirstLeaseUtc is { } first ? (end - first).TotalSeconds : 0;
        double rate = elapsed > 0 ? RowsDone / elapsed : 0;
        long remaining = rowsTotal - rowsDone - failed.Sum(f => (long)Items[f.Index].Rows);
        TimeSpan? eta = Phase == JobPhase.Running && rate > 0 ? TimeSpan.FromSeconds(remaining / rate) : null;
        return new EmbeddingJobStatus
        {
            JobId = JobId,
            Phase = Phase,
            RowsDone = rowsDone,
            RowsTotal = rowsTotal,
            ItemsDone = itemsDone,
            ItemsTotal = Items.Count,
            ItemsLeased = leased,
            RowsPerSecond = rate,
            Eta = eta,
            FailedItems = failed,
            ModelId = ModelId,
            OutputDirectory = Spec?.OutputDirectory ?? "",
            SubmittedUtc = SubmittedUtc,
            FinishedUtc = FinishedUtc,
            Retries = Retries,
        };
    }

    private bool Holds(int item, string leaseId) =>
        item >= 0 && item < Records.Count && Records[item].Status == ItemStatus.Leased && Records[item].LeaseId == leaseId;

    private void GiveBack(ItemRecord r, string error)
    {
        r.Error = error;
        r.LeaseId = null;
        r.Status = r.Attempts >= Spec!.MaxAttempts ? ItemStatus.Failed : ItemStatus.Pending;
    }

    /// <summary>Moves the job to Completed (every item done) or Failed (every item done or failed, some failed).</summary>
    private bool FinishIfDone(DateTime now)
    {
        if (Phase != JobPhase.Running) return false;
        if (Records.Any(r => r.Status is ItemStatus.Pending or ItemStatus.Leased)) return false;
        Phase = Records.All(r => r.Status == ItemStatus.Done) ? JobPhase.Completed : JobPhase.Failed;
        FinishedUtc = now;
        return true;
    }
}

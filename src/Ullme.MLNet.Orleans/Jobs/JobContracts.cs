namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>What a job embeds and how: the inputs (already planned into work items by the submitter), the output folder
/// and the embedding options every silo applies. Paths must be reachable from every silo (a shared file system).</summary>
[GenerateSerializer, Immutable]
public sealed record EmbeddingJobSpec
{
    [Id(0)] public required string OutputDirectory { get; init; }
    [Id(1)] public required IReadOnlyList<string> Inputs { get; init; }
    [Id(2)] public string TextColumn { get; init; } = "text";
    [Id(3)] public string? IdColumn { get; init; }
    [Id(4)] public int ShardRows { get; init; } = 1000;
    [Id(5)] public string? Pooling { get; init; }
    [Id(6)] public string? Attention { get; init; }
    [Id(7)] public string? Instruction { get; init; }
    [Id(8)] public int? MaxLength { get; init; }
    [Id(9)] public int BatchSize { get; init; } = 32;
    [Id(10)] public bool Normalize { get; init; } = true;
    [Id(11)] public int? Dimensions { get; init; }
    /// <summary>A lease not renewed for this long is handed to another silo (workers renew every third of it).</summary>
    [Id(12)] public double LeaseSeconds { get; init; } = 60;
    /// <summary>Attempts of one work item before it is reported failed (the job goes on with the others).</summary>
    [Id(13)] public int MaxAttempts { get; init; } = 3;
}

/// <summary>One work item: a row range of one input file. <see cref="StartRow"/> is the 0-based data row (header and
/// skipped blank lines not counted); <see cref="ByteOffset"/> is where that row starts in a .txt/JSONL/CSV/TSV file
/// (so a worker seeks instead of re-reading the file) and <see cref="StartLine"/> its 1-based line (for errors);
/// Parquet items use <see cref="StartRow"/> only. Rows without an id column get the id
/// <c>{IdPrefix}:{data row + 1}</c>.</summary>
[GenerateSerializer, Immutable]
internal sealed record WorkItem(
    [property: Id(0)] int Index,
    [property: Id(1)] string File,
    [property: Id(2)] long StartRow,
    [property: Id(3)] int Rows,
    [property: Id(4)] long ByteOffset,
    [property: Id(5)] long StartLine,
    [property: Id(6)] string IdPrefix)
{
    /// <summary>The input's length and last write time when the job was planned (0 / default: not recorded); a worker
    /// refuses an item whose file changed since, because its offsets and row numbers no longer hold.</summary>
    [Id(7)] public long FileLength { get; init; }

    /// <inheritdoc cref="FileLength"/>
    [Id(8)] public DateTime FileWriteUtc { get; init; }

    /// <summary>Throws when <see cref="File"/> is not the file that was planned.</summary>
    public void CheckUnchanged()
    {
        if (FileLength == 0) return;
        var info = new FileInfo(File);
        if (!info.Exists) throw new UllmeException($"'{File}' no longer exists (the job was planned on it).");
        if (info.Length != FileLength || info.LastWriteTimeUtc != FileWriteUtc)
            throw new UllmeException($"'{File}' changed since the job was planned ({FileLength} bytes at {FileWriteUtc:O}, now {info.Length} at {info.LastWriteTimeUtc:O}); " +
                "its row offsets no longer hold. Submit a new job for the changed input.");
    }
}

/// <summary>A work item leased to one worker until it renews, completes, fails or releases it.</summary>
[GenerateSerializer, Immutable]
internal sealed record WorkLease(
    [property: Id(0)] string JobId,
    [property: Id(1)] string LeaseId,
    [property: Id(2)] WorkItem Item,
    [property: Id(3)] EmbeddingJobSpec Spec,
    [property: Id(4)] int Attempt);

/// <summary>Who asks for work: a silo's worker and the model it hosts (every item of a job is embedded by one model).</summary>
[GenerateSerializer, Immutable]
internal sealed record WorkerInfo(
    [property: Id(0)] string Worker,
    [property: Id(1)] string ModelId,
    [property: Id(2)] int Dimension,
    [property: Id(3)] string Backend);

/// <summary>A finished work item: the shard written under a staging name, which the job grain commits by rename.</summary>
[GenerateSerializer, Immutable]
internal sealed record WorkResult(
    [property: Id(0)] string StagingPath,
    [property: Id(1)] int Rows,
    [property: Id(2)] string Sha256,
    [property: Id(3)] long Bytes,
    [property: Id(4)] double Seconds,
    [property: Id(5)] string Backend);

/// <summary>Where a job is.</summary>
public enum JobPhase
{
    /// <summary>Work items are being embedded.</summary>
    Running,
    /// <summary>Every item is committed and manifest.json is written.</summary>
    Completed,
    /// <summary>Some items failed <see cref="EmbeddingJobSpec.MaxAttempts"/> times; the others are committed; no manifest.</summary>
    Failed,
    /// <summary>Cancelled: no item is leased any more; committed shards stay; no manifest.</summary>
    Canceled,
}

/// <summary>A failed work item and its last error.</summary>
[GenerateSerializer, Immutable]
public sealed record FailedItem([property: Id(0)] int Index, [property: Id(1)] string File, [property: Id(2)] long StartRow,
    [property: Id(3)] int Attempts, [property: Id(4)] string Error);

/// <summary>A job's progress: rows and items done of the total, the rate since the first lease, the ETA at that rate.</summary>
[GenerateSerializer, Immutable]
public sealed record EmbeddingJobStatus
{
    [Id(0)] public required string JobId { get; init; }
    [Id(1)] public JobPhase Phase { get; init; }
    [Id(2)] public long RowsDone { get; init; }
    [Id(3)] public long RowsTotal { get; init; }
    [Id(4)] public int ItemsDone { get; init; }
    [Id(5)] public int ItemsTotal { get; init; }
    [Id(6)] public int ItemsLeased { get; init; }
    [Id(7)] public double RowsPerSecond { get; init; }
    [Id(8)] public TimeSpan? Eta { get; init; }
    [Id(9)] public IReadOnlyList<FailedItem> FailedItems { get; init; } = [];
    [Id(10)] public string? ModelId { get; init; }
    [Id(11)] public string OutputDirectory { get; init; } = "";
    [Id(12)] public DateTime SubmittedUtc { get; init; }
    [Id(13)] public DateTime? FinishedUtc { get; init; }
    /// <summary>Work item attempts beyond the first (leases that expired, were released or failed).</summary>
    [Id(14)] public int Retries { get; init; }

    /// <summary>True once the job will not change any more.</summary>
    public bool IsFinished => Phase != JobPhase.Running;
}

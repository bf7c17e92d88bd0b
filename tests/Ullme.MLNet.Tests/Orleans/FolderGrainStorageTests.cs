using Orleans.Runtime;
using Orleans.Storage;
using Ullme.MLNet.Orleans.Hosting;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>The folder grain storage of localhost clusters: state round-trips, ETags stop a stale writer.</summary>
public sealed class FolderGrainStorageTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-grains-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed class FakeState<T> : IGrainState<T>
    {
        [System.Diagnostics.CodeAnalysis.AllowNull] public T State { get; set; } = default!;
        public string? ETag { get; set; }
        public bool RecordExists { get; set; }
    }

    [Fact]
    public async Task TheLedger_RoundTrips_AndAStaleETagIsRefused()
    {
        var storage = new FolderGrainStorage(_dir);
        var id = GrainId.Create("job", "job-1");
        var ledger = new JobLedger();
        ledger.Start("job-1", new EmbeddingJobSpec { Inputs = ["/in/a.csv"], OutputDirectory = "/out", IdColumn = "id", Dimensions = 64 },
            [new WorkItem(0, "/in/a.csv", 0, 5, 17, 2, "a.csv")], DateTime.UtcNow);
        ledger.Lease(new WorkerInfo("w", "m", 384, "onnx"), DateTime.UtcNow, "lease1");

        var first = new FakeState<JobLedger> { State = ledger };
        await storage.WriteStateAsync("job", id, first);
        Assert.NotNull(first.ETag);

        var read = new FakeState<JobLedger> { State = new JobLedger() };
        await storage.ReadStateAsync("job", id, read);
        Assert.True(read.RecordExists);
        Assert.Equal(first.ETag, read.ETag);
        Assert.Equal("job-1", read.State.JobId);
        Assert.Equal(ledger.Items, read.State.Items);
        Assert.Equal("id", read.State.Spec!.IdColumn);
        Assert.Equal(64, read.State.Spec.Dimensions);
        Assert.Equal(ItemStatus.Leased, read.State.Records[0].Status);
        Assert.Equal("lease1", read.State.Records[0].LeaseId);
        Assert.Equal("m", read.State.ModelId);

        await storage.WriteStateAsync("job", id, read);                 // the newer activation writes
        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync("job", id, first));   // the stale one may not

        var missing = new FakeState<JobLedger> { State = new JobLedger() };
        await storage.ReadStateAsync("job", GrainId.Create("job", "other"), missing);
        Assert.False(missing.RecordExists);
    }
}

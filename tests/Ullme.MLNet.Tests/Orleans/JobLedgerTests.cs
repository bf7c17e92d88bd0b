using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>The exactly-once rules of the job coordinator, without a cluster: leases, renewal, expiry, completion,
/// failure, release, cancellation and the status they add up to.</summary>
public sealed class JobLedgerTests
{
    private static readonly DateTime T0 = new(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
    private static readonly WorkerInfo A = new("a", "model-x", 8, "torch");
    private static readonly WorkerInfo B = new("b", "model-x", 8, "torch");

    private static JobLedger Started(int items, double leaseSeconds = 10, int maxAttempts = 3)
    {
        var spec = new EmbeddingJobSpec { Inputs = ["/in/a.txt"], OutputDirectory = "/out", LeaseSeconds = leaseSeconds, MaxAttempts = maxAttempts };
        var ledger = new JobLedger();
        ledger.Start("job-1", spec, Enumerable.Range(0, items).Select(i => new WorkItem(i, "/in/a.txt", i * 10L, 10, i * 100L, i * 10L + 1, "a.txt")).ToList(), T0);
        return ledger;
    }

    private static WorkResult Result(WorkLease l) => new($"/out/_staging/part-{l.Item.Index:D5}.{l.LeaseId}.parquet", l.Item.Rows, "abc", 123, 1.5, "torch");

    [Fact]
    public void Items_AreLeasedInOrder_EachToOneWorker_UntilNoneIsFree()
    {
        var ledger = Started(2);
        var l0 = ledger.Lease(A, T0, "l0")!;
        var l1 = ledger.Lease(B, T0, "l1")!;
        Assert.Equal([0, 1], new[] { l0.Item.Index, l1.Item.Index });
        Assert.Null(ledger.Lease(A, T0, "l2"));
        Assert.Equal(2, ledger.Status(T0).ItemsLeased);
    }

    [Fact]
    public void AnExpiredLease_GoesToAnotherWorker_AndCountsAsARetry()
    {
        var ledger = Started(1, leaseSeconds: 10);
        var first = ledger.Lease(A, T0, "l0")!;
        Assert.Null(ledger.Lease(B, T0.AddSeconds(9), "l1"));
        Assert.True(ledger.ExpireLeases(T0.AddSeconds(10.5)));
        var second = ledger.Lease(B, T0.AddSeconds(10.5), "l1")!;
        Assert.Equal(first.Item, second.Item);
        Assert.Equal(2, second.Attempt);
        Assert.Equal(1, ledger.Status(T0.AddSeconds(11)).Retries);
        Assert.False(ledger.Renew(0, "l0", T0.AddSeconds(11)));   // the first holder lost it
        Assert.True(ledger.Renew(0, "l1", T0.AddSeconds(11)));
    }

    [Fact]
    public void RenewingKeepsTheLease()
    {
        var ledger = Started(1, leaseSeconds: 10);
        ledger.Lease(A, T0, "l0");
        Assert.True(ledger.Renew(0, "l0", T0.AddSeconds(8)));
        Assert.False(ledger.ExpireLeases(T0.AddSeconds(15)));   // 8 + 10 = 18 > 15
        Assert.True(ledger.ExpireLeases(T0.AddSeconds(18.1)));
    }

    [Fact]
    public void AnItemIsCommittedOnce_ASecondCompletionIsRefused()
    {
        var ledger = Started(2);
        var first = ledger.Lease(A, T0, "l0")!;
        ledger.ExpireLeases(T0.AddSeconds(11));
        var second = ledger.Lease(B, T0.AddSeconds(11), "l1")!;
        Assert.Equal(0, second.Item.Index);
        Assert.True(ledger.CanCommit(0));
        ledger.Committed(0, "part-00000.parquet", Result(first), T0.AddSeconds(12));   // the late holder wins the race
        Assert.False(ledger.CanCommit(0));                                               // the second is refused
        Assert.False(ledger.Renew(0, "l1", T0.AddSeconds(12)));
        var s = ledger.Status(T0.AddSeconds(12));
        Assert.Equal(1, s.ItemsDone);
        Assert.Equal(10, s.RowsDone);
        Assert.Equal(JobPhase.Running, s.Phase);
    }

    [Fact]
    public void TheJobCompletes_WhenEveryItemIsCommitted()
    {
        var ledger = Started(2);
        for (int i = 0; i < 2; i++)
        {
            var l = ledger.Lease(A, T0.AddSeconds(i), $"l{i}")!;
            ledger.Committed(l.Item.Index, JobPaths.ShardName(l.Item.Index), Result(l), T0.AddSeconds(i + 1));
        }
        var s = ledger.Status(T0.AddSeconds(5));
        Assert.Equal(JobPhase.Completed, s.Phase);
        Assert.True(s.IsFinished);
        Assert.Equal(20, s.RowsDone);
        Assert.Equal(10.0, s.RowsPerSecond, 6);   // 20 rows between the first lease (0 s) and the end (2 s)
        Assert.Null(s.Eta);
        Assert.Equal(T0.AddSeconds(2), s.FinishedUtc);
    }

    [Fact]
    public void FailedAttempts_AreRetried_ThenTheItemFails_AndTheJobFailsWithoutHangingOnIt()
    {
        var ledger = Started(2, maxAttempts: 2);
        var ok = ledger.Lease(A, T0, "ok")!;
        for (int attempt = 1; attempt <= 2; attempt++)
        {
            var l = ledger.Lease(B, T0, $"bad{attempt}")!;
            Assert.Equal(1, l.Item.Index);
            Assert.Equal(attempt, l.Attempt);
            Assert.True(ledger.Fail(1, $"bad{attempt}", "a.txt:12: not valid JSON", T0));
        }
        Assert.Null(ledger.Lease(B, T0, "bad3"));
        Assert.Equal(JobPhase.Running, ledger.Phase);   // item 0 still runs
        ledger.Committed(0, "part-00000.parquet", Result(ok), T0.AddSeconds(1));
        var s = ledger.Status(T0.AddSeconds(1));
        Assert.Equal(JobPhase.Failed, s.Phase);
        var failed = Assert.Single(s.FailedItems);
        Assert.Equal((1, 2, "a.txt:12: not valid JSON"), (failed.Index, failed.Attempts, failed.Error));
    }

    [Fact]
    public void AReleasedLease_IsFreeAtOnce_WithoutSpendingAnAttempt()
    {
        var ledger = Started(1, maxAttempts: 1);
        ledger.Lease(A, T0, "l0");
        Assert.True(ledger.Release(0, "l0"));
        var again = ledger.Lease(B, T0, "l1")!;
        Assert.Equal(1, again.Attempt);
        Assert.False(ledger.Release(0, "l0"));   // not the holder any more
    }

    [Fact]
    public void WorkersOfAnotherModel_GetNoWork()
    {
        var ledger = Started(2);
        ledger.Lease(A, T0, "l0");
        Assert.Null(ledger.Lease(new WorkerInfo("c", "model-y", 8, "torch"), T0, "l1"));
        Assert.Null(ledger.Lease(new WorkerInfo("d", "model-x", 16, "torch"), T0, "l2"));
        Assert.NotNull(ledger.Lease(B, T0, "l3"));
    }

    [Fact]
    public void Cancelling_StopsLeasing_AndFinishesTheJob()
    {
        var ledger = Started(3);
        ledger.Lease(A, T0, "l0");
        Assert.True(ledger.Cancel(T0.AddSeconds(1)));
        Assert.Null(ledger.Lease(B, T0.AddSeconds(1), "l1"));
        Assert.False(ledger.Renew(0, "l0", T0.AddSeconds(1)));
        Assert.False(ledger.CanCommit(0));
        Assert.Equal(JobPhase.Canceled, ledger.Status(T0.AddSeconds(2)).Phase);
    }

    [Fact]
    public void AfterTheCoordinatorRestarts_LiveLeasesGetOneMoreLeaseTime()
    {
        var ledger = Started(1, leaseSeconds: 10);
        ledger.Lease(A, T0, "l0");
        var restarted = T0.AddSeconds(100);
        ledger.Reactivated(restarted);
        Assert.False(ledger.ExpireLeases(restarted.AddSeconds(5)));
        Assert.True(ledger.Renew(0, "l0", restarted.AddSeconds(5)));
    }

    [Fact]
    public void AnEmptyInput_IsACompletedJob()
    {
        var ledger = Started(0);
        Assert.Equal(JobPhase.Completed, ledger.Status(T0).Phase);
    }

    [Fact]
    public void ItemsMustBeNumberedInOrder()
    {
        var spec = new EmbeddingJobSpec { Inputs = ["/in/a.txt"], OutputDirectory = "/out" };
        Assert.Throws<ArgumentException>(() => new JobLedger().Start("j", spec, [new WorkItem(1, "/in/a.txt", 0, 1, 0, 1, "a.txt")], T0));
    }

    [Fact]
    public void Retrying_AFailedJob_QueuesOnlyItsUnfinishedItems_WithFreshAttempts()
    {
        var ledger = Started(3, maxAttempts: 1);
        var ok = ledger.Lease(A, T0, "ok")!;
        ledger.Committed(0, "part-00000.parquet", Result(ok), T0);
        ledger.Lease(A, T0, "bad");
        ledger.Fail(1, "bad", "a.txt:21: not valid JSON", T0);
        Assert.False(ledger.Retry());                     // still running (item 2)
        var last = ledger.Lease(B, T0, "last")!;
        ledger.Committed(2, "part-00002.parquet", Result(last), T0);
        Assert.Equal(JobPhase.Failed, ledger.Phase);

        Assert.True(ledger.Retry());
        Assert.Equal(JobPhase.Running, ledger.Phase);
        var again = ledger.Lease(A, T0.AddSeconds(1), "again")!;
        Assert.Equal((1, 1), (again.Item.Index, again.Attempt));
        Assert.Null(ledger.Lease(B, T0.AddSeconds(1), "none"));   // items 0 and 2 stay committed
        ledger.Committed(1, "part-00001.parquet", Result(again), T0.AddSeconds(2));
        Assert.Equal(JobPhase.Completed, ledger.Phase);
        Assert.False(ledger.Retry());
    }
}

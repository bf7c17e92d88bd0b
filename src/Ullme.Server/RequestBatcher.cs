using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Server;

/// <summary>The queue is full: the request is answered 429 with Retry-After.</summary>
internal sealed class QueueFullException(int retryAfterSeconds, string message) : Exception(message)
{
    public int RetryAfterSeconds { get; } = retryAfterSeconds;
}

/// <summary>The server is stopping: no new work is accepted.</summary>
internal sealed class ServerStoppingException() : Exception("the server is shutting down");

/// <summary>
/// Batching across requests. Request threads tokenize and enqueue rows (texts to embed, or sequences to score);
/// one worker thread owns the model: it forms a batch from the pending rows, runs one forward and hands each row's
/// result back to its request, which completes when all its rows are done. So the engine is only ever used from that
/// one thread, and a request's vectors do not depend on which batch its rows landed in (masked padding).
/// <para>
/// A batch: the oldest pending row is the anchor (so no row waits forever), then rows of the nearest lengths in
/// length order are added, each time the neighbour that adds the least padding, while rows × longest row stays within
/// the padded-token budget and the row count within the batch size. Embedding rows and scoring rows (causal, LM head)
/// never share a batch; the kind whose oldest row is older goes first.
/// </para>
/// <para>A request that is cancelled (client disconnect) has its pending rows removed at once.</para>
/// </summary>
internal sealed class RequestBatcher : IDisposable
{
    private readonly EmbeddingEngine _engine;
    private readonly ResolvedEmbeddingOptions _embedOptions;
    private readonly int _maxBatchTokens, _maxBatchSize, _maxQueue;
    private readonly int? _threads;
    private readonly ServerMetrics _metrics;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly List<Row> _embedPending = [];
    private readonly List<Row> _scorePending = [];
    private readonly Thread _worker;
    private int _pending;
    private long _sequence;
    private bool _stopping;
    private double _rowsPerSecond;

    /// <summary>Test hook: runs on the worker thread each time it wakes with rows pending, before it forms a batch
    /// (a test blocks it to hold rows in the queue).</summary>
    internal Action? BeforeBatch { get; set; }

    public RequestBatcher(EmbeddingEngine engine, ResolvedEmbeddingOptions embedOptions, int maxBatchTokens, int maxBatchSize,
        int maxQueue, int? threads, ServerMetrics metrics, ILogger logger)
    {
        _engine = engine;
        // One forward per batch: the batch already holds at most _maxBatchSize rows, sorted here by the engine.
        _embedOptions = embedOptions with { BatchSize = maxBatchSize, SortWindow = int.MaxValue, OverlapTokenization = false, Normalize = false };
        _maxBatchTokens = maxBatchTokens;
        _maxBatchSize = maxBatchSize;
        _maxQueue = maxQueue;
        _threads = threads;
        _metrics = metrics;
        _logger = logger;
        _worker = new Thread(WorkerLoop) { IsBackground = true, Name = "ullme-model-worker" };
        _worker.Start();
    }

    /// <summary>Rows waiting for the model.</summary>
    public int QueueDepth => Volatile.Read(ref _pending);

    public int Capacity => _maxQueue;

    /// <summary>Pooled (not normalised) embeddings of the rows, in order.</summary>
    public async Task<float[][]> EmbedAsync(IReadOnlyList<EncodedText> rows, CancellationToken cancellationToken)
    {
        var job = new Job(rows.Count, scoring: false);
        var items = new Row[rows.Count];
        for (int i = 0; i < rows.Count; i++) items[i] = new Row(job, i, rows[i].Length) { Text = rows[i] };
        await RunAsync(job, items, _embedPending, cancellationToken).ConfigureAwait(false);
        return job.Embeddings!;
    }

    /// <summary>Token log-probabilities of the sequences, in order.</summary>
    public async Task<ScoreResult[]> ScoreAsync(IReadOnlyList<TokenScoreRequest> rows, CancellationToken cancellationToken)
    {
        var job = new Job(rows.Count, scoring: true);
        var items = new Row[rows.Count];
        for (int i = 0; i < rows.Count; i++) items[i] = new Row(job, i, rows[i].InputIds.Count) { Score = rows[i] };
        await RunAsync(job, items, _scorePending, cancellationToken).ConfigureAwait(false);
        return job.Scores!;
    }

    private async Task RunAsync(Job job, Row[] items, List<Row> pending, CancellationToken cancellationToken)
    {
        if (items.Length == 0) return;
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            if (_stopping) throw new ServerStoppingException();
            if (_pending + items.Length > _maxQueue)
                throw new QueueFullException(RetryAfterSeconds(),
                    $"The server is busy: {_pending} of {_maxQueue} queued inputs are waiting and this request brings {items.Length}. Retry later.");
            foreach (var item in items)
            {
                item.Sequence = _sequence++;
                pending.Add(item);
            }
            _pending += items.Length;
            Monitor.PulseAll(_gate);
        }
        using var registration = cancellationToken.Register(static state =>
        {
            var (batcher, job) = ((RequestBatcher, Job))state!;
            batcher.Cancel(job);
        }, (this, job));
        await job.Completion.Task.ConfigureAwait(false);
    }

    /// <summary>Drops the job's pending rows and fails it as cancelled (rows already in a running batch are computed and discarded).</summary>
    private void Cancel(Job job)
    {
        int removed;
        lock (_gate)
        {
            var list = job.Scoring ? _scorePending : _embedPending;
            removed = list.RemoveAll(r => ReferenceEquals(r.Job, job));
            _pending -= removed;
        }
        if (removed > 0) _metrics.DroppedRows(removed);
        job.Completion.TrySetCanceled();
    }

    /// <summary>Seconds until the queue has likely drained enough: queued rows over the recent rows/s, 1 to 60.</summary>
    private int RetryAfterSeconds()
    {
        double rate = Volatile.Read(ref _rowsPerSecond);
        if (!(rate > 0)) return 1;
        return (int)Math.Clamp(Math.Ceiling(_pending / rate), 1, 60);
    }

    private void WorkerLoop()
    {
        if (_threads is { } t) UllmeRuntime.SetThreads(t);   // libtorch's intra-op setting is per calling thread
        while (true)
        {
            lock (_gate)
            {
                while (_pending == 0 && !_stopping) Monitor.Wait(_gate);
                if (_pending == 0) return;   // stopping and drained
            }
            BeforeBatch?.Invoke();
            Row[] batch;
            bool scoring;
            lock (_gate)
            {
                if (_pending == 0) continue;   // cancelled while the hook ran
                scoring = _embedPending.Count == 0 || (_scorePending.Count > 0 && _scorePending[0].Sequence < _embedPending[0].Sequence);
                batch = FormBatch(scoring ? _scorePending : _embedPending, _maxBatchTokens, _maxBatchSize);
                _pending -= batch.Length;
            }
            Run(batch, scoring);
        }
    }

    /// <summary>Takes one batch out of <paramref name="pending"/> (see the class remarks).</summary>
    internal static Row[] FormBatch(List<Row> pending, int maxBatchTokens, int maxBatchSize)
    {
        int n = pending.Count;
        var order = new int[n];
        for (int i = 0; i < n; i++) order[i] = i;
        Array.Sort(order, (a, b) => pending[a].Length != pending[b].Length
            ? pending[a].Length.CompareTo(pending[b].Length)
            : pending[a].Sequence.CompareTo(pending[b].Sequence));
        int anchor = Array.IndexOf(order, 0);   // pending[0] is the oldest row
        int lo = anchor, hi = anchor, count = 1;
        long maxLength = pending[order[anchor]].Length;
        while (count < maxBatchSize)
        {
            bool canLo = lo > 0 && (count + 1) * maxLength <= maxBatchTokens;
            bool canHi = hi < n - 1 && (count + 1L) * pending[order[hi + 1]].Length <= maxBatchTokens;
            if (!canLo && !canHi) break;
            long wasteLo = canLo ? maxLength - pending[order[lo - 1]].Length : long.MaxValue;
            long wasteHi = canHi ? (pending[order[hi + 1]].Length - maxLength) * count : long.MaxValue;
            if (wasteLo <= wasteHi) lo--;
            else
            {
                hi++;
                maxLength = pending[order[hi]].Length;
            }
            count++;
        }
        var batch = new Row[count];
        for (int k = 0; k < count; k++)
        {
            batch[k] = pending[order[lo + k]];
            batch[k].Taken = true;
        }
        pending.RemoveAll(r => r.Taken);
        return batch;
    }

    private void Run(Row[] batch, bool scoring)
    {
        var clock = Stopwatch.StartNew();
        long realTokens = 0;
        int longest = 0;
        foreach (var r in batch)
        {
            realTokens += r.Length;
            longest = Math.Max(longest, r.Length);
        }
        // The metrics are recorded before any request is answered, so a client that reads /metrics after its answer
        // always sees the batch that answered it.
        Action complete;
        try
        {
            if (scoring)
            {
                var requests = new TokenScoreRequest[batch.Length];
                for (int i = 0; i < batch.Length; i++) requests[i] = batch[i].Score!;
                var results = _engine.ScoreTokenIds(requests, batch.Length);
                complete = () => { for (int i = 0; i < batch.Length; i++) batch[i].Job.Complete(batch[i].Slot, results[i]); };
            }
            else
            {
                var rows = new EncodedText[batch.Length];
                for (int i = 0; i < batch.Length; i++) rows[i] = batch[i].Text;
                var result = _engine.EmbedEncoded(rows, _embedOptions);
                complete = () => { for (int i = 0; i < batch.Length; i++) batch[i].Job.Complete(batch[i].Slot, result.Embeddings[i]); };
            }
        }
        catch (Exception e)
        {
            _logger.LogError(e, "A batch of {Rows} rows failed in the model.", batch.Length);
            complete = () => { foreach (var r in batch) r.Job.Completion.TrySetException(e); };
        }
        double seconds = clock.Elapsed.TotalSeconds;
        _metrics.Batch(batch.Length, (long)batch.Length * longest, realTokens, seconds);
        complete();
        if (seconds > 0)
        {
            double rate = batch.Length / seconds, old = Volatile.Read(ref _rowsPerSecond);
            Volatile.Write(ref _rowsPerSecond, old > 0 ? 0.8 * old + 0.2 * rate : rate);
        }
    }

    /// <summary>Stops taking work, lets the worker finish what is queued, and waits for it.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopping) return;
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        if (Thread.CurrentThread != _worker) _worker.Join();
    }

    /// <summary>One request's rows and results.</summary>
    internal sealed class Job(int rows, bool scoring)
    {
        private int _remaining = rows;

        public bool Scoring { get; } = scoring;
        public float[][]? Embeddings { get; } = scoring ? null : new float[rows][];
        public ScoreResult[]? Scores { get; } = scoring ? new ScoreResult[rows] : null;
        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Complete(int slot, float[] embedding)
        {
            Embeddings![slot] = embedding;
            if (Interlocked.Decrement(ref _remaining) == 0) Completion.TrySetResult();
        }

        public void Complete(int slot, ScoreResult score)
        {
            Scores![slot] = score;
            if (Interlocked.Decrement(ref _remaining) == 0) Completion.TrySetResult();
        }
    }

    /// <summary>One pending row.</summary>
    internal sealed class Row(Job job, int slot, int length)
    {
        public Job Job { get; } = job;
        public int Slot { get; } = slot;
        public int Length { get; } = length;
        public long Sequence { get; set; }
        public bool Taken { get; set; }
        public EncodedText Text { get; init; }
        public TokenScoreRequest? Score { get; init; }
    }
}

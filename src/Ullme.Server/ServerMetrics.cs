using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace Ullme.MLNet.Server;

/// <summary>
/// The server's counters, written in the Prometheus text exposition format (version 0.0.4) by <c>GET /metrics</c>:
/// base units (seconds), <c>_total</c> counters, cumulative histograms with <c>le</c> buckets, <c>_sum</c> and <c>_count</c>.
/// </summary>
internal sealed class ServerMetrics
{
    private static readonly double[] LatencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    private static readonly double[] BatchSizeBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
    private static readonly double[] BatchTokenBuckets = [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

    private readonly ConcurrentDictionary<(string Route, int Status), long[]> _requests = new();
    private readonly ConcurrentDictionary<string, Histogram> _latency = new();
    private readonly Histogram _batchSize = new(BatchSizeBuckets);
    private readonly Histogram _batchTokens = new(BatchTokenBuckets);
    private readonly Histogram _forwardSeconds = new(LatencyBuckets);
    private long _tokens, _droppedRows;

    public Func<int>? QueueDepth { get; set; }

    public int QueueCapacity { get; set; }

    public string ModelName { get; set; } = "";

    public void Request(string route, int status, double seconds)
    {
        var counter = _requests.GetOrAdd((route, status), _ => new long[1]);
        Interlocked.Increment(ref counter[0]);
        _latency.GetOrAdd(route, _ => new Histogram(LatencyBuckets)).Observe(seconds);
    }

    public void Batch(int rows, long paddedTokens, long realTokens, double seconds)
    {
        _batchSize.Observe(rows);
        _batchTokens.Observe(paddedTokens);
        _forwardSeconds.Observe(seconds);
        Interlocked.Add(ref _tokens, realTokens);
    }

    public void DroppedRows(int rows) => Interlocked.Add(ref _droppedRows, rows);

    /// <summary>Batches run so far.</summary>
    public long Batches => _batchSize.Count;

    /// <summary>Rows that went through the model so far.</summary>
    public double RowsProcessed => _batchSize.Sum;

    public long Tokens => Interlocked.Read(ref _tokens);

    public long Dropped => Interlocked.Read(ref _droppedRows);

    public string Render()
    {
        var sb = new StringBuilder();
        sb.Append("# HELP ullme_requests_total HTTP requests answered, by route and status code.\n# TYPE ullme_requests_total counter\n");
        foreach (var ((route, status), counter) in _requests.OrderBy(p => p.Key.Route, StringComparer.Ordinal).ThenBy(p => p.Key.Status))
            sb.Append("ullme_requests_total{route=\"").Append(Escape(route)).Append("\",status=\"").Append(status.ToString(CultureInfo.InvariantCulture))
              .Append("\"} ").Append(Interlocked.Read(ref counter[0]).ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("# HELP ullme_request_duration_seconds Time from request start to response, by route.\n# TYPE ullme_request_duration_seconds histogram\n");
        foreach (var (route, h) in _latency.OrderBy(p => p.Key, StringComparer.Ordinal))
            h.Render(sb, "ullme_request_duration_seconds", $"route=\"{Escape(route)}\"");
        sb.Append("# HELP ullme_batch_size Rows (texts or scored sequences) per forward pass.\n# TYPE ullme_batch_size histogram\n");
        _batchSize.Render(sb, "ullme_batch_size", null);
        sb.Append("# HELP ullme_batch_tokens Padded tokens (rows x longest row) per forward pass.\n# TYPE ullme_batch_tokens histogram\n");
        _batchTokens.Render(sb, "ullme_batch_tokens", null);
        sb.Append("# HELP ullme_batch_duration_seconds Time of one forward pass.\n# TYPE ullme_batch_duration_seconds histogram\n");
        _forwardSeconds.Render(sb, "ullme_batch_duration_seconds", null);
        sb.Append("# HELP ullme_tokens_total Real (unpadded) tokens through the model; rate() gives tokens per second.\n# TYPE ullme_tokens_total counter\n");
        sb.Append("ullme_tokens_total ").Append(Tokens.ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("# HELP ullme_dropped_rows_total Queued rows dropped because their client disconnected.\n# TYPE ullme_dropped_rows_total counter\n");
        sb.Append("ullme_dropped_rows_total ").Append(Dropped.ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("# HELP ullme_queue_depth Rows waiting for the model.\n# TYPE ullme_queue_depth gauge\n");
        sb.Append("ullme_queue_depth ").Append((QueueDepth?.Invoke() ?? 0).ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("# HELP ullme_queue_capacity Rows the queue holds at most (--max-queue).\n# TYPE ullme_queue_capacity gauge\n");
        sb.Append("ullme_queue_capacity ").Append(QueueCapacity.ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("# HELP ullme_model_info The served model.\n# TYPE ullme_model_info gauge\n");
        sb.Append("ullme_model_info{model=\"").Append(Escape(ModelName)).Append("\"} 1\n");
        return sb.ToString();
    }

    private static string Escape(string label) => label.Replace("\\", "\\\\", StringComparison.Ordinal)
        .Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    internal static string Number(double v) =>
        double.IsPositiveInfinity(v) ? "+Inf" : v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A cumulative histogram (thread-safe).</summary>
    internal sealed class Histogram(double[] bounds)
    {
        private readonly long[] _counts = new long[bounds.Length + 1];
        private readonly Lock _gate = new();
        private double _sum;
        private long _count;

        public long Count { get { lock (_gate) return _count; } }

        public double Sum { get { lock (_gate) return _sum; } }

        public void Observe(double value)
        {
            int i = 0;
            while (i < bounds.Length && value > bounds[i]) i++;
            lock (_gate)
            {
                _counts[i]++;
                _sum += value;
                _count++;
            }
        }

        public void Render(StringBuilder sb, string name, string? labels)
        {
            long[] counts;
            double sum;
            long count;
            lock (_gate)
            {
                counts = (long[])_counts.Clone();
                sum = _sum;
                count = _count;
            }
            string prefix = labels is null ? "" : labels + ",";
            long cumulative = 0;
            for (int i = 0; i <= bounds.Length; i++)
            {
                cumulative += counts[i];
                string le = i < bounds.Length ? Number(bounds[i]) : "+Inf";
                sb.Append(name).Append("_bucket{").Append(prefix).Append("le=\"").Append(le).Append("\"} ")
                  .Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
            string suffix = labels is null ? "" : "{" + labels + "}";
            sb.Append(name).Append("_sum").Append(suffix).Append(' ').Append(Number(sum)).Append('\n');
            sb.Append(name).Append("_count").Append(suffix).Append(' ').Append(count.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
    }
}

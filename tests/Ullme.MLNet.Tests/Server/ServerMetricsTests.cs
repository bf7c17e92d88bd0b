using System.Globalization;
using System.Text.RegularExpressions;
using Ullme.MLNet.Server;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.MLNetIntegration;

namespace Ullme.MLNet.Tests.Server;

/// <summary>/health, and /metrics in the Prometheus text format with Prometheus's naming conventions.</summary>
[Collection(TorchCollection.Name)]
public sealed partial class ServerMetricsTests
{
    [GeneratedRegex("^[a-zA-Z_:][a-zA-Z0-9_:]*$")]
    private static partial Regex MetricName();

    [GeneratedRegex("""^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)$""")]
    private static partial Regex Sample();

    [Fact]
    public async Task HealthIsOk_AndMetricsFollowPrometheusConventions()
    {
        await using var t = await TestServer.StartAsync(MLNetTestData.Default);
        var (status, health) = await t.GetAsync("/health");
        Assert.Equal(200, status);
        Assert.Contains("\"ok\"", health);
        for (int i = 0; i < 3; i++) Assert.Equal(200, (await t.PostAsync("/v1/embeddings", """{"input": ["a b c", "d"]}""")).Status);
        Assert.Equal(400, (await t.PostAsync("/v1/embeddings", "{}")).Status);

        using var response = await t.Http.GetAsync("metrics");
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType!.ToString());
        Assert.Contains("version=0.0.4", response.Content.Headers.ContentType!.ToString());
        string text = await response.Content.ReadAsStringAsync();

        var types = new Dictionary<string, string>();
        var samples = new List<(string Name, string Labels, double Value)>();
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                Assert.Matches(MetricName(), parts[2]);
                Assert.Contains(parts[3], new[] { "counter", "gauge", "histogram" });
                Assert.True(types.TryAdd(parts[2], parts[3]), $"duplicate TYPE {parts[2]}");
                if (parts[3] == "counter") Assert.EndsWith("_total", parts[2]);
                Assert.StartsWith("ullme_", parts[2]);
                continue;
            }
            if (line.StartsWith('#')) { Assert.StartsWith("# HELP ", line); continue; }
            var m = Sample().Match(line);
            Assert.True(m.Success, $"not a sample line: {line}");
            double value = m.Groups["value"].Value == "+Inf" ? double.PositiveInfinity : double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture);
            samples.Add((m.Groups["name"].Value, m.Groups["labels"].Value, value));
        }
        foreach (var name in new[] { "ullme_requests_total", "ullme_tokens_total" }) Assert.Equal("counter", types[name]);
        foreach (var name in new[] { "ullme_request_duration_seconds", "ullme_batch_size", "ullme_batch_tokens" }) Assert.Equal("histogram", types[name]);
        Assert.Equal("gauge", types["ullme_queue_depth"]);
        // every sample belongs to a declared family (histograms through _bucket/_sum/_count)
        foreach (var s in samples)
        {
            string family = Regex.Replace(s.Name, "_(bucket|sum|count)$", "");
            Assert.True(types.ContainsKey(s.Name) || (types.TryGetValue(family, out var k) && k == "histogram"), $"undeclared {s.Name}");
        }
        Assert.Contains(samples, s => s.Name == "ullme_requests_total" && s.Labels == "route=\"/v1/embeddings\",status=\"200\"" && s.Value == 3);
        Assert.Contains(samples, s => s.Name == "ullme_requests_total" && s.Labels == "route=\"/v1/embeddings\",status=\"400\"" && s.Value == 1);
        // histogram buckets are cumulative and +Inf equals _count
        var buckets = samples.Where(s => s.Name == "ullme_batch_size_bucket").Select(s => s.Value).ToArray();
        for (int i = 1; i < buckets.Length; i++) Assert.True(buckets[i] >= buckets[i - 1]);
        Assert.Equal(samples.Single(s => s.Name == "ullme_batch_size_count").Value, buckets[^1]);
        Assert.Equal(6, samples.Single(s => s.Name == "ullme_batch_size_sum").Value);   // 3 requests x 2 rows
        Assert.Equal(4, samples.Single(s => s.Name == "ullme_request_duration_seconds_count" && s.Labels.Contains("/v1/embeddings")).Value);
        Assert.True(samples.Single(s => s.Name == "ullme_tokens_total").Value > 0);
        Assert.Equal(0, samples.Single(s => s.Name == "ullme_queue_depth").Value);
    }

    [Fact]
    public void FormBatch_StartsFromTheOldestRow_KeepsTheTokenBudget_AndPicksNearLengths()
    {
        var job = new RequestBatcher.Job(8, scoring: false);
        int[] lengths = [10, 50, 12, 11, 300, 9, 13, 48];
        var pending = lengths.Select((l, i) => new RequestBatcher.Row(job, i, l) { Sequence = i }).ToList();
        var batch = RequestBatcher.FormBatch(pending, maxBatchTokens: 60, maxBatchSize: 16);
        Assert.Contains(batch, r => r.Slot == 0);                                 // the oldest row
        Assert.True(batch.Length * batch.Max(r => r.Length) <= 60);                // padded budget
        Assert.Equal(new[] { 0, 2, 3, 5 }.Order(), batch.Select(r => r.Slot).Order());   // 9..12: 4 x 12 = 48 ≤ 60 (13 would make 5 x 13 = 65)
        Assert.Equal(lengths.Length - batch.Length, pending.Count);
        Assert.DoesNotContain(pending, r => batch.Contains(r));

        batch = RequestBatcher.FormBatch(pending, maxBatchTokens: 100, maxBatchSize: 16);   // oldest now: 50
        Assert.Equal(new[] { 1, 7 }.Order(), batch.Select(r => r.Slot).Order());     // 48, 50 (not 13: it would pad 37)
        var huge = RequestBatcher.FormBatch(pending, maxBatchTokens: 60, maxBatchSize: 16);
        Assert.Equal([4], huge.Select(r => r.Slot));                                 // over budget alone: a batch of one
        Assert.Equal([6], RequestBatcher.FormBatch(pending, 60, 1).Select(r => r.Slot));
        Assert.Empty(pending);
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Ullme.MLNet.Benchmarks.Infrastructure;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Server;

namespace Ullme.MLNet.Benchmarks.Serving;

/// <summary>
/// Load test of <c>ullme serve</c> (issue 15 point 6): the real server process (or, with <c>--in-process</c>, an
/// <see cref="UllmeServer"/> in this process) on 127.0.0.1 and an ephemeral port, the default model, and closed-loop
/// clients in this process: 1, 8, 32 and 128 concurrent clients each sending one short text per request, and 8 clients
/// sending 64-text requests, to <c>POST /v1/embeddings</c> (<c>encoding_format: base64</c>, what the OpenAI clients
/// send). Bounded: a fixed number of requests per scenario and a time cap; the benchmark starts and stops the server.
/// <para>
/// Reference in the same run, right after each scenario, on the same texts in the same order: offline
/// <see cref="EmbeddingEngine.Embed"/> in calls of as many texts as the scenario keeps in flight (clients × texts per
/// request, at most the server's batch size): the batches the server could form at best. And single in-process calls
/// (one text per <c>Embed</c>) for the 1-client latency.
/// </para>
/// </summary>
public static class LoadTest
{
    private sealed record Scenario(string Name, int Clients, int TextsPerRequest, int Requests);

    private sealed record Result(Scenario Scenario, int Requests, int Texts, double Seconds, double[] LatencyMs, int Errors,
        double OfflineTextsPerSecond, int OfflineBatch, double MeanBatchRows, double ServerCpuSeconds, double ClientCpuSeconds,
        double OfflineSameTextsPerSecond, double OfflineSameBatch, double OfflineSameCpuSeconds)
    {
        public double TextsPerSecond => Texts / Seconds;
        public double Fraction => TextsPerSecond / OfflineTextsPerSecond;
        public double FractionSame => TextsPerSecond / OfflineSameTextsPerSecond;
    }

    private const int MaxBatchSize = 128;   // ullme serve's default --max-batch-size

    public static int Run(string[] args)
    {
        bool quick = args.Contains("--quick");
        bool inProcess = args.Contains("--in-process");
        int threads = Option(args, "--threads") is { } t ? int.Parse(t, CultureInfo.InvariantCulture) : Environment.ProcessorCount;
        double cap = Option(args, "--seconds") is { } s ? double.Parse(s, CultureInfo.InvariantCulture) : quick ? 20 : 90;
        string? jsonOut = Option(args, "--json");
        string assets = BenchTexts.AssetsRoot(Option(args, "--assets"));
        var scenarios = quick
            ? new[] { new Scenario("1 client x 1 text", 1, 1, 60), new Scenario("8 clients x 1 text", 8, 1, 240),
                      new Scenario("32 clients x 1 text", 32, 1, 640), new Scenario("128 clients x 1 text", 128, 1, 1024),
                      new Scenario("8 clients x 64 texts", 8, 64, 16) }
            : new[] { new Scenario("1 client x 1 text", 1, 1, 400), new Scenario("8 clients x 1 text", 8, 1, 1200),
                      new Scenario("32 clients x 1 text", 32, 1, 3000), new Scenario("128 clients x 1 text", 128, 1, 4000),
                      new Scenario("8 clients x 64 texts", 8, 64, 96) };

        UllmeRuntime.SetThreads(threads);
        var texts = BenchTexts.Load(assets, 8000, 1);
        var pool = texts.ShortTexts;
        Console.WriteLine($"ullme serve load test ({(quick ? "quick" : "full")}): {threads} libtorch threads, {Environment.ProcessorCount} cores, " +
                          $"load {Machine.LoadAverage()}, {pool.Count} texts ({texts.Source}), server {(inProcess ? "in this process" : "a separate `ullme serve` process")}");

        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        var engine = new EmbeddingEngine(model);
        var clock = Stopwatch.StartNew();
        using var server = inProcess ? ServerHandle.Hosted(model, threads) : ServerHandle.Spawn(threads);
        Console.WriteLine($"  server at {server.Url} (started in {clock.Elapsed.TotalSeconds:F1} s)");
        using var http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = int.MaxValue,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            AutomaticDecompression = DecompressionMethods.None,
        })
        { BaseAddress = new Uri(server.Url.TrimEnd('/') + "/"), Timeout = TimeSpan.FromMinutes(5) };

        // Warm-up of both sides (JIT, tokenizer caches, libtorch's first calls), not recorded.
        RunClients(http, pool, new Scenario("warm-up", 8, 1, 200), 0, 60, null);
        engine.Embed(pool.Take(256).ToList(), new EmbeddingOptions { BatchSize = 32 });

        var results = new List<Result>();
        double[]? inProcessSingleMs = null;
        int rounds = quick ? 4 : 8;
        foreach (var scenario in scenarios)
        {
            RunClients(http, pool, scenario with { Requests = scenario.Clients }, 0, 30, null);   // opens the connections
            var (batchSum0, batchCount0) = BatchMetrics(http);
            double serverCpu = 0, clientCpu = 0;   // during the server's rounds only
            int offlineBatch = Math.Min(scenario.Clients * scenario.TextsPerRequest, MaxBatchSize);
            var latencies = new List<double>();
            var single = new List<double>();
            double serverSeconds = 0, offlineSeconds = 0, offlineSameSeconds = 0, sameBatchSum = 0, offlineSameCpu = 0;
            int sameRounds = 0;
            int requests = 0, errors = 0;
            var scenarioClock = Stopwatch.StartNew();
            // Rounds alternate the server and the offline reference on the same texts, so both see the same
            // background load (this host is shared); the server's figures sum its rounds, the offline's its own.
            for (int round = 0; round < rounds && scenarioClock.Elapsed.TotalSeconds < cap; round++)
            {
                int first = round * scenario.Requests / rounds, count = (round + 1) * scenario.Requests / rounds - first;
                var sent = Enumerable.Range(first * scenario.TextsPerRequest, count * scenario.TextsPerRequest).Select(i => pool[i % pool.Count]).ToList();
                if (scenario.Clients == 1 && scenario.TextsPerRequest == 1)
                {
                    // One request, then the same text in one in-process call, in turn: the latency comparison.
                    var run = RunClients(http, pool, scenario with { Requests = count }, first, cap, i =>
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        engine.Embed([pool[i % pool.Count]], new EmbeddingOptions { BatchSize = 1 });
                        double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                        lock (single) single.Add(ms);
                    });
                    latencies.AddRange(run.LatencyMs);
                    serverSeconds += run.LatencyMs.Sum() / 1000;   // the client's time in requests (its in-process calls excluded)
                    requests += run.Requests;
                    errors += run.Errors;
                    offlineSeconds += single.Skip(single.Count - run.Requests).Sum() / 1000;
                    offlineSameSeconds = offlineSeconds;   // the server's batches are single rows too
                    continue;
                }
                var (roundSum0, roundCount0) = BatchMetrics(http);
                double serverCpu0 = server.CpuSeconds(), clientCpu0 = ClientCpuSeconds();
                var r = RunClients(http, pool, scenario with { Requests = count }, first * scenario.TextsPerRequest, cap, null);
                serverCpu += server.CpuSeconds() - serverCpu0;
                clientCpu += ClientCpuSeconds() - clientCpu0;
                var (roundSum1, roundCount1) = BatchMetrics(http);
                int sameBatch = roundCount1 > roundCount0 ? Math.Max(1, (int)Math.Round((roundSum1 - roundSum0) / (roundCount1 - roundCount0))) : 1;
                latencies.AddRange(r.LatencyMs);
                serverSeconds += r.Seconds;
                requests += r.Requests;
                errors += r.Errors;
                // The same texts offline, in calls of what the scenario keeps in flight.
                sent = sent.Take(r.Requests * scenario.TextsPerRequest).ToList();
                var sw = Stopwatch.StartNew();
                for (int start = 0; start < sent.Count; start += offlineBatch)
                    engine.Embed(sent.GetRange(start, Math.Min(offlineBatch, sent.Count - start)), new EmbeddingOptions { BatchSize = offlineBatch });
                offlineSeconds += sw.Elapsed.TotalSeconds;
                // And in calls of the size the server's batches had in this round: the server's overhead alone.
                double offlineCpu0 = ClientCpuSeconds();
                sw.Restart();
                for (int start = 0; start < sent.Count; start += sameBatch)
                    engine.Embed(sent.GetRange(start, Math.Min(sameBatch, sent.Count - start)), new EmbeddingOptions { BatchSize = sameBatch });
                offlineSameSeconds += sw.Elapsed.TotalSeconds;
                offlineSameCpu += ClientCpuSeconds() - offlineCpu0;
                sameBatchSum += sameBatch;
                sameRounds++;
            }
            var (batchSum1, batchCount1) = BatchMetrics(http);
            double meanBatch = batchCount1 > batchCount0 ? (batchSum1 - batchSum0) / (batchCount1 - batchCount0) : double.NaN;
            int textCount = requests * scenario.TextsPerRequest;
            var sorted = latencies.ToArray();
            Array.Sort(sorted);
            if (single.Count > 0) serverCpu = clientCpu = double.NaN;   // interleaved with in-process calls: not separable
            var result = new Result(scenario, requests, textCount, serverSeconds, sorted, errors, textCount / offlineSeconds, offlineBatch, meanBatch, serverCpu, clientCpu,
                textCount / offlineSameSeconds, sameRounds > 0 ? sameBatchSum / sameRounds : 1, sameRounds > 0 ? offlineSameCpu : double.NaN);
            results.Add(result);
            Console.WriteLine($"  {scenario.Name,-22} {result.TextsPerSecond,8:F1} texts/s  p50 {Percentile(sorted, 50),7:F1}  p95 {Percentile(sorted, 95),7:F1}  " +
                              $"p99 {Percentile(sorted, 99),7:F1} ms  offline (batch {offlineBatch}) {result.OfflineTextsPerSecond,7:F1} texts/s  fraction {result.Fraction:F3}  " +
                              $"offline at the server's batch ({result.OfflineSameBatch:F0}) {result.OfflineSameTextsPerSecond,7:F1} texts/s  fraction {result.FractionSame:F3}  " +
                              $"mean batch {meanBatch:F1} rows  errors {errors}  cpu server {serverCpu:F1} s client {clientCpu:F1} s  " +
                              $"(CPU ms/text: server {1000 * serverCpu / textCount:F2}, offline at the server's batch {1000 * result.OfflineSameCpuSeconds / textCount:F2})  load {Machine.LoadAverage()}");
            if (single.Count > 0)
            {
                var one = single.ToArray();
                Array.Sort(one);
                inProcessSingleMs = one;
                Console.WriteLine($"  {"in-process single call",-22} p50 {Percentile(one, 50):F1}  p95 {Percentile(one, 95):F1}  p99 {Percentile(one, 99):F1} ms  " +
                                  $"(server 1 client p99 / in-process p99 = {Percentile(sorted, 99) / Percentile(one, 99):F2})");
            }
        }

        string markdown = Markdown(results, inProcessSingleMs, threads, quick, inProcess, texts.Source);
        Console.WriteLine();
        Console.WriteLine(markdown);
        if (jsonOut is not null) WriteJson(jsonOut, results, inProcessSingleMs, threads, quick, inProcess, texts.Source);
        Console.WriteLine($"done in {clock.Elapsed.TotalSeconds:F0} s; load {Machine.LoadAverage()}");
        return results.Any(r => r.Errors > 0) ? 1 : 0;
    }

    private static double ClientCpuSeconds() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    private readonly record struct ClientRun(int Requests, double Seconds, double[] LatencyMs, int Errors);

    /// <summary>Closed loop: each client sends its next request when the previous one is answered, until the
    /// scenario's request count is reached or <paramref name="capSeconds"/> have passed (then no new request starts).
    /// Request r carries the texts from <paramref name="offset"/> + r × texts per request; <paramref name="afterEach"/>
    /// runs on the client after each answer with that index.</summary>
    private static ClientRun RunClients(HttpClient http, IReadOnlyList<string> pool, Scenario scenario, int offset, double capSeconds, Action<int>? afterEach)
    {
        // Request bodies are built before the clock starts (a load generator's job is to send, not to serialise).
        var bodies = new byte[scenario.Requests][];
        for (int r = 0; r < scenario.Requests; r++)
        {
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms))
            {
                w.WriteStartObject();
                w.WriteString("model", "default");
                w.WriteString("encoding_format", "base64");
                if (scenario.TextsPerRequest == 1) w.WriteString("input", pool[(offset + r) % pool.Count]);
                else
                {
                    w.WriteStartArray("input");
                    for (int k = 0; k < scenario.TextsPerRequest; k++) w.WriteStringValue(pool[(offset + r * scenario.TextsPerRequest + k) % pool.Count]);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            bodies[r] = ms.ToArray();
        }
        var latencies = new double[scenario.Requests];
        int next = -1, errors = 0, done = 0;
        var deadline = Stopwatch.StartNew();
        async Task Client()
        {
            while (deadline.Elapsed.TotalSeconds < capSeconds)
            {
                int r = Interlocked.Increment(ref next);
                if (r >= scenario.Requests) return;
                long t0 = Stopwatch.GetTimestamp();
                using var content = new ByteArrayContent(bodies[r]);
                content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                bool ok;
                try
                {
                    using var response = await http.PostAsync("v1/embeddings", content).ConfigureAwait(false);
                    var bytes = await response.Content.ReadAsByteArrayAsync().ConfigureAwait(false);
                    ok = response.StatusCode == HttpStatusCode.OK && Check(bytes, scenario.TextsPerRequest);
                }
                catch (HttpRequestException)
                {
                    ok = false;
                }
                latencies[r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                if (!ok) Interlocked.Increment(ref errors);
                Interlocked.Increment(ref done);
                afterEach?.Invoke(offset + r);
            }
        }
        var clients = Enumerable.Range(0, scenario.Clients).Select(_ => Task.Run(Client)).ToArray();
        Task.WaitAll(clients);
        double seconds = deadline.Elapsed.TotalSeconds;
        var measured = latencies.Take(done).ToArray();   // requests are numbered in start order; all started ones finished
        Array.Sort(measured);
        return new ClientRun(done, seconds, measured, errors);
    }

    /// <summary>The answer has one base64 embedding of the model's size per text.</summary>
    private static bool Check(byte[] body, int texts)
    {
        using var doc = JsonDocument.Parse(body);
        var data = doc.RootElement.GetProperty("data");
        if (data.GetArrayLength() != texts) return false;
        foreach (var item in data.EnumerateArray())
            if (item.GetProperty("embedding").GetString() is not { Length: > 0 } b64 || Convert.FromBase64String(b64).Length != 384 * 4) return false;
        return true;
    }

    /// <summary>ullme_batch_size_sum and _count from /metrics (rows per forward on the server).</summary>
    private static (double Sum, double Count) BatchMetrics(HttpClient http)
    {
        string text = http.GetStringAsync("metrics").GetAwaiter().GetResult();
        double sum = 0, count = 0;
        foreach (string line in text.Split('\n'))
        {
            if (line.StartsWith("ullme_batch_size_sum ", StringComparison.Ordinal)) sum = double.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture);
            if (line.StartsWith("ullme_batch_size_count ", StringComparison.Ordinal)) count = double.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture);
        }
        return (sum, count);
    }

    /// <summary>Nearest-rank percentile of a sorted array.</summary>
    private static double Percentile(double[] sorted, double p)
    {
        if (sorted.Length == 0) return double.NaN;
        int rank = (int)Math.Ceiling(p / 100.0 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    private static string Markdown(List<Result> results, double[]? single, int threads, bool quick, bool inProcess, string source)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"ullme serve load test, {(quick ? "quick" : "full")}: default model (all-MiniLM-L6-v2), {threads} libtorch threads, {Environment.ProcessorCount} cores, " +
                                                    $"server {(inProcess ? "in-process" : "separate process")}, texts: {source}");
        sb.AppendLine();
        sb.AppendLine("| scenario | requests | texts | texts/s | p50 ms | p95 ms | p99 ms | offline texts/s, batch = rows in flight | fraction | offline texts/s, batch = server's | fraction | server rows/batch | CPU s server / client | CPU ms/text server / offline |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in results)
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.Scenario.Name} | {r.Requests:N0} | {r.Texts:N0} | {r.TextsPerSecond:F1} | {Percentile(r.LatencyMs, 50):F1} | {Percentile(r.LatencyMs, 95):F1} | {Percentile(r.LatencyMs, 99):F1} | " +
                $"{r.OfflineTextsPerSecond:F1} ({r.OfflineBatch}) | {r.Fraction:F3} | {r.OfflineSameTextsPerSecond:F1} ({r.OfflineSameBatch:F0}) | {r.FractionSame:F3} | {r.MeanBatchRows:F1} | {(double.IsFinite(r.ServerCpuSeconds) ? $"{r.ServerCpuSeconds:F1} / {r.ClientCpuSeconds:F1} | {1000 * r.ServerCpuSeconds / r.Texts:F2} / {1000 * r.OfflineSameCpuSeconds / r.Texts:F2}" : "n/a | n/a")} |");
        if (single is not null && results.FirstOrDefault(r => r.Scenario.Clients == 1 && r.Scenario.TextsPerRequest == 1) is { } one)
        {
            sb.AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"Single in-process call (`Embed` of one text, same texts): p50 {Percentile(single, 50):F1} ms, p95 {Percentile(single, 95):F1} ms, p99 {Percentile(single, 99):F1} ms. " +
                $"1 client over HTTP: p99 {Percentile(one.LatencyMs, 99):F1} ms = {Percentile(one.LatencyMs, 99) / Percentile(single, 99):F2} x the in-process p99 " +
                $"(p50 {Percentile(one.LatencyMs, 50) / Percentile(single, 50):F2} x).");
        }
        if (results.Any(r => r.Errors > 0)) sb.AppendLine(CultureInfo.InvariantCulture, $"ERRORS: {results.Sum(r => r.Errors)} requests failed.");
        return sb.ToString();
    }

    private static void WriteJson(string path, List<Result> results, double[]? single, int threads, bool quick, bool inProcess, string source)
    {
        var doc = new
        {
            machine = Machine.Describe(threads),
            mode = quick ? "quick" : "full",
            server = inProcess ? "in-process" : "process",
            texts = source,
            in_process_single_ms = single is null ? null : new { p50 = Percentile(single, 50), p95 = Percentile(single, 95), p99 = Percentile(single, 99) },
            scenarios = results.Select(r => new
            {
                name = r.Scenario.Name, clients = r.Scenario.Clients, texts_per_request = r.Scenario.TextsPerRequest,
                requests = r.Requests, texts = r.Texts, seconds = r.Seconds, texts_per_second = r.TextsPerSecond,
                p50_ms = Percentile(r.LatencyMs, 50), p95_ms = Percentile(r.LatencyMs, 95), p99_ms = Percentile(r.LatencyMs, 99),
                offline_texts_per_second = r.OfflineTextsPerSecond, offline_batch = r.OfflineBatch, fraction_of_offline = r.Fraction,
                offline_same_batch_texts_per_second = r.OfflineSameTextsPerSecond, offline_same_batch = r.OfflineSameBatch, fraction_of_offline_same_batch = r.FractionSame,
                server_rows_per_batch = Finite(r.MeanBatchRows), server_cpu_seconds = Finite(r.ServerCpuSeconds), client_cpu_seconds = Finite(r.ClientCpuSeconds), offline_same_batch_cpu_seconds = Finite(r.OfflineSameCpuSeconds), errors = r.Errors,
            }).ToArray(),
        };
        File.WriteAllText(path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }

    private static double? Finite(double v) => double.IsFinite(v) ? v : null;

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>The server under test; disposing it stops it (SIGTERM and wait for a process).</summary>
    private sealed class ServerHandle : IDisposable
    {
        private Process? _process;
        private UllmeServer? _server;
        private readonly StringBuilder _stderr = new();

        public string Url { get; private set; } = "";

        public double CpuSeconds()
        {
            if (_process is null) return double.NaN;   // in-process: the client's figure holds both
            _process.Refresh();
            return _process.TotalProcessorTime.TotalSeconds;
        }

        public static ServerHandle Hosted(UllmeModel model, int threads)
        {
            var h = new ServerHandle { _server = UllmeServer.Create(model, new UllmeServerOptions { Port = 0, Threads = threads }) };
            h._server.StartAsync().GetAwaiter().GetResult();
            h.Url = h._server.Urls[0];
            return h;
        }

        /// <summary><c>ullme serve --model default --port 0 --threads N</c>, the CLI this solution builds.</summary>
        public static ServerHandle Spawn(int threads)
        {
            string dll = typeof(Ullme.Cli.UllmeCli).Assembly.Location;
            var psi = new ProcessStartInfo("dotnet", [dll, "serve", "--model", "default", "--port", "0", "--threads", threads.ToString(CultureInfo.InvariantCulture)])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            var h = new ServerHandle { _process = System.Diagnostics.Process.Start(psi)! };
            var process = h._process;
            AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } };
            process.ErrorDataReceived += (_, e) => { lock (h._stderr) h._stderr.AppendLine(e.Data); };
            process.BeginErrorReadLine();
            var deadline = Stopwatch.StartNew();
            while (deadline.Elapsed < TimeSpan.FromMinutes(3))
            {
                var line = process.StandardOutput.ReadLineAsync();
                if (!line.Wait(TimeSpan.FromMinutes(3)) || line.Result is null) break;
                if (line.Result.StartsWith("Listening on ", StringComparison.Ordinal))
                {
                    h.Url = line.Result["Listening on ".Length..].Trim();
                    _ = process.StandardOutput.ReadToEndAsync();
                    return h;
                }
            }
            string err;
            lock (h._stderr) err = h._stderr.ToString();
            h.Dispose();
            throw new InvalidOperationException($"ullme serve did not print its URL; stderr: {err}");
        }

        [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        private static extern int Kill(int pid, int signal);

        public void Dispose()
        {
            if (_server is not null)
            {
                _server.DisposeAsync().AsTask().GetAwaiter().GetResult();
                _server = null;
            }
            if (_process is null) return;
            if (!_process.HasExited)
            {
                Kill(_process.Id, 15);   // SIGTERM: the server drains and exits
                if (!_process.WaitForExit(TimeSpan.FromSeconds(60))) _process.Kill(entireProcessTree: true);
            }
            _process.Dispose();
            _process = null;
        }
    }
}

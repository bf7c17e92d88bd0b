using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using Ullme.Cli;
using Ullme.MLNet.Tests.Cli;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.Server;

/// <summary>`ullme serve` as a real child process: prints its URL, drains on SIGTERM, exits 0.</summary>
[Collection(TorchCollection.Name)]
public sealed class ServeProcessTests
{
    /// <summary>Sends SIGTERM (what a container runtime or systemd sends to stop a service).</summary>
    private static int Sigterm(int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]))!;
        kill.WaitForExit();
        return kill.ExitCode;
    }

    [Fact]
    public async Task Sigterm_FinishesTheRequestInFlight_RefusesNewOnes_AndExitsZero()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;   // POSIX signals
        string dll = typeof(UllmeCli).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet", [dll, "serve", "--model", "default", "--port", "0", "--max-batch-size", "4", "--threads", "1", "--shutdown-timeout", "600"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(psi)!;
        var stderr = new System.Text.StringBuilder();
        process.ErrorDataReceived += (_, e) => { lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        try
        {
            string? url = null;
            var readUrl = Task.Run(async () =>
            {
                string? line;
                while ((line = await process.StandardOutput.ReadLineAsync()) is not null)
                    if (line.StartsWith("Listening on ", StringComparison.Ordinal)) return line["Listening on ".Length..].Trim();
                return null;
            });
            if (await Task.WhenAny(readUrl, Task.Delay(TimeSpan.FromMinutes(3))) != readUrl) Assert.Fail($"no URL printed; stderr: {stderr}");
            url = await readUrl ?? throw new Xunit.Sdk.XunitException($"server exited early; stderr: {stderr}");
            Assert.StartsWith("http://127.0.0.1:", url);
            using var http = new HttpClient { BaseAddress = new Uri(url + "/"), Timeout = TimeSpan.FromMinutes(5) };
            Assert.Equal(200, (int)(await http.GetAsync("health")).StatusCode);

            // A long request: 240 texts of ~120 tokens in batches of 4 rows on one thread (seconds of work).
            var words = "patients with increased expression of the protein showed a significant response to the treatment in the study".Split(' ');
            var texts = Enumerable.Range(0, 240).Select(i => string.Join(' ', Enumerable.Range(0, 110).Select(k => words[(i + k * 7) % words.Length])) + $" {i}").ToArray();
            var inFlight = http.PostAsJsonAsync("v1/embeddings", new { input = texts, encoding_format = "float" });
            using (var probe = new HttpClient { BaseAddress = new Uri(url + "/") })
            {
                var deadline = DateTime.UtcNow.AddMinutes(2);
                while (!(await probe.GetStringAsync("metrics")).Contains("ullme_batch_size_count ", StringComparison.Ordinal) ||
                       (await probe.GetStringAsync("metrics")).Contains("ullme_batch_size_count 0\n", StringComparison.Ordinal))
                {
                    Assert.True(DateTime.UtcNow < deadline, "the long request never started");
                    await Task.Delay(20);
                }
            }
            Assert.False(inFlight.IsCompleted, "the long request finished before SIGTERM; make it longer");
            Assert.Equal(0, Sigterm(process.Id));

            // While the request in flight drains, the listener stays open: /health on a fresh connection (a readiness
            // probe) answers 503, not a refused connection; once it has said 503 it never says 200 again.
            bool unready = false, stillInFlight = false, refusedEarly = false, readyAgain = false;
            var until = DateTime.UtcNow.AddSeconds(20);
            while (!unready && DateTime.UtcNow < until && !inFlight.IsCompleted)
            {
                using var fresh = new HttpClient { BaseAddress = new Uri(url + "/"), Timeout = TimeSpan.FromSeconds(5) };
                try
                {
                    using var r = await fresh.GetAsync("health");
                    unready = (int)r.StatusCode == 503;
                    stillInFlight = unready && !inFlight.IsCompleted;
                }
                catch (HttpRequestException)
                {
                    refusedEarly |= !inFlight.IsCompleted;
                    break;
                }
                if (!unready) await Task.Delay(20);
            }
            if (unready && !inFlight.IsCompleted)
            {
                using var fresh = new HttpClient { BaseAddress = new Uri(url + "/"), Timeout = TimeSpan.FromSeconds(5) };
                try
                {
                    using var r = await fresh.GetAsync("health");
                    readyAgain = (int)r.StatusCode == 200;
                }
                catch (HttpRequestException)
                {
                    // the drain may just have finished: the listener is closed
                }
            }
            Assert.True(unready && stillInFlight && !refusedEarly && !readyAgain,
                $"/health 503 during the drain: {unready}; the long request still in flight then: {stillInFlight}; connection refused while draining: {refusedEarly}; 200 again: {readyAgain}");

            using var response = await inFlight;
            Assert.Equal(200, (int)response.StatusCode);
            var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(texts.Length, body.GetProperty("data").GetArrayLength());
            Assert.True(process.WaitForExit(TimeSpan.FromMinutes(1)), "the server did not exit after SIGTERM");
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}; stderr: {stderr}");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void BadFlags_AreOneLineErrors_BeforeAnyModelLoads()
    {
        var (code, err) = CliTests.Run("serve", "--model", "/nowhere/at/all", "--max-queue", "0");
        Assert.Equal(1, code);
        Assert.Contains("--max-queue", err);
        (code, err) = CliTests.Run("serve", "--model", "/nowhere/at/all", "--max-input-tokens", "100", "--max-batch-tokens", "50");
        Assert.Equal(1, code);
        Assert.Contains("--max-input-tokens", err);
        (code, err) = CliTests.Run("serve", "--model", "/nowhere/at/all", "--api-key-file", "/nowhere/key.txt");
        Assert.Equal(1, code);
        Assert.Contains("--api-key-file", err);
    }
}

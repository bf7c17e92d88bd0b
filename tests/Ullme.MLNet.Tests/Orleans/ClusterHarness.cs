using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Ullme.Cli;

namespace Ullme.MLNet.Tests.Orleans;

/// <summary>One `ullme silo` child process: its stdout/stderr collected, the work items it leased and committed
/// parsed from its log.</summary>
internal sealed partial class SiloProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();
    private readonly TaskCompletionSource<bool> _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int Port { get; }
    public int GatewayPort { get; }

    private SiloProcess(Process process, int port, int gatewayPort)
    {
        _process = process;
        Port = port;
        GatewayPort = gatewayPort;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            Append(e.Data);
            if (e.Data.StartsWith("Silo listening", StringComparison.Ordinal)) _listening.TrySetResult(true);
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null) Append(e.Data);
        };
        process.Exited += (_, _) => _listening.TrySetResult(false);
        process.EnableRaisingEvents = true;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    private void Append(string line)
    {
        lock (_log) _log.AppendLine(line);
    }

    public string Log
    {
        get
        {
            lock (_log) return _log.ToString();
        }
    }

    public bool HasExited => _process.HasExited;

    public static SiloProcess Start(IReadOnlyList<string> clusterArgs, int port, int gatewayPort, params string[] extra)
    {
        string dll = typeof(UllmeCli).Assembly.Location;
        var args = new List<string> { dll, "silo", "--model", "default" };
        args.AddRange(clusterArgs);
        args.AddRange(
        [
            "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--gateway-port", gatewayPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--threads", "1",
        ]);
        args.AddRange(extra);
        var psi = new ProcessStartInfo("dotnet", args) { RedirectStandardOutput = true, RedirectStandardError = true };
        return new SiloProcess(Process.Start(psi)!, port, gatewayPort);
    }

    public async Task WaitListeningAsync(TimeSpan timeout)
    {
        if (await Task.WhenAny(_listening.Task, Task.Delay(timeout)) != _listening.Task || !await _listening.Task)
            throw new Xunit.Sdk.XunitException($"silo on port {Port} did not start; its log:\n{Log}");
    }

    /// <summary>Work items this silo leased and did not commit (per its log), for the job.</summary>
    public HashSet<int> HeldItems(string job)
    {
        string log = Log;
        var leased = LeasedLine().Matches(log).Where(m => m.Groups[1].Value == job).Select(m => int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();
        foreach (Match m in EndedLine().Matches(log))
            if (m.Groups[1].Value == job) leased.Remove(int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        return leased;
    }

    /// <summary>Work items this silo leased at any time (per its log).</summary>
    public HashSet<int> LeasedItems(string job) =>
        LeasedLine().Matches(Log).Where(m => m.Groups[1].Value == job).Select(m => int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();

    [GeneratedRegex(@"Job (\S+): item (\d+) \(.*attempt \d+")]
    private static partial Regex LeasedLine();

    [GeneratedRegex(@"Job (\S+): item (\d+) (committed|was committed by another|lost its lease|failed)")]
    private static partial Regex EndedLine();

    /// <summary>Sends SIGTERM (what a container runtime or systemd sends to stop a service) and waits for the exit.</summary>
    public int Terminate(TimeSpan timeout)
    {
        using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))!)
            kill.WaitForExit();
        if (!_process.WaitForExit(timeout)) throw new Xunit.Sdk.XunitException($"the silo did not exit within {timeout} of SIGTERM; its log:\n{Log}");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Kill()
    {
        // SIGKILL: no shutdown code runs, as when a machine dies
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        if (_process.WaitForExit(10_000)) _process.WaitForExit();   // the untimed wait also drains the redirected output
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }

    /// <summary>A TCP port nothing listens on right now.</summary>
    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>Runs `ullme` as a child process; returns its exit code, stdout and stderr.</summary>
    public static async Task<(int Code, string Out, string Err)> RunCli(TimeSpan timeout, params string[] args)
    {
        string dll = typeof(UllmeCli).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet", [dll, .. args]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"ullme {string.Join(' ', args)} did not finish in {timeout}; stderr: {await stderr}");
        }
        return (p.ExitCode, await stdout, await stderr);
    }
}

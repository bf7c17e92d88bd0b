using System.Runtime.InteropServices;

namespace Ullme.Cli;

/// <summary>
/// Turns SIGINT (Ctrl+C) and SIGTERM into a cancellation that the running command observes at its next safe point
/// (training: the next step boundary, after writing a checkpoint; embedding and scoring: the next batch, before the
/// output is renamed into place). The first signal is absorbed and cancels <see cref="Token"/>; a second one is left
/// to the system, which ends the process at once (the next run removes what that leaves behind).
/// </summary>
internal sealed class CliInterrupt : IDisposable
{
    public const int SigIntExitCode = 130;
    public const int SigTermExitCode = 143;

    private readonly CancellationTokenSource _cts = new();
    private readonly PosixSignalRegistration? _sigInt;
    private readonly PosixSignalRegistration? _sigTerm;
    private int _signal;   // 0 = none, else the PosixSignal value (negative numbers in .NET) that arrived first

    public CliInterrupt()
    {
        if (OperatingSystem.IsAndroid() || OperatingSystem.IsIOS() || OperatingSystem.IsTvOS() || OperatingSystem.IsBrowser()) return;
        _sigInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _sigTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    /// <summary>Cancelled when the first SIGINT or SIGTERM arrives.</summary>
    public CancellationToken Token => _cts.Token;

    /// <summary>The first signal received, or null.</summary>
    public PosixSignal? Signal => _signal == 0 ? null : (PosixSignal)_signal;

    /// <summary>The conventional exit code of a process stopped by <see cref="Signal"/>: 130 for SIGINT, 143 for SIGTERM.</summary>
    public int ExitCode => Signal == PosixSignal.SIGTERM ? SigTermExitCode : SigIntExitCode;

    /// <summary>"SIGINT" or "SIGTERM".</summary>
    public string SignalName => Signal == PosixSignal.SIGTERM ? "SIGTERM" : "SIGINT";

    private void OnSignal(PosixSignalContext context)
    {
        if (Interlocked.CompareExchange(ref _signal, (int)context.Signal, 0) != 0) return;   // second signal: default action
        context.Cancel = true;
        Console.Error.WriteLine($"{(context.Signal == PosixSignal.SIGTERM ? "SIGTERM" : "SIGINT")} received: stopping at the next safe point " +
            "(send it again to stop at once).");
        _cts.Cancel();
    }

    public void Dispose()
    {
        _sigInt?.Dispose();
        _sigTerm?.Dispose();
        _cts.Dispose();
    }
}

/// <summary>A command stopped by SIGINT/SIGTERM; the message says what was kept and how to continue.</summary>
internal sealed class CommandInterruptedException(string message) : Exception(message);
